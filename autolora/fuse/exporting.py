"""``show`` and ``export`` for a fusion run folder (one whose ``config.yaml`` has a ``fuse`` section).

``export`` reloads the base model and the LoRAs, rebuilds the trial's coefficients and writes::

    pytorch_lora_weights.safetensors, <name>.safetensors, autolora.json   the exact fused LoRA (ranks concatenated,
                                                                          scales folded into the up weights)
    rank<R>/...                          with --rank R: the same, reduced by SVD (its error is printed)
    coefficients.json                    granularity, schedule, LoRA files, coefficients, scores
    set_adapters.json                    diffusers' pipe.set_adapters(names, weights) (global or block, constant)
    a1111.txt                            A1111 prompt tags: <lora:NAME:w>, or lora-block-weight vectors (SD 1.x)
    coefficients.png                     the heatmap of the coefficients

A two-phase fusion has no single exact LoRA: its early and late sets are exported into ``early/`` and ``late/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.atomic import write_text
from autolora.config import load_config
from autolora.core.reading import choose_trial, find_study, print_table
from autolora.errors import UserError
from autolora.formats.export import check_name, export_adapter
from autolora.fuse.config import FuseRunConfig
from autolora.fuse.space import Fusion
from autolora.fuse.studies import study_specs
from autolora.fuse.summary import compare, comparison_lines, heatmap
from autolora.loras.engine import load_loras
from autolora.loras.facts import base_facts
from autolora.loras.folded import fused_adapter
from autolora.loras.rank import reduce_rank
from autolora.models.loading import load_base, resolve_device, resolve_model
from autolora.quiet import quiet_libraries

if TYPE_CHECKING:
    import optuna

    from autolora.loras.engine import FusedAdapters
    from autolora.loras.groups import Coefficients


def load_run(run_dir: Path) -> tuple[FuseRunConfig, dict[str, optuna.Study]]:
    """The run's resolved config and its studies (label -> study)."""
    import optuna

    config = load_config(run_dir / "config.yaml", [], FuseRunConfig)
    studies = {}
    for spec in study_specs(config):
        try:
            studies[spec.label] = find_study(None, config.storage_url, spec.name)[0]
        except UserError:
            if spec.label == "dlf":
                raise
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return config, studies


def show_run(run_dir: Path) -> None:
    """``autolora show`` for a fusion run: each study's trial table, then the side-by-side summary."""

    config, studies = load_run(run_dir)
    names = studies["dlf"].metric_names or ["score"]
    for label, study in studies.items():
        print(f"[{label}]", end=" ")
        print_table(study, run_dir)
        print()
    print("\n".join(comparison_lines(compare(studies, names), names)))


def export_run(
    run_dir: Path,
    number: int | None,
    out: Path,
    name: str | None,
    rank: int | None,
    echo: Callable[[str], None] = print,
    force: bool = False,
) -> dict[str, Path]:
    """``autolora export`` for a fusion run: see the module docstring (``force``: as for ``tune``, an infeasible
    or not measurably stylish best)."""

    if rank is not None and rank < 1:
        raise UserError(f"--rank {rank}: expected at least 1")
    config, studies = load_run(run_dir)
    study = studies["dlf"]
    trial = study.trials[choose_trial(study, number, force)]
    fusion = _fusion_of(trial)
    stem = name or f"{study.study_name}-trial{trial.number}"

    check_name(stem)
    fa = _load(config)
    try:
        paths: dict[str, Path] = {}
        phases = {"": fusion.early} if fusion.late is None else {"early": fusion.early, "late": fusion.late}
        for phase, coeffs in phases.items():
            folder, tag = (out / phase, f"{phase} ") if phase else (out, "")
            written = _write_fused(fa, coeffs, folder, stem, rank, _info(study, trial, config), echo)
            paths.update({f"{tag}{kind}": path for kind, path in written.items()})
        paths.update(_write_tables(fa, fusion, out, config, study, trial, echo))
    finally:
        from autolora.loras.engine import unload

        unload(fa)
    return paths


def _fusion_of(trial: optuna.trial.FrozenTrial) -> Fusion:
    if trial.state.name != "COMPLETE" or "fusion" not in trial.user_attrs:
        raise UserError(f"trial {trial.number} is {trial.state.name.lower()}; export a complete trial")
    return Fusion.from_dict(trial.user_attrs["fusion"])


