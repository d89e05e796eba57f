"""Every quality claim of autolora, checked on miniworld against ground truth.

Parts (``--parts``, default all):

1. ``judge``: the miniworld CLIP's zero-shot shape / colour / style accuracy on fresh draws.
2. ``base``: share of base-model samples with the prompt's shape and colour, by the judge and by the pixel check
   (``miniworld.truth.read_content``, no CLIP); and, per style, how often the judge sees the asked style.
3. ``validity``: a checker LoRA's scale swept 0..1.5; Spearman correlation of each style metric with the pixel
   style strength (``truth.style_strength``) and of each content metric with the pixel content check.
4. ``tuning``: a tuned LoRA vs the diffusers-default and kohya-like configurations at the tuned trial's step
   budget, on prompts whose shapes and colours no style picture shows; objective and pixel truth.
5. ``search``: TPE + median pruning vs random search over seeds: best objective reached vs training steps spent.

Figures go to stdout and ``OUT/results.json``; pictures (nearest-neighbour x4) to ``OUT/*.png``.

    python benchmarks/miniworld_quality.py [--parts judge,base] [--out bench-miniworld] [--trials 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

PARTS = ("judge", "base", "validity", "tuning", "search")
FIXED = {  # the LoRA the validity sweep scales: the LoCon that learns dotted's texture (docs/miniworld.md)
    "rank": 8,
    "alpha_ratio": 1.0,
    "learning_rate": 2.0e-3,
    "steps": 600,
    "batch_size": 4,
    "target_blocks": ["down", "mid", "up"],
    "target_layers": ["self_attn", "cross_attn", "ff", "conv"],
    "init": "gaussian",
}


def mean(xs: list[bool] | list[float]) -> float:
    return sum(float(x) for x in xs) / max(1, len(xs))


def upscale(image: Any, k: int = 4) -> Any:
    from PIL import Image

    return image.resize((image.width * k, image.height * k), Image.Resampling.NEAREST)


def load_pipe() -> Any:
    import torch

    from autolora.models.loading import load_pipeline, resolve_model

    return load_pipeline(resolve_model("builtin:miniworld"), "cpu", torch.float32)


def load_judge() -> Any:
    from autolora.scoring.clip import ClipJudge

    return ClipJudge("builtin:miniworld-clip", None)


def part_judge(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from autolora.miniworld.quality import judge_accuracy

    acc = judge_accuracy(load_judge(), args.judge_n)
    print(
        f"judge zero-shot accuracy on {args.judge_n} fresh draws: " + ", ".join(f"{k} {v:.1%}" for k, v in acc.items())
    )
    return {"n": args.judge_n, **acc}


def part_base(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from autolora.miniworld.diffusion import BASE_STYLES
    from autolora.miniworld.judge import classify
    from autolora.miniworld.quality import content_truth
    from autolora.miniworld.world import COLOURS, HELD_OUT_STYLES, SHAPES, caption
    from autolora.sampling import grid, sample

    pipe, judge = load_pipe(), load_judge()
    prompts = [caption(s, c) for s in SHAPES for c in COLOURS]
    seeds = list(range(args.base_seeds))
    images = sample(pipe, prompts, seeds, steps=20, guidance_scale=7.5, resolution=32, batch_size=16)
    truth = content_truth(judge, images, [p for p in prompts for _ in seeds])
    result: dict[str, Any] = {"n": len(images), **{k: mean(v) for k, v in truth.items()}}
    print(f"base fidelity, {len(images)} samples of the 24 plain prompts (20 DDIM steps, guidance 7.5):")
    for k in ("judge.shape", "judge.colour", "judge.both", "pixels.shape", "pixels.colour", "pixels.both"):
        print(f"  {k:14s} {result[k]:.1%}")
    first = [images[i * len(seeds)] for i in range(len(prompts))]
    upscale(grid(first, rows=len(SHAPES))).save(out / "base-samples.png")
    styles: dict[str, float] = {}
    for style in (*BASE_STYLES[1:], *HELD_OUT_STYLES):
        styled = [caption(s, c, style) for s, c in zip(SHAPES * 3, list(COLOURS) * 2, strict=True)]
        ims = sample(pipe, styled, [0], steps=20, guidance_scale=7.5, resolution=32, batch_size=12)
        got = classify(judge.embed_images, judge.embed_texts, ims)
        styles[style] = mean([g[2] == style for g in got])
        kind = "held out" if style in HELD_OUT_STYLES else "trained"
        print(f"  asked for {style:8s} ({kind:8s}): judge sees it in {styles[style]:.0%} of 12 samples")
    result["style_seen"] = styles
    return result


def _tune(work: Path, name: str, overrides: list[tuple[str, str, Any]]) -> Any:
    from autolora.config import load_config
    from autolora.tune.job import run_tune

    base = [
        ("study", "name", name),
        ("study", "out", str(work / name)),
        ("study", "mlflow_uri", f"sqlite:///{work}/mlflow.db"),
    ]
    config = load_config(None, base + overrides)
    return run_tune(config, echo=lambda s: print("   ", s), progress=False), config


def _style(args: argparse.Namespace) -> list[tuple[str, str, Any]]:
    """The ``--style`` override: the built-in style folder's content drawn in another miniworld style."""
    from autolora.data import BUILTIN_STYLE, builtin_style_folder

    return [] if args.style == BUILTIN_STYLE else [("data", "style_images", str(builtin_style_folder(args.style)))]


