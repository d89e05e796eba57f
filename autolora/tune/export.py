"""``autolora export`` of a tune run: the kept adapter of a trial as diffusers/peft and kohya/LyCORIS files, with a
preview."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from autolora.errors import UserError

if TYPE_CHECKING:
    import optuna


def export_trial(
    study: optuna.Study, run_dir: Path | None, number: int | None, out: Path, name: str | None, force: bool = False
) -> dict[str, Path]:
    from autolora.adapter import KeptAdapter
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
    if method.name != "lora":
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
    stem = name or f"{study.study_name}-trial{n}"
    paths = export_all(adapter, out, stem, kohya=kohya)
    if adapter.samples:
        from autolora.sampling import grid

        preview = out / f"{stem}.png"
        tmp = out / f".{preview.name}.tmp"
        grid(adapter.samples, adapter.sample_rows).save(tmp, format="PNG")  # UIs show <name>.png beside the LoRA
        os.replace(tmp, preview)
        paths["preview"] = preview
    return paths
