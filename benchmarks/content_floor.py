"""Where should the content floor sit? The objective's content term against the pixel truth, trial by trial.

Reads finished miniworld ``tune`` run folders (for example ``miniworld_quality.py --parts search``'s work folder)
and, for every complete trial, compares its ``content_text_delta`` (the objective's content term, relative to the
base model's own samples) with the pixel check of its last sample grid (``miniworld.truth.read_content``: the
prompt's shape and colour right), beside the base's. A trial "kept the subject" when its pixel content is within
``--points`` of the base's (issue "Selection users can trust": within 5 points). For each candidate floor it prints
how many trials the constraint ``content_text_ratio >= floor`` (the content term over the base's) would keep, and
how many of those lost the subject (false feasible) or of those dropped kept it (false infeasible).

    python benchmarks/content_floor.py RUN_DIR [RUN_DIR ...] [--points 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def trials_of(run_dir: Path) -> list[dict[str, Any]]:
    """Per complete trial: its content term and the pixel share of the prompts' shape and colour right."""
    import optuna

    from autolora.core.artifacts import images, last_samples
    from autolora.core.storage import make_storage
    from autolora.miniworld.quality import prompt_content
    from autolora.miniworld.truth import read_content

    storage = make_storage(f"sqlite:///{run_dir / 'optuna.db'}")
    out = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        prompts = _prompts_of(run_dir)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            picture = last_samples(images(t, run_dir, storage=storage), t.user_attrs.get("best_step"))
            if picture is None or "metric.content_text_delta" not in t.user_attrs:
                continue
            cells = _cells(picture, len(prompts))
            seeds = len(cells) // len(prompts)
            wanted = [prompt_content(p) for p in prompts for _ in range(seeds)]
            right = [read_content(c) == w for c, w in zip(cells, wanted, strict=True)]
            out.append(
                {
                    "run": run_dir.name,
                    "trial": t.number,
                    "content_text_delta": float(t.user_attrs["metric.content_text_delta"]),
                    "content_text_ratio": _ratio(t.user_attrs),
                    "style_gain": float(t.user_attrs.get("metric.style_gain", 0.0)),
                    "pixels_right": sum(right) / len(right),
                }
            )
    return out


def _ratio(attrs: dict[str, Any]) -> float:
    """``content_text`` over the base's (``content_text - content_text_delta``), as the scorer's metric."""
    text, delta = float(attrs["metric.content_text"]), float(attrs["metric.content_text_delta"])
    return text / max(text - delta, 1e-6)


def _prompts_of(run_dir: Path) -> list[str]:
    """The run's evaluation prompts: its config's ``data.prompts`` file, else the built-in prompts."""
    import yaml

    from autolora.data import BUILTIN_PROMPTS, load_prompts

    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    path = (config.get("data") or {}).get("prompts")
    return load_prompts(Path(path)) if path else list(BUILTIN_PROMPTS)


def _cells(picture: Any, rows: int) -> list[Any]:
    """The sample grid's pictures in order (row-major: a row per prompt, a column per seed)."""
    size = picture.height // rows
    cols = picture.width // size
    boxes = [(c * size, r * size, (c + 1) * size, (r + 1) * size) for r in range(rows) for c in range(cols)]
    return [picture.crop(box) for box in boxes]


def base_right(run_dir: Path) -> float | None:
    """The base model's pixel content on its cached samples (``cache/base-samples-*.safetensors``)."""
    from autolora.miniworld.quality import prompt_content
    from autolora.miniworld.truth import read_content
    from autolora.sampling import load_images

    found = sorted(run_dir.glob("cache/base-samples-*.safetensors"))
    if not found:
        return None
    pictures = load_images(found[0])
    prompts = _prompts_of(run_dir)
    seeds = len(pictures) // len(prompts)
    wanted = [prompt_content(p) for p in prompts for _ in range(seeds)]
    right = [read_content(p) == w for p, w in zip(pictures, wanted, strict=True)]
    return sum(right) / len(right)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--points", type=float, default=5.0, help="pixel points below the base that still count")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    bases = {}
    for run in args.runs:
        if not (run / "optuna.db").is_file():
            parser.error(f"{run}: expected a tune run folder (with optuna.db)")
        bases[run.name] = base_right(run)
        rows += trials_of(run)
    if not rows:
        parser.error("no complete trials with samples in those folders")
    for r in rows:
        base = bases[r["run"]]
        r["base_right"] = base
        r["kept"] = base is not None and r["pixels_right"] >= base - args.points / 100
    from autolora.miniworld.quality import spearman

    kept = sum(r["kept"] for r in rows)
    rho = spearman([r["content_text_ratio"] for r in rows], [r["pixels_right"] for r in rows])
    print(f"{len(rows)} complete trials of {len(args.runs)} runs; base pixel content {sorted(set(bases.values()))}")
    print(f"kept the subject (pixels within {args.points:g} points of the base): {kept} of {len(rows)}")
    print(f"Spearman content_text_ratio ~ pixel content right: {rho:+.2f}")
    print(f"{'floor':>8s} {'feasible':>9s} {'lost, feasible':>15s} {'kept, dropped':>14s}")
    table = []
    for floor in (0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.9, 0.85):
        feasible = [r for r in rows if r["content_text_ratio"] >= floor]
        bad = sum(not r["kept"] for r in feasible)
        dropped = sum(r["kept"] for r in rows if r["content_text_ratio"] < floor)
        table.append({"floor": floor, "feasible": len(feasible), "lost_feasible": bad, "kept_dropped": dropped})
        print(f"{floor:8.2f} {len(feasible):9d} {bad:15d} {dropped:14d}")
    if args.json:
        args.json.write_text(json.dumps({"trials": rows, "floors": table, "spearman": rho}, indent=2) + "\n")


if __name__ == "__main__":
    main()
