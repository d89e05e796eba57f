"""``autolora export`` of a tune run: the kept adapter of a trial as diffusers/peft and kohya/LyCORIS files, with a
preview."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from autolora.adapter import KeptAdapter
from autolora.core.reading import choose_trial
from autolora.core.rundir import adapter_dir, kept_numbers
from autolora.errors import UserError
from autolora.formats.export import export_adapter
from autolora.formats.kept import adapter_method

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
    method = adapter_method(adapter)
    if rank is not None and method.files != "denoiser":
        raise UserError(
            "--rank: the rank of the LoRA extracted from a DreamBooth trial, or of a fusion; this is a "
            f"{method.name} trial"
        )
    stem = name or f"{study.study_name}-trial{n}"
    paths = export_adapter(adapter, out, stem, rank=rank)
    _preview(adapter, out, stem, paths)
    return paths


def _preview(adapter: KeptAdapter, out: Path, stem: str, paths: dict[str, Path]) -> None:
    if adapter.samples:
        from autolora.atomic import write_file
        from autolora.sampling import grid

        picture = grid(adapter.samples, adapter.sample_rows)  # UIs show <name>.png beside the LoRA
        paths["preview"] = write_file(out / f"{stem}.png", lambda tmp: picture.save(tmp, format="PNG"))