def _load(config: FuseRunConfig) -> FusedAdapters:
    quiet_libraries()
    entries = config.fuse.entries()
    missing = [str(p) for _, p in entries if not p.is_file()]
    if missing:
        raise UserError(f"the run's LoRA files {missing} are gone; the fused LoRA is built from them")
    model = resolve_model(config.model.base_model, config.model.allow_pickle)
    pipe, _ = load_base(model, config.model, resolve_device(config.model.device))
    return load_loras(pipe, [p for _, p in entries], [n for n, _ in entries])


def _info(study: optuna.Study, trial: optuna.trial.FrozenTrial, config: FuseRunConfig) -> dict[str, Any]:
    names = study.metric_names or [f"value{i}" for i in range(len(trial.values))]
    metrics = {k.removeprefix("metric."): v for k, v in trial.user_attrs.items() if k.startswith("metric.")}
    return {
        "study": study.study_name,
        "trial": trial.number,
        "values": trial.values,
        "scores": dict(zip(names, trial.values, strict=True)),
        "metrics": metrics,
        "base_model": config.model.base_model,
    }


def _write_fused(
    fa: FusedAdapters,
    coeffs: Coefficients,
    folder: Path,
    stem: str,
    rank: int | None,
    info: dict[str, Any],
    echo: Callable[[str], None],
) -> dict[str, Path]:
    adapter = fused_adapter(fa, coeffs)
    adapter.info.update(info)
    paths = export_adapter(adapter, folder, stem, echo=echo)
    if rank is not None:
        reduced, error = reduce_rank(adapter, rank)
        ranks = {str(c.get("r")) for c in reduced.configs.values()}
        echo(f"rank {rank}: largest relative error over the modules {error:.4f} (ranks now {', '.join(ranks)})")
        small = export_adapter(reduced, folder / f"rank{rank}", f"{stem}-r{rank}", echo=lambda _: None)
        paths.update({f"rank{rank} {kind}": path for kind, path in small.items()})
    return paths


def _write_tables(
    fa: FusedAdapters,
    fusion: Fusion,
    out: Path,
    config: FuseRunConfig,
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    echo: Callable[[str], None],
) -> dict[str, Path]:
    entries = config.fuse.entries()
    doc = {
        "study": study.study_name,
        "trial": trial.number,
        "granularity": config.fuse.granularity,
        "schedule": config.fuse.schedule,
        "loras": {n: str(p) for n, p in entries},
        **fusion.to_dict(),
        "values": trial.values,
    }
    paths = {"coefficients": out / "coefficients.json"}
    write_text(paths["coefficients"], json.dumps(doc, indent=2) + "\n")
    paths["heatmap"] = heatmap(fusion, out / "coefficients.png", f"{study.study_name} trial {trial.number}")
    if fusion.late is not None:
        return paths
    weights, why = _set_adapters(fa, fusion.early, config.fuse.granularity)
    if weights is None:
        echo(f"set_adapters skipped: {why}")
    else:
        paths["set_adapters"] = out / "set_adapters.json"
        write_text(paths["set_adapters"], json.dumps(weights, indent=2) + "\n")
    if base_facts(fa.pipe)["arch"] == "sd1" and config.fuse.granularity in ("global", "block"):
        paths["a1111"] = out / "a1111.txt"
        write_text(paths["a1111"], _a1111(fa, fusion.early, config.fuse.granularity))
    return paths


def _set_adapters(fa: FusedAdapters, coeffs: Coefficients, granularity: str) -> tuple[dict[str, Any] | None, str]:
    """``{"adapter_names": [...], "adapter_weights": [...]}`` for diffusers, or None and why it cannot be."""
    if granularity == "global":
        weights: list[Any] = [coeffs[n]["all"] for n in fa.names]
    elif granularity == "block":
        try:
            by_name = fa.diffusers_set_adapters_weights(coeffs)
        except UserError as e:
            return None, str(e)
        weights = [by_name[n] for n in fa.names]
    else:
        return None, "diffusers' set_adapters has no per-layer weights (use the fused LoRA)"
    return {"adapter_names": fa.names, "adapter_weights": weights}, ""


def _a1111(fa: FusedAdapters, coeffs: Coefficients, granularity: str) -> str:
    lines = []
    for lora in fa.names:
        if granularity == "global":
            lines.append(f"<lora:{lora}:{coeffs[lora]['all']:.4g}>")
            continue
        try:
            lines.append(f"<lora:{lora}:1:lbw={fa.a1111_block_weights(coeffs, lora)}>")
        except UserError as e:
            lines.append(f"# {lora}: {e}")
    return "\n".join(lines) + "\n"
