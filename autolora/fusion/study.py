"""``autolora fuse``: validate, load once, run the DLF study and its linear baseline, summarise side by side.

The way of a run: ``plan`` (validate everything, create nothing) -> ``session`` (pipeline + every LoRA + judge,
loaded once; a bad LoRA file is refused here, still before anything is created) -> the coefficient spaces and
the stored studies' hashes -> run folder, Optuna studies, MLflow parent run -> base samples -> trials of the DLF
study, then of the linear one -> summary (``fusion_summary.json``, heatmap of the best coefficients).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora import __version__
from autolora.fusion.config import FuseRunConfig
from autolora.fusion.plan import FusePlan
from autolora.fusion.space import CoefficientSpace
from autolora.plan import ATTR

if TYPE_CHECKING:
    import optuna

    from autolora.fusion.engine import FusedAdapters

SUMMARY_FILE = "fusion_summary.json"
HEATMAP_FILE = "best_coefficients.png"


@dataclass
class StudySpec:
    """One study of a fusion run: ``dlf`` (the configured granularity and schedule) or ``linear``."""

    label: str
    name: str
    granularity: str
    schedule: str


def study_specs(config: FuseRunConfig) -> list[StudySpec]:
    """The run's studies: the configured one, and the linear baseline unless off or the same study."""
    fuse = config.fuse
    specs = [StudySpec("dlf", config.study_name, fuse.granularity, fuse.schedule)]
    if fuse.has_baseline:
        specs.append(StudySpec("linear", f"{config.study_name}-linear", "global", "constant"))
    return specs


def spaces(specs: list[StudySpec], fa: FusedAdapters, config: FuseRunConfig) -> dict[str, CoefficientSpace]:
    return {s.label: CoefficientSpace.of(fa, s.granularity, s.schedule, config.fuse) for s in specs}


@dataclass
class FuseResult:
    run_dir: Path
    studies: dict[str, Any]
    """Label -> optuna.Study."""
    comparison: dict[str, Any]
    mlflow_ui: str
    lines: list[str] = field(default_factory=list)


def open_fuse_study(plan: FusePlan, spec: StudySpec, space: CoefficientSpace) -> optuna.Study:
    """Create or resume one study; a new one starts with every coefficient 1 (plain stacking) as trial 0."""
    import optuna

    from autolora.storage import make_storage
    from autolora.study import make_sampler, stored_trials

    cfg = plan.config
    storage = make_storage(cfg.storage_url)
    earlier = stored_trials(spec.name, storage)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=make_sampler(plan.sampler, cfg.study.seed + earlier, not plan.objective.is_scalar),
        directions=plan.objective.directions,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    if ATTR + "search_space_hash" not in study.user_attrs:
        study.set_user_attr(ATTR + "search_space_hash", space.fingerprint())
        study.set_user_attr(ATTR + "directions", plan.objective.directions)
        study.set_user_attr(ATTR + "version", __version__)
        study.set_user_attr(ATTR + "fusion", {"label": spec.label, "granularity": spec.granularity})
        study.set_metric_names(plan.objective.names)
        study.enqueue_trial(space.uniform(min(max(1.0, space.low), space.high)))
    study.set_user_attr(ATTR + "run_dir", str(plan.run_dir))
    return study


def _write_run_files(plan: FusePlan, mlflow_uri: str) -> list[Path]:
    import yaml

    from autolora.store import write_text_atomic

    resolved = plan.config.to_dict()
    resolved["study"].update(
        name=plan.config.study_name, out=str(plan.run_dir), storage=plan.config.storage_url, mlflow_uri=mlflow_uri
    )
    resolved["fuse"]["loras"] = [f"{name}={path.resolve()}" for name, path in plan.loras]
    resolved["fuse"]["style_images"] = [f"{n}={s.folder.resolve()}" for n, s in plan.styles.items()]
    if resolved["data"]["prompts"]:
        resolved["data"]["prompts"] = str(Path(resolved["data"]["prompts"]).resolve())
    files = {"config.yaml": yaml.safe_dump(resolved, sort_keys=False), "objective.yaml": plan.objective_text}
    for name, text in files.items():
        write_text_atomic(plan.run_dir / name, text)
    return [plan.run_dir / name for name in files]


def run_fuse(config: FuseRunConfig, echo: Callable[[str], None] = print, progress: bool = True) -> FuseResult:
    """``autolora fuse``: see the module docstring."""
    from autolora.fusion.plan import make_fuse_plan
    from autolora.fusion.session import FuseSession
    from autolora.plan import check_existing_study
    from autolora.quiet import quiet_libraries

    quiet_libraries()
    plan = make_fuse_plan(config)
    session = FuseSession.load(plan)
    try:
        specs = study_specs(plan.config)
        found = spaces(specs, session.fa, plan.config)
        obj = plan.objective
        for spec in specs:
            fingerprint = found[spec.label].fingerprint()
            check_existing_study(
                config.storage_url, spec.name, fingerprint, obj.directions, obj.name, "coefficient space"
            )
        # Inputs are valid, the models and LoRAs load: from here on we create things.
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        return _run(plan, session, specs, found, echo, progress)
    finally:
        session.close()


