"""DLF vs linear fusion on miniworld, measured: two style LoRAs trained with autolora, then fusion studies of each
granularity with the same trial budget over several seeds.

1. draws a style folder per style (``autolora miniworld images``) and trains one LoRA per style with
   ``autolora tune`` (one trial of a fixed search space), exporting it as a user would;
2. for every seed and granularity (default ``global`` = linear fusion, and ``layer``), runs ``autolora fuse``
   with the same number of trials (no extra baseline study: ``global`` is the baseline);
3. prints, per study and seed, the best scalar objective (``fuse-balanced``: ``style_gain_min +
   content_text_delta``) and the hypervolume of the trials' (``style_gain_min``, ``content_text_delta +
   0.5 content_base``) points, the reference point being the worst of each over both granularities of that seed;
   then the mean per granularity;
4. saves ``fuse_miniworld.png``: the sample grid of each granularity's best trial of the first seed.

    python benchmarks/fuse_miniworld.py [--base-model builtin:miniworld] [--styles checker dotted]
        [--trials 16] [--seeds 0 1 2] [--train-steps 300] [--out runs/fuse-miniworld]

Smoke (minutes on 2 CPU cores): ``--base-model builtin:tiny-sd --trials 3 --seeds 0 1 2 --train-steps 4
--steps 2``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

FIXED_SPACE = """description: one fixed LoRA per style (fuse_miniworld benchmark)
params:
  rank: 8
  alpha_ratio: 1.0
  learning_rate: 4.0e-3
  batch_size: 4
  steps: {steps}
  target_blocks: [down, mid, up]
  target_layers: [self_attn, cross_attn, ff]
  init: gaussian
