"""``autolora export`` of a tune run: the kept adapter of a trial as diffusers/peft and kohya/LyCORIS files, with a
preview."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from autolora.adapter import KeptAdapter
from autolora.errors import UserError

if TYPE_CHECKING:
    import optuna


def export_trial(
    study: optuna.Study,
    run_dir: Path | None,
    number: int | None,
    out: Path,
    name: str | None,
    force: bool = False,
    rank: int | None = None,
) -> dict[str, Path]:
    from autolora.core.report import choose_trial
    from autolora.core.rundir import adapter_dir, kept_numbers
    from autolora.export import KOHYA_ARCHS, LYCORIS_ARCHS, adapter_method, export_all

    n = choose_trial(study, number, force)
    if run_dir is None:
        raise UserError(f"study '{study.study_name}' records no run folder; pass its RUN_DIR")
    folder = adapter_dir(run_dir, n)
    if not (folder / "adapter.json").is_file():
        kept = kept_numbers(run_dir)
        raise UserError(
            f"trial {n}: its adapter was not kept (only the best keep_top_k are); kept trials: {kept or 'none'}"
        )
    adapter = KeptAdapter.load(folder)
    dora = any(c.get("use_dora") for c in adapter.configs.values())
    arch = adapter.base.get("arch")
    method = adapter_method(adapter)
    stem = name or f"{study.study_name}-trial{n}"
    if method.name == "dreambooth":
        paths = _export_dreambooth(adapter, out, stem, rank)
        _preview(adapter, out, stem, paths)
        return paths
    if rank is not None:
        raise UserError(
            "--rank: the rank of the LoRA extracted from a DreamBooth trial, or of a fusion; this is a "
            f"{method.name} trial"
        )
    if method.name in ("textual_inversion",):
        print("diffusers skipped: a textual inversion is one embedding file (A1111, ComfyUI and diffusers load it)")
        kohya = False
    elif method.name in ("loha", "lokr"):
        print(
            f"diffusers skipped: diffusers' load_lora_weights reads LoRA only; the {method.name} adapter goes out "
            "as the LyCORIS file (A1111, Forge, ComfyUI) and peft folders"
        )
        kohya = arch in LYCORIS_ARCHS
        if not kohya:
            print(f"kohya     skipped: no LyCORIS file for {arch}; load the peft folder")
    else:
        if dora:
            # The kohya format has no DoRA encoding that diffusers, A1111 and ComfyUI read alike.
            print("kohya     skipped: DoRA adapters are exported in the diffusers format only")
        elif arch not in KOHYA_ARCHS:
            print(f"kohya     skipped: {arch} LoRAs go out in the diffusers format, which ComfyUI and diffusers load")
        kohya = not dora and arch in KOHYA_ARCHS
    paths = export_all(adapter, out, stem, kohya=kohya)
    _preview(adapter, out, stem, paths)
    return paths


def _export_dreambooth(adapter: KeptAdapter, out: Path, stem: str, rank: int | None) -> dict[str, Path]:
    """The fine-tuned denoiser (diffusers folder) and the LoRA extracted from it (diffusers + kohya files)."""
    from autolora.export import KOHYA_ARCHS, check_name, export_all
    from autolora.extract import DEFAULT_RANK, extract_lora, load_base_denoiser, save_tuned

    check_name(stem)
    if rank is not None and rank < 1:
        raise UserError(f"--rank {rank}: expected at least 1")
    model = load_base_denoiser(adapter)
    tuned = next(iter(adapter.state_dicts.values()))
    base = {k: model.get_parameter(k).detach().clone() for k in tuned}
    found = extract_lora(adapter, base, rank or DEFAULT_RANK)
    paths = export_all(found.adapter, out, stem, kohya=adapter.base.get("arch") in KOHYA_ARCHS)
    comp = next(iter(adapter.state_dicts))
    paths[comp] = out / f"{stem}-{comp}"
    save_tuned(model, tuned, paths[comp])
    print(
        f"extracted LoRA rank {rank or DEFAULT_RANK}: relative error {found.error:.4f} of the fine-tuned update "
        f"(Frobenius, {len(tuned)} tensors; worst {found.worst[0]} {found.worst[1]:.4f}); bias updates "
        f"({found.bias_share:.1%} of it) are not in a LoRA: use the {comp} folder for all of it"
    )
    return paths


def _preview(adapter: KeptAdapter, out: Path, stem: str, paths: dict[str, Path]) -> None:
    if adapter.samples:
        from autolora.sampling import grid

        preview = out / f"{stem}.png"
        tmp = out / f".{preview.name}.tmp"
        grid(adapter.samples, adapter.sample_rows).save(tmp, format="PNG")  # UIs show <name>.png beside the LoRA
        os.replace(tmp, preview)
        paths["preview"] = preview