def _run(
    plan: FusePlan,
    session: Any,
    specs: list[StudySpec],
    found: dict[str, CoefficientSpace],
    echo: Callable[[str], None],
    progress: bool,
) -> FuseResult:
    from autolora.fusion.summary import compare, comparison_lines
    from autolora.fusion.trial import FuseTrialRunner
    from autolora.tracking import Tracker

    cfg = plan.config
    tracker = Tracker(cfg.study.mlflow_uri, f"autolora/{cfg.study_name}")
    inputs = _write_run_files(plan, tracker.uri)
    echo(f"fusion run '{cfg.study_name}' in {plan.run_dir}; storage {cfg.storage_url}")
    echo(f"MLflow: {tracker.ui_command()}")
    parent = tracker.start_parent(
        f"fuse-{time.strftime('%Y%m%d-%H%M%S')}",
        cfg.to_dict(),
        inputs,
        tags={"autolora.study": cfg.study_name, "autolora.version": __version__, "autolora.kind": "fuse"},
    )
    studies: dict[str, optuna.Study] = {}
    with parent:
        session.prepare(plan.run_dir / "cache")
        sizes = ", ".join(f"{s.label} {s.granularity}/{s.schedule} {len(found[s.label].param_names())}" for s in specs)
        echo(
            f"setup {session.setup_seconds:.1f}s: base model {plan.model.source} ({plan.model.arch}, {plan.device}, "
            f"{plan.resolution}px), LoRAs {', '.join(plan.names)}, judge {session.judge.name}, "
            f"{len(plan.prompts)} prompts x {len(cfg.eval.seeds)} seeds; sampler {plan.sampler}; parameters: {sizes}"
        )
        for spec in specs:
            study = open_fuse_study(plan, spec, found[spec.label])
            studies[spec.label] = study
            study.set_user_attr(ATTR + "mlflow_uri", tracker.uri)
            runner = FuseTrialRunner(session, found[spec.label], spec.label, parent, echo)
            _optimize(study, runner, cfg, progress, spec.label)
        comparison = compare(studies, plan.objective.names)
        parent.log_summary(studies["dlf"], plan.objective.names)
        parent.log_dict(comparison, SUMMARY_FILE)
        _log_comparison(parent, comparison, plan.objective.names)
        write_summary(plan.run_dir, comparison)
        best = _best_fusion(studies["dlf"], found["dlf"])
        if best is not None:
            from autolora.fusion.summary import heatmap

            picture = heatmap(best[1], plan.run_dir / HEATMAP_FILE, f"{cfg.study_name} trial {best[0]}")
            parent.client.log_artifact(parent.run_id, str(picture), "plots")
    return FuseResult(
        plan.run_dir, studies, comparison, tracker.ui_command(), comparison_lines(comparison, plan.objective.names)
    )


def _optimize(study: optuna.Study, runner: Any, cfg: FuseRunConfig, progress: bool, label: str) -> None:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.study.trials, desc=f"{label} trials", unit="trial", disable=None)
    try:
        study.optimize(
            runner,
            n_trials=cfg.study.trials,
            timeout=cfg.study.timeout,
            gc_after_trial=False,
            callbacks=[lambda *_: bar.update(1)] if bar is not None else [],
        )
    finally:
        if bar is not None:
            bar.close()


def _best_fusion(study: optuna.Study, space: CoefficientSpace) -> tuple[int, Any] | None:
    """(trial number, Fusion) of the best trial (the first of a Pareto set by its first objective)."""
    from autolora.fusion.summary import complete

    done = complete(study)
    if not done:
        return None
    if len(study.directions) == 1:
        best = study.best_trial
    else:
        sign = -1 if study.directions[0].name == "MAXIMIZE" else 1
        best = min(study.best_trials, key=lambda t: sign * t.values[0])
    return best.number, space.fusion(best.params)


def _log_comparison(parent: Any, comparison: dict[str, Any], names: list[str]) -> None:
    metrics: list[tuple[str, float, int]] = []
    for label, e in comparison.items():
        if "best_value" in e:
            metrics.append((f"{label}.best.{names[0]}", e["best_value"], 0))
        if "hypervolume" in e:
            metrics.append((f"{label}.hypervolume", e["hypervolume"], 0))
            metrics += [(f"{label}.best.{n}", v, 0) for n, v in e["best_values"].items()]
    parent._log_metrics(metrics)


def write_summary(run_dir: Path, comparison: dict[str, Any]) -> None:
    import json

    from autolora.store import write_text_atomic

    write_text_atomic(run_dir / SUMMARY_FILE, json.dumps(comparison, indent=2, default=str) + "\n")