"""


def default_base() -> str:
    from autolora.models.builtin import BUILTINS

    return "builtin:miniworld" if "miniworld" in BUILTINS else "builtin:tiny-sd"


def train_lora(style: str, args: argparse.Namespace, work: Path, uri: str) -> tuple[Path, Path]:
    """(style folder, exported diffusers LoRA file) of ``style``, trained by ``autolora tune``."""
    from autolora.config import load_config
    from autolora.miniworld.cli import write_style_folder
    from autolora.tune.export import export_trial
    from autolora.tune.job import run_tune

    folder = work / "styles" / style
    if not folder.exists():
        write_style_folder(style, args.images, folder, seed=0, size=args.size)
    space = work / f"space-{style}.yaml"
    space.write_text(FIXED_SPACE.format(steps=args.train_steps))
    overrides = [
        ("model", "base_model", args.base_model),
        ("data", "style_images", str(folder)),
        ("data", "trigger", f"in {style} style"),
        ("study", "name", f"lora-{style}"),
        ("study", "out", str(work / f"lora-{style}")),
        ("study", "trials", 0 if (work / f"lora-{style}" / "optuna.db").exists() else 1),
        ("study", "search_space", str(space)),
        ("study", "pruner", "none"),
        ("study", "mlflow_uri", uri),
        ("eval", "inference_steps", args.steps),
        ("eval", "seeds", [0]),
    ]
    result = run_tune(load_config(None, overrides), echo=lambda s: None, progress=False)
    force = bool(getattr(args, "force", False))  # a smoke run on a model that cannot learn the style
    paths = export_trial(result.study, result.run_dir, None, work / f"lora-{style}" / "export", style, force)
    return folder, paths["diffusers"]


def fuse(granularity: str, seed: int, loras: dict[str, tuple[Path, Path]], args: argparse.Namespace, work: Path,
         uri: str) -> Any:  # fmt: skip
    from autolora.config import load_config
    from autolora.fuse.config import FuseRunConfig
    from autolora.fuse.job import run_fuse

    name = f"{granularity}-s{seed}"
    overrides = [
        ("model", "base_model", args.base_model),
        ("fuse", "loras", [f"{s}={f}" for s, (_, f) in loras.items()]),
        ("fuse", "style_images", [f"{s}={d}" for s, (d, _) in loras.items()]),
        ("fuse", "granularity", granularity),
        ("fuse", "baseline", False),
        ("data", "trigger", ", ".join(f"in {s} style" for s in loras)),
        ("study", "name", name),
        ("study", "out", str(work / "fuse" / name)),
        ("study", "trials", args.trials),
        ("study", "seed", seed),
        ("study", "mlflow_uri", uri),
        ("eval", "inference_steps", args.steps),
    ]
    return run_fuse(load_config(None, overrides, FuseRunConfig), echo=lambda s: None, progress=False)


def points(study: Any) -> list[tuple[float, float]]:
    """(style_gain_min, content) of every complete trial, content as the fuse-pareto recipe defines it."""
    from autolora.fuse.summary import complete

    out = []
    for t in complete(study):
        m = {k.removeprefix("metric."): v for k, v in t.user_attrs.items() if k.startswith("metric.")}
        out.append((m["style_gain_min"], m["content_text_delta"] + 0.5 * m["content_base"]))
    return out


def hypervolumes(sets: list[list[tuple[float, float]]]) -> list[float]:
    import numpy as np

    from autolora.fuse.summary import _hypervolume

    losses = [-np.array(s, dtype=float).reshape(-1, 2) for s in sets]
    reference = np.concatenate(losses).max(0) + 1e-9
    return [_hypervolume(loss, reference) for loss in losses]


def save_grid(results: dict[str, Any], uri: str, path: Path) -> None:
    import os

    from mlflow.tracking import MlflowClient
    from PIL import Image, ImageDraw

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(uri)
    rows = []
    for granularity, result in results.items():
        best = result.studies["dlf"].best_trial
        local = client.download_artifacts(best.user_attrs["mlflow_run_id"], "samples/grid.png", str(path.parent))
        with Image.open(local) as im:
            rows.append((granularity, im.convert("RGB")))
    width = max(im.width for _, im in rows) + 60
    canvas = Image.new("RGB", (width, sum(im.height for _, im in rows)), "white")
    y = 0
    for label, im in rows:
        canvas.paste(im, (60, y))
        ImageDraw.Draw(canvas).text((2, y + 2), label, fill="black")
        y += im.height
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=default_base())
    parser.add_argument("--styles", nargs=2, default=["checker", "dotted"])
    parser.add_argument("--granularities", nargs="+", default=["global", "layer"])
    parser.add_argument("--trials", type=int, default=16, help="trials per fusion study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per sample")
    parser.add_argument("--images", type=int, default=16, help="style images per style")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("runs/fuse-miniworld"))
    args = parser.parse_args()

    from autolora.quiet import quiet_libraries

    quiet_libraries()
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work}/mlflow.db"
    loras = {style: train_lora(style, args, work, uri) for style in args.styles}
    print(f"base {args.base_model}; LoRAs {', '.join(f'{s}: {f}' for s, (_, f) in loras.items())}")
    print(f"{'seed':>4} {'granularity':11s} {'trials':>6} {'best score':>11} {'hypervolume':>11}")
    table: dict[str, list[tuple[float, float]]] = {g: [] for g in args.granularities}
    first: dict[str, Any] = {}
    for seed in args.seeds:
        results = {g: fuse(g, seed, loras, args, work, uri) for g in args.granularities}
        first = first or results
        hv = hypervolumes([points(r.studies["dlf"]) for r in results.values()])
        for (g, r), volume in zip(results.items(), hv, strict=True):
            best = r.studies["dlf"].best_value
            table[g].append((best, volume))
            print(f"{seed:>4} {g:11s} {args.trials:>6} {best:>+11.4f} {volume:>11.3e}")
    for g, rows in table.items():
        scores, volumes = [r[0] for r in rows], [r[1] for r in rows]
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(f"mean {g:11s} {args.trials:>6} {statistics.mean(scores):>+11.4f} {statistics.mean(volumes):>11.3e}"
              f"  (score sd {spread:.4f})")  # fmt: skip
    save_grid(first, uri, work / "fuse_miniworld.png")
    print(f"sample grids of the best trials (seed {args.seeds[0]}): {work / 'fuse_miniworld.png'}")


if __name__ == "__main__":
    main()
