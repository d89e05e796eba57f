"""Fusion that beats linear fusion? Every fusion method on style pairs whose presence the pixels can read apart.

1. draws a style folder per style and trains one LoRA per style with ``autolora tune`` (``fuse_miniworld``'s fixed
   space), exported as a user would;
2. for every pair and seed runs ``autolora fuse`` per DLF variant (``block``, ``layer``, ``two-phase`` = block
   granularity with separate early/late sets), each with its linear study (the same seeded trials: the warm
   start needs it in the run) and, in the first variant's run, the training-free baselines (K-LoRA in both role
   orders, the measured block prior with its probes); equal budgets: ``--trials`` per study;
3. draws each method's pick (the confirmed best of a study; for K-LoRA and the block prior the best feasible of
   their fixed trials) on the confirmation seeds and reads, without CLIP: each style's presence by its own pixel
   reader (``miniworld.truth.presence_reader``: a ground's colour, a texture's correlation, a ramp) and the content
   (shape and colour right, ``truth.read_content``); beside them the objective on those samples and the
   hypervolume of each method's trials' (``style_gain_min``, ``content_text_delta + 0.5 content_base``) points,
   the reference point shared by the methods of a pair and seed;
4. prints per method the mean and sd over seeds of each figure, per pair, and DLF's hypervolume ratio to linear;
   the best-so-far curves of the DLF studies per coefficient (how many trials DLF needs); writes ``--json`` and a
   sample grid (``--grid``: the first seed of each pair, one row per method).

    python benchmarks/fuse_pairs.py [--pairs navy:dotted night:shaded shaded:checker] [--seeds 0 1 2 3 4]
        [--trials 12] [--variants block layer two-phase] [--out runs/fuse-pairs] [--json FILE] [--grid FILE]
        [--content-floor recipe|none|X] [--table FILE]

Smoke (minutes): ``--base-model builtin:tiny-sd --pairs navy:dotted --seeds 0 --trials 2 --train-steps 2
--steps 2 --variants block --force``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

METHODS = ("linear", "klora", "block-prior", "dlf-block", "dlf-layer", "two-phase")
VARIANTS = {"block": ("block", "constant"), "layer": ("layer", "constant"), "two-phase": ("block", "two-phase")}


def run_variant(pair: tuple[str, str], seed: int, variant: str, loras: dict[str, tuple[Path, Path]],
                args: argparse.Namespace, work: Path, uri: str, baselines: bool) -> Path:  # fmt: skip
    from autolora.config import load_config
    from autolora.fuse.config import FuseRunConfig
    from autolora.fuse.job import run_fuse

    granularity, schedule = VARIANTS[variant]
    name = f"{pair[0]}-{pair[1]}-{variant}-s{seed}"
    out = work / "fuse" / name
    overrides = [
        ("model", "base_model", args.base_model),
        ("fuse", "loras", [f"{s}={loras[s][1]}" for s in pair]),
        ("fuse", "style_images", [f"{s}={loras[s][0]}" for s in pair]),
        ("fuse", "granularity", granularity),
        ("fuse", "schedule", schedule),
        ("fuse", "baselines", ["klora", "block-prior"] if baselines else []),
        ("data", "trigger", ", ".join(f"in {s} style" for s in pair)),
        ("study", "name", name),
        ("study", "out", str(out)),
        ("study", "trials", 0 if (out / "fusion_summary.json").exists() else args.trials),
        ("study", "seed", seed),
        ("study", "mlflow_uri", uri),
        ("eval", "inference_steps", args.steps),
    ]
    if args.objective:
        overrides.append(("fuse", "objective", str(args.objective)))
    run_fuse(load_config(None, overrides, FuseRunConfig), echo=lambda s: None, progress=False)
    return out


def points(trials: list[Any]) -> list[tuple[float, float]]:
    """A method's (weakest style gain, content) points; DLF's copies of linear's points are linear's, not DLF's."""
    from autolora.fuse.warm import START_ATTR

    out = []
    for t in trials:
        if t.user_attrs.get(START_ATTR) == "linear":
            continue
        m = {k.removeprefix("metric."): v for k, v in t.user_attrs.items() if k.startswith("metric.")}
        out.append((m["style_gain_min"], m["content_text_delta"] + 0.5 * m["content_base"]))
    return out