def _session(config: Any) -> Any:
    """The study's pipeline, judge, scorer and base samples (read back from the study's cache)."""
    from autolora.tune.plan import make_plan
    from autolora.tune.session import Session

    session = Session.load(make_plan(config))
    session.prepare(session.plan.run_dir / "cache")
    return session


def _space(work: Path, name: str, params: dict[str, Any]) -> str:
    import yaml

    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"description": name, "params": params}))
    return str(path)


def _truth_of(images: list[Any], prompts: list[str], seeds: int, judge: Any, style: str) -> dict[str, float]:
    from autolora.miniworld.quality import content_truth
    from autolora.miniworld.truth import style_strength, tone_shift

    truth = content_truth(judge, images, [p for p in prompts for _ in range(seeds)])
    return {
        "style_strength": mean([style_strength(im, style) for im in images]),
        "tone_shift": mean([tone_shift(im, style) for im in images]),
        "content_pixels": mean(truth["pixels.both"]),
        "content_judge": mean(truth["judge.both"]),
    }


def part_validity(args: argparse.Namespace, out: Path, work: Path) -> dict[str, Any]:
    from autolora.adapter import KeptAdapter
    from autolora.core.rundir import adapter_dir
    from autolora.formats.export import export_all
    from autolora.miniworld.quality import content_truth, spearman
    from autolora.miniworld.truth import style_strength, tone_shift
    from autolora.sampling import grid, sample

    seeds = list(range(args.validity_seeds))
    _, config = _tune(
        work,
        "validity",
        [("study", "trials", 1), ("study", "search_space", _space(work, "fixed", FIXED)), ("eval", "seeds", seeds)]
        + _style(args),
    )
    session = _session(config)
    plan = session.plan
    kept = KeptAdapter.load(adapter_dir(plan.run_dir, 0))
    files = export_all(kept, work / "validity-export", "style")
    pipe = session.pipe
    pipe.load_lora_weights(str(files["diffusers"]), adapter_name="style")
    prompts = session.eval_prompts()
    rows: list[dict[str, float]] = []
    per_sample: dict[str, list[float]] = {}
    pictures = []
    for scale in args.scales:
        pipe.set_adapters(["style"], adapter_weights=[scale])
        images = sample(pipe, prompts, seeds, steps=20, guidance_scale=7.5, resolution=plan.resolution)
        each = session.scorer.score_each(images)
        truth = content_truth(session.judge, images, [p for p in plan.prompts for _ in seeds])
        strength = [style_strength(im, args.style) for im in images]
        tone = [tone_shift(im, args.style) for im in images]
        row = {"scale": scale, **{k: mean(v) for k, v in each.items()}}
        row.update(style_strength=mean(strength), tone_shift=mean(tone), content_pixels=mean(truth["pixels.both"]))
        rows.append(row)
        for k, v in each.items():
            per_sample.setdefault(k, []).extend(v)
        per_sample.setdefault("style_strength", []).extend(strength)
        per_sample.setdefault("tone_shift", []).extend(tone)
        per_sample.setdefault("content_ok", []).extend(float(x) for x in truth["pixels.both"])
        pictures.append(images[:: len(seeds)])
        print(
            f"  scale {scale:4.2f}: style_fidelity {row['style_fidelity']:.4f} style_direction "
            f"{row['style_direction']:+.4f} content_text {row['content_text']:.4f} | pixels: texture "
            f"{row['style_strength']:.3f}, tone {row['tone_shift']:+.3f}, content right {row['content_pixels']:.0%}"
        )
    pipe.delete_adapters(["style"])
    corr = {}
    for metric in ("style_fidelity", "style_gain", "style_direction"):
        for truth_key in ("style_strength", "tone_shift"):
            corr[f"{metric} ~ {truth_key}"] = {
                "over_scales": spearman([r[metric] for r in rows], [r[truth_key] for r in rows]),
                "per_sample": spearman(per_sample[metric], per_sample[truth_key]),
            }
    for metric in ("content_text", "content_base"):
        corr[f"{metric} ~ content_right"] = {
            "over_scales": spearman([r[metric] for r in rows], [r["content_pixels"] for r in rows]),
            "per_sample": spearman(per_sample[metric], per_sample["content_ok"]),
        }
    print("  Spearman with the pixel truth (texture: style_strength, tone: tone_shift, content right):")
    for metric, c in corr.items():
        print(f"    {metric:32s} over scales {c['over_scales']:+.2f}   per sample {c['per_sample']:+.2f}")
    upscale(grid([im for col in zip(*pictures, strict=True) for im in col], rows=len(prompts))).save(
        out / "scale-sweep.png"
    )
    return {"rows": rows, "spearman": corr, "scales": args.scales, "samples_per_scale": len(prompts) * len(seeds)}


def part_tuning(args: argparse.Namespace, out: Path, work: Path) -> dict[str, Any]:
    from autolora.adapter import KeptAdapter
    from autolora.core.rundir import adapter_dir
    from autolora.recipes import read_recipe
    from autolora.sampling import grid

    seeds = list(range(args.tuning_seeds))
    common = [("eval", "seeds", seeds), *_style(args), ("study", "workers", args.workers)]
    tuned, config = _tune(work, "tuned", [("study", "trials", args.trials), *common])
    session = _session(config)
    best = tuned.study.best_trial
    steps = int(best.params["steps"])
    judge, prompts = session.judge, session.plan.prompts
    results: dict[str, Any] = {"trials": args.trials, "step_budget": steps}
    grids = {"base": session.base_samples}
    runs = {"tuned": (best.value, KeptAdapter.load(adapter_dir(tuned.run_dir, best.number)))}
    # The presets at the tuned LoRA's batch and step budget: their files set no batch size, and the config's default
    # (1) would compare a quarter of the pictures seen (docs/miniworld.md's figure 4 once did).
    batch = int(runs["tuned"][1].info["params"]["batch_size"])
    results["batch_size"] = batch
    for name in ("diffusers-default", "kohya-like"):
        data = read_recipe(name, "autolora.search_spaces", "search space")[0]
        params = dict(data["params"], steps=steps, batch_size=batch)
        r, _ = _tune(
            work,
            name,
            [("study", "trials", 1), ("study", "pruner", "none"), ("study", "search_space", _space(work, name, params))]
            + common[:-1],
        )
        t = r.study.best_trial
        runs[name] = (t.value, KeptAdapter.load(adapter_dir(r.run_dir, t.number)))
    print(f"  tuned ({args.trials} trials) vs fixed configurations at {steps} steps of {batch}; prompts {prompts}:")
    base_truth = _truth_of(grids["base"], prompts, len(seeds), judge, args.style)
    results["base"] = base_truth
    print(
        f"    {'base model':18s} objective    n/a   texture {base_truth['style_strength']:.3f}  "
        f"tone {base_truth['tone_shift']:+.3f}  content right {base_truth['content_pixels']:.0%}"
    )
    for name, (value, kept) in runs.items():
        truth = _truth_of(kept.samples, prompts, len(seeds), judge, args.style)
        results[name] = {"objective": value, **truth, "params": kept.info.get("params")}
        grids[name] = kept.samples
        print(
            f"    {name:18s} objective {value:+.4f}  texture {truth['style_strength']:.3f}  "
            f"tone {truth['tone_shift']:+.3f}  content right {truth['content_pixels']:.0%}"
        )
    columns = [[ims[i * len(seeds)] for i in range(len(prompts))] for ims in grids.values()]
    upscale(grid([im for row in zip(*columns, strict=True) for im in row], rows=len(prompts))).save(
        out / "tuned-vs-defaults.png"
    )
    results["grid_columns"] = list(grids)
    return results