def hypervolumes(sets: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    import numpy as np

    from autolora.fuse.summary import _hypervolume

    losses = {k: -np.array(s, dtype=float).reshape(-1, 2) for k, s in sets.items()}
    reference = np.concatenate(list(losses.values())).max(0) + 1e-9
    return {k: _hypervolume(v, reference) for k, v in losses.items()}


def picks(run_dir: Path) -> dict[str, tuple[str, Any, list[Any]]]:
    """Method -> (study label, picked trial, the method's trials) of one run."""
    from autolora.core.feasible import best, complete, confirmation, is_feasible
    from autolora.fuse.exporting import load_run

    _, studies = load_run(run_dir)
    out: dict[str, tuple[str, Any, list[Any]]] = {}
    for label in ("dlf", "linear"):
        if label in studies and best(studies[label]):
            out[label] = (label, best(studies[label])[0], complete(studies[label]))
    if "fixed" in studies:
        fixed = complete(studies["fixed"])
        conf = confirmation(studies["fixed"])
        confirmed = {n: r.values[0] for n, r in conf.trials.items() if not r.broken} if conf else {}

        def rank(t: Any) -> tuple[bool, float]:  # the confirmed value first, as the studies' own picks
            return (t.number not in confirmed, -confirmed.get(t.number, t.values[0]))

        for kind in ("klora", "block-prior"):
            mine = [t for t in fixed if str(t.params["baseline"]).startswith(kind)]
            ok = sorted([t for t in mine if is_feasible(t)], key=rank)
            if ok:
                out[kind] = ("fixed", ok[0], mine)
    return out


def measure(run_dir: Path, chosen: dict[str, tuple[str, Any, list[Any]]], pair: tuple[str, str]) -> dict[str, Any]:
    """Each pick drawn on the confirmation seeds: objective, feasibility, pixel presence per style, pixel content."""
    import torch

    from autolora.config import load_config
    from autolora.fuse.config import FuseRunConfig
    from autolora.fuse.job import FuseJob
    from autolora.miniworld.quality import content_truth
    from autolora.miniworld.truth import presence_reader
    from autolora.scoring.styles import MultiStyleScorer

    config = load_config(run_dir / "config.yaml", [], FuseRunConfig)
    job = FuseJob.plan(config)
    job.load()
    try:
        session = job._session()
        session.prepare(run_dir / "cache")
        plan = session.plan
        seeds = list(config.eval.confirm_seeds)
        base = session.base_samples_for(seeds, run_dir / "cache")
        scorer = MultiStyleScorer(session.judge)
        scorer.prepare({n: s.images for n, s in plan.styles.items()}, plan.prompts, len(seeds), base)
        readers = {s: presence_reader(s)[1] for s in pair}
        prompts = [p for p in plan.prompts for _ in seeds]
        out: dict[str, Any] = {}
        for method, (label, trial, _) in chosen.items():
            with torch.no_grad():
                images = session.draw(job.spaces[label].of_trial(trial), seeds)
            metrics = scorer.score(images)
            presence = {s: statistics.mean(readers[s](im) for im in images) for s in pair}
            content = content_truth(session.judge, images, prompts)["pixels.both"]
            out[method] = {
                "objective": plan.objective.values(metrics)[0],
                "feasible": not plan.objective.broken(metrics),
                "presence": presence,
                "weakest": min(presence.values()),
                "content": sum(content) / len(content),
                "trial": trial.number,
                "spec": trial.user_attrs.get("spec", ""),
                "images": images,
            }
        return out
    finally:
        job.close()


def curve(trials: list[Any]) -> dict[str, Any]:
    """DLF's starting value (the best of its start trials: stacking and linear's copied best) and its best-so-far
    search value after each sampled trial (trial order)."""
    from autolora.fuse.warm import START_ATTR

    start = max(t.values[0] for t in trials if START_ATTR in t.user_attrs)
    best, out = start, []
    for t in sorted(trials, key=lambda t: t.number):
        if START_ATTR not in t.user_attrs:
            best = max(best, t.values[0])
            out.append(best)
    return {"start": start, "curve": out}


def save_grid(rows: list[tuple[str, list[Any]]], n_cols: int, path: Path) -> None:
    from PIL import Image, ImageDraw

    size = rows[0][1][0].width
    label_w = 110
    canvas = Image.new("RGB", (label_w + n_cols * size, len(rows) * size), "white")
    for r, (label, images) in enumerate(rows):
        ImageDraw.Draw(canvas).text((2, r * size + size // 2 - 5), label, fill="black")
        for c, im in enumerate(images[:n_cols]):
            canvas.paste(im, (label_w + c * size, r * size))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def cross_readings(styles: list[str]) -> dict[str, dict[str, float]]:
    """Each reader on drawn pictures of each style (a clean pair reads ~0 on the other's pictures)."""
    from autolora.miniworld.battery import any_items
    from autolora.miniworld.truth import presence_reader

    out = {}
    for src in styles:
        images = [im for im, _, _ in any_items(src, 12, seed=3)]
        out[src] = {r: statistics.mean(presence_reader(r)[1](im) for im in images) for r in styles}
    return out


def main() -> None:
    from fuse_miniworld import default_base, train_lora

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=default_base())
    parser.add_argument("--pairs", nargs="+", default=["navy:dotted", "night:shaded", "shaded:checker"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=12, help="trials per fusion study")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per sample")
    parser.add_argument("--images", type=int, default=16, help="style images per style")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("runs/fuse-pairs"))
    parser.add_argument(
        "--content-floor",
        default="recipe",
        help="the fusion objective's content_text_ratio floor: 'recipe' (fuse-balanced's), a number, or 'none' "
        "(content then only priced by the objective's content term, and read by the pixels)",
    )
    parser.add_argument("--force", action="store_true", help="export the style LoRAs even when no style is measured")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--grid", type=Path, default=None)
    parser.add_argument("--table", type=Path, nargs="+", default=None,
                        help="print the tables of saved --json files (several: runs of other seeds, joined), run "
                        "nothing")  # fmt: skip
    args = parser.parse_args()
    if args.table:
        results, curves = joined(args.table)
        report(results, curves)
        return

    from autolora.quiet import quiet_libraries

    quiet_libraries()
    pairs = [tuple(p.split(":")) for p in args.pairs]
    styles = sorted({s for p in pairs for s in p})
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work}/mlflow.db"
    cross = cross_readings(styles)
    print("pixel readers on drawn pictures (row: pictures of, column: reader):")
    for src, row in cross.items():
        print(f"  {src:9s} " + " ".join(f"{r}={v:+.2f}" for r, v in row.items()))
    args.objective = objective_file(args.content_floor, work)
    loras = {s: train_lora(s, args, work, uri) for s in styles}
    results: list[dict[str, Any]] = []
    grid_rows: list[tuple[str, list[Any]]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    for seed in args.seeds:  # seeds outer: a run cut short has whole seeds of every pair
        for pair in pairs:
            measured: dict[str, dict[str, Any]] = {}
            trials_of: dict[str, list[Any]] = {}
            for i, variant in enumerate(args.variants):
                run_dir = run_variant(pair, seed, variant, loras, args, work, uri, baselines=i == 0)
                found = picks(run_dir)
                new = {}
                method = "two-phase" if variant == "two-phase" else f"dlf-{variant}"
                if "dlf" in found:
                    new[method] = found["dlf"]
                    n_coeff = len(found["dlf"][2][0].params)
                    curves.setdefault(method, []).append(
                        {"pair": f"{pair[0]}+{pair[1]}", "seed": seed, "n": n_coeff, **curve(found["dlf"][2])}
                    )
                for other in ("linear", "klora", "block-prior"):
                    if other in found and other not in measured:
                        new[other] = found[other]
                measured.update(measure(run_dir, new, pair))
                trials_of.update({m: v[2] for m, v in new.items()})
            hv = hypervolumes({m: points(trials_of[m]) for m in measured})
            for m, row in measured.items():
                row["hypervolume"] = hv[m]
                images = row.pop("images")
                if seed == args.seeds[0]:
                    grid_rows.append((f"{pair[0]}+{pair[1]} {m}", images))
                results.append({"pair": f"{pair[0]}+{pair[1]}", "seed": seed, "method": m, **row})
                print(f"{pair[0]}+{pair[1]} seed {seed} {m:11s} objective {row['objective']:+.4f} "
                      f"weakest {row['weakest']:+.3f} content {row['content']:.2f} hv {hv[m]:.5f} "
                      f"{'' if row['feasible'] else '[infeasible]'} {row['spec']}", flush=True)  # fmt: skip
        if args.json:  # after every seed: a long run cut short keeps what it measured
            write_json(args, cross, results, curves)
        if args.grid and grid_rows and seed == args.seeds[0]:
            save_grid(grid_rows, 16, args.grid)
    print()
    report(results, curves)
    if args.json:
        write_json(args, cross, results, curves)
    if args.grid and grid_rows:
        save_grid(grid_rows, 16, args.grid)
        print(f"sample grid: {args.grid}")


def objective_file(floor: str, work: Path) -> Path | None:
    """``fuse-balanced`` with its content floor replaced (None: the recipe as it is)."""
    import yaml

    from autolora.recipes import read_recipe

    if floor == "recipe":
        return None
    data = read_recipe("fuse-balanced", "autolora.objectives", "objective")[0]
    data["constraints"] = [] if floor == "none" else [{"name": "content", "metric": "content_text_ratio",
                                                       "min": float(floor)}]  # fmt: skip
    data["description"] = f"fuse-balanced, content floor {floor} (benchmarks/fuse_pairs.py)"
    path = work / f"objective-floor-{floor}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def joined(files: list[Path]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The results and curves of several saved runs (other seeds), refusing a (pair, seed, method) twice."""
    results: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    seen: dict[tuple[str, int, str], Path] = {}
    for path in files:
        saved = json.loads(path.read_text())
        for r in saved["results"]:
            key = (r["pair"], r["seed"], r["method"])
            if key in seen:
                sys.exit(f"{path}: {key[0]} seed {key[1]} {key[2]} is in {seen[key]} too; join runs of other seeds")
            seen[key] = path
            results.append(r)
        for method, runs in saved["curves"].items():
            curves.setdefault(method, []).extend(runs)
    return results, curves


def write_json(args: argparse.Namespace, cross: Any, results: list[dict[str, Any]], curves: Any) -> None:
    import subprocess

    args.json.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    saved = {"args": {k: str(v) for k, v in vars(args).items()}, "commit": commit, "cross": cross,
             "results": results, "curves": curves}  # fmt: skip
    args.json.write_text(json.dumps(saved, indent=1) + "\n")


def mean_sd(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):+.4f} ± {sd:.4f}"


def report(results: list[dict[str, Any]], curves: dict[str, list[dict[str, Any]]]) -> None:
    pairs = sorted({r["pair"] for r in results})
    head = "objective (confirm seeds) | weakest style, pixels | content, pixels | hypervolume | hv / linear"
    print(f"| pair | method | {head} |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for pair in pairs:
        linear_hv = {r["seed"]: r["hypervolume"] for r in results if r["pair"] == pair and r["method"] == "linear"}
        for m in METHODS:
            rows = [r for r in results if r["pair"] == pair and r["method"] == m]
            if not rows:
                continue
            ratios = [r["hypervolume"] / linear_hv[r["seed"]] for r in rows if linear_hv.get(r["seed"], 0) > 0]
            ratio = f"{statistics.mean(ratios):.2f}x" if ratios else "-"
            print(f"| {pair} | {m} | {mean_sd([r['objective'] for r in rows])} | "
                  f"{mean_sd([r['weakest'] for r in rows])} | {mean_sd([r['content'] for r in rows])} | "
                  f"{mean_sd([r['hypervolume'] for r in rows])} | {ratio} |")  # fmt: skip
    print()
    for m in ("dlf-block", "dlf-layer", "two-phase"):  # the aim, per pair (means over seeds)
        met = []
        for pair in pairs:
            rows = {r["seed"]: r for r in results if r["pair"] == pair and r["method"] == m}
            lin = {r["seed"]: r for r in results if r["pair"] == pair and r["method"] == "linear"}
            seeds = sorted(set(rows) & set(lin))
            if not seeds:
                continue
            ratio = statistics.mean(rows[s]["hypervolume"] / max(lin[s]["hypervolume"], 1e-12) for s in seeds)
            weak = statistics.mean(rows[s]["weakest"] - lin[s]["weakest"] for s in seeds)
            ok = ratio >= 1.15 and weak >= 0
            met.append(ok)
            print(f"aim {m} {pair}: hv {ratio:.2f}x linear, weakest style {weak:+.3f} vs linear -> "
                  f"{'met' if ok else 'missed'} ({len(seeds)} seeds)")  # fmt: skip
        if met:
            print(f"aim {m}: met on {sum(met)} of {len(met)} pairs")
    print()
    for method, runs in curves.items():
        n = runs[0]["n"]
        reach = []
        for run in runs:
            c, start = run["curve"], run["start"]
            gain = (c[-1] - start) if c else 0.0
            if gain <= 0:
                reach.append(None)
                continue
            target = start + 0.9 * gain
            reach.append(next(i + 1 for i, v in enumerate(c) if v >= target))
        hits = [r for r in reach if r is not None]
        line = f"{method}: {n} coefficients; DLF beat its start in {len(hits)} of {len(reach)} studies"
        if hits:
            med = statistics.median(hits)
            line += f"; 90 % of its final gain after a median {med:.0f} trials ({med / n:.2f} per coefficient)"
        print(line)


if __name__ == "__main__":
    main()