def _curve(study: Any) -> list[tuple[int, float]]:
    """(cumulative training steps, best objective so far) in order of trial completion."""
    import optuna

    spent, best, points = 0, float("-inf"), []
    trials = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    for t in sorted(trials, key=lambda t: t.datetime_complete):
        last = max(t.intermediate_values) if t.intermediate_values else 0
        spent += int(t.params["steps"]) if t.state == optuna.trial.TrialState.COMPLETE else last
        if t.state == optuna.trial.TrialState.COMPLETE:
            best = max(best, float(t.value))
        points.append((spent, best))
    return points


def _best_at(points: list[tuple[int, float]], budget: int) -> float:
    vals = [b for s, b in points if s <= budget]
    return vals[-1] if vals else float("-inf")


def part_search(args: argparse.Namespace, out: Path, work: Path) -> dict[str, Any]:
    curves: dict[str, list[list[tuple[int, float]]]] = {"tpe+median": [], "random": []}
    for seed in range(args.search_seeds):
        for method, overrides in (
            ("tpe+median", [("study", "sampler", "tpe"), ("study", "pruner", "median")]),
            ("random", [("study", "sampler", "random"), ("study", "pruner", "none")]),
        ):
            r, _ = _tune(
                work,
                f"search-{method.replace('+', '-')}-{seed}",
                [
                    ("study", "trials", args.trials),
                    ("study", "seed", seed),
                    ("study", "workers", args.workers),
                    *_style(args),
                    *overrides,
                ],
            )
            curves[method].append(_curve(r.study))
    budget = min(c[-1][0] for runs in curves.values() for c in runs)
    checkpoints = [budget // 4, budget // 2, budget * 3 // 4, budget]
    table: dict[str, Any] = {}
    print(f"  best objective reached by training steps spent (mean over {args.search_seeds} seeds):")
    print("    " + f"{'steps':>12s}" + "".join(f"{c:>10d}" for c in checkpoints))
    for method, runs in curves.items():
        rows = [[_best_at(c, b) for b in checkpoints] for c in runs]
        means = [statistics.mean(col) for col in zip(*rows, strict=True)]
        table[method] = {"per_seed": rows, "mean": means, "total_steps": [c[-1][0] for c in runs]}
        print(f"    {method:>12s}" + "".join(f"{m:+10.4f}" for m in means))
    return {"budget": budget, "checkpoints": checkpoints, "table": table, "trials": args.trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--out", type=Path, default=Path("bench-miniworld"))
    parser.add_argument("--judge-n", type=int, default=2000)
    parser.add_argument("--base-seeds", type=int, default=8)
    parser.add_argument("--validity-seeds", type=int, default=8)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    parser.add_argument("--tuning-seeds", type=int, default=4)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--search-seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--style", help="a patterned miniworld style to learn (default: the built-in style)")
    args = parser.parse_args()
    from autolora.data import BUILTIN_STYLE

    args.style = args.style or BUILTIN_STYLE
    parts = args.parts.split(",")
    for p in parts:
        if p not in PARTS:
            parser.error(f"--parts: unknown part {p!r}; parts: {', '.join(PARTS)}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="autolora-miniworld-"))
    os.chdir(work)
    from autolora.quiet import quiet_libraries

    quiet_libraries()
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for part in parts:
        print(f"\n== {part}")
        t0 = time.perf_counter()
        fn = globals()[f"part_{part}"]
        results[part] = fn(args, out) if part in ("judge", "base") else fn(args, out, work)
        results[part]["seconds"] = round(time.perf_counter() - t0, 1)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"   ({results[part]['seconds']:.0f} s)")
    print(f"\nresults in {results_path}; work folder {work}")


if __name__ == "__main__":
    main()
