"""The replay checked against reality (issue 35, step 4): the default search and random search run for real.

Each study is a whole ``autolora tune`` on miniworld over the trial table's space (``wide``), its world, its style
pictures and its seeds, so that its outcome can be set beside what ``python -m benchmarks.replay`` predicted for
the same arm, style and budget:

- ``default``: ``tune`` as it comes (whatever ``config.py`` sets when this runs: the replay's choice);
- ``random``: random search, no presets, no pruner.

Per study it records every trial (configuration, state, steps trained, search value, feasibility), what ``tune``
would export (the confirmed best) and that export's pixel truth on the confirmation seeds (progress towards the
references' pixel style, content kept within 5 points of the base: the table's "usable"). Results append to
``--results`` one study at a time (a study already there is skipped: resumable across sessions).

    python benchmarks/search_efficiency.py --out bench-search --results docs/replay/real-check.jsonl  # 12 studies
    python benchmarks/search_efficiency.py --results docs/replay/real-check.jsonl --compare docs/replay/wide.json

About 10-20 minutes a study on the 2-core CPU machine (2 arms x 2 styles x 3 seeds at 20 trials: 2-4 hours); run
it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ARMS: dict[str, list[tuple[str, str, Any]]] = {
    "default": [],
    "random": [("study", "sampler", "random"), ("study", "presets", "none"), ("study", "pruner", "none")],
}


def run_study(arm: str, style: str, seed: int, trials: int, work: Path, space: str) -> dict[str, Any]:
    import optuna

    from autolora.config import load_config
    from autolora.core.feasible import best, confirmation
    from autolora.tune.job import run_tune
    from benchmarks.table.build import commit, style_folder

    name = f"{arm}-{style}-s{seed}"
    if (work / name).exists():  # a study a stopped session left part-way: begun again whole, never topped up
        import shutil  # (its optuna storage lives in the folder; its MLflow runs stay, unread here)

        shutil.rmtree(work / name)
    config = load_config(
        None,
        [
            ("study", "name", name),
            ("study", "out", str(work / name)),
            ("study", "mlflow_uri", f"sqlite:///{work.resolve()}/mlflow.db"),
            ("study", "trials", trials),
            ("study", "seed", seed),
            ("study", "search_space", space),
            ("model", "base_model", "builtin:miniworld"),
            ("data", "style_images", str(style_folder(style, work))),
            *ARMS[arm],
        ],
    )
    t0 = time.perf_counter()
    study = run_tune(config, echo=lambda s: None, progress=False).study
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {
        "arm": arm,
        "style": style,
        "seed": seed,
        "trials": trials,
        "space": space,
        "settings": {k: getattr(config.study, k) for k in ("sampler", "pruner", "presets", "pruner_startup_trials")},
        "commit": commit(),
        "seconds": round(seconds, 1),
        "study": [],
    }
    for t in study.trials:
        ended = t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        last = max(t.intermediate_values) if t.intermediate_values else 0
        out["study"].append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "steps": int(t.params.get("steps", 0)) if t.state == optuna.trial.TrialState.COMPLETE else last,
                "value": t.values[0] if t.values else None,
                "feasible": bool(ended and all(v <= 0 for v in t.constraints.values())),
                "best_step": t.user_attrs.get("best_step"),
            }
        )
    found = best(study)
    conf = confirmation(study)
    out["export"] = None
    if found and conf is not None and found[0].number in conf.trials:
        number = found[0].number
        out["export"] = {"trial": number, "confirmed": conf.trials[number].values[0]}
        out["export"].update(pixel_truth(config, style, number))
    return out


def pixel_truth(config: Any, style: str, number: int) -> dict[str, Any]:
    """The export's pixel truth on the confirmation seeds, as the table reads it (``benchmarks.table.figures``)."""
    import torch

    from autolora.adapter import KeptAdapter
    from autolora.core.rundir import adapter_dir
    from autolora.methods import kept_method, load_kept
    from autolora.tune.plan import make_plan
    from autolora.tune.session import Session
    from benchmarks.replay.lookup import Reading
    from benchmarks.table.build import Truth
    from benchmarks.table.figures import _right

    session = Session.load(make_plan(config))
    session.prepare(session.plan.run_dir / "cache")
    plan = session.plan
    seeds = list(config.eval.confirm_seeds)
    truth = Truth(style, plan.prompts)
    base = truth.pixels(session.base_samples_for(seeds, plan.run_dir / "cache"), len(seeds))
    kept = KeptAdapter.load(adapter_dir(plan.run_dir, number))
    method = kept_method(kept.configs)
    attached = load_kept(session.pipe, kept.configs, kept.state_dicts, "check")
    with torch.no_grad():
        spelled = [method.prompt(p, config.data.trigger, config.data.identifier) for p in session.eval_prompts()]
        images = session.draw(spelled, seeds)
    method.detach(session.pipe, "check", attached)
    read = truth.pixels(images, len(seeds))
    refs = statistics.mean(truth.presence(im) for im in plan.style.images)
    base_presence = statistics.mean(base["presence"])
    session.release()
    progress = (statistics.mean(read["presence"]) - base_presence) / (refs - base_presence)
    loss = _right(base) - _right(read)
    return {"progress": progress, "loss": loss, "usable": Reading(0.0, 0.0, progress, loss).usable}  # the table's rule


def done(results: Path) -> set[tuple[str, str, int, int]]:
    if not results.is_file():
        return set()
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(r["arm"], r["style"], r["seed"], r["trials"]) for r in rows}


def compare(results: Path, replay: Path) -> int:
    """The real studies beside the replay's prediction for the same arm, style and budget."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    predicted = json.loads(replay.read_text())
    print(f"{'arm':>8} {'style':>7} {'n':>2}  real: usable / confirmed / progress / steps      replay (mean ± sd)")
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["style"], r["trials"]), []).append(r)
    for (arm, style, trials), rs in sorted(groups.items()):
        real = [_outcome(r) for r in rs]
        cell = (predicted.get("cells", {}).get(style, {}).get(arm, {}).get(str(trials))) or {}
        print(
            f"{arm:>8} {style:>7} {len(rs):2d}  "
            f"{_mean([x['usable'] for x in real]):.2f} / {_ms([x['value'] for x in real])} / "
            f"{_ms([x['progress'] for x in real])} / {_mean([x['steps'] for x in real]):.0f}     "
            + (
                f"{cell['usable']:.2f} / {cell['value']:+.3f} ± {cell['value_sd']:.3f} / "
                f"{cell['progress']:+.3f} ± {cell['progress_sd']:.3f} / {cell['steps']:.0f}"
                if cell
                else "no replay cell"
            )
        )
    return 0


def _outcome(r: dict[str, Any]) -> dict[str, float]:
    e = r["export"]
    steps = sum(t["steps"] for t in r["study"] if t["state"] in ("COMPLETE", "PRUNED"))
    if not e:  # nothing exported: the user keeps the base model (value 0, pixel style 0), as the replay counts it
        return {"usable": 0.0, "value": 0.0, "progress": 0.0, "steps": steps}
    return {"usable": float(e["usable"]), "value": e["confirmed"], "progress": e["progress"], "steps": steps}


def _mean(xs: list[float]) -> float:
    return statistics.mean(xs) if xs else float("nan")


def _ms(xs: list[float]) -> str:
    return f"{_mean(xs):+.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default="random,default")
    parser.add_argument("--styles", default="dotted,shaded")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--space", default="wide")
    parser.add_argument("--out", type=Path, default=Path("bench-search"))
    parser.add_argument("--results", type=Path, default=Path("docs/replay/real-check.jsonl"))
    parser.add_argument("--compare", type=Path, help="the replay's JSON: print the real studies beside it")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.compare:
        return compare(args.results, args.compare)
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # Seed-major, the arms side by side: a session that stops part-way leaves comparable pairs.
    for seed in range(args.seeds):
        for style in args.styles.split(","):
            for arm in args.arms.split(","):
                if (arm, style, seed, args.trials) in done(args.results):
                    continue
                print(f"== {arm} {style} seed {seed} ({time.perf_counter() - t0:.0f}s)", flush=True)
                row = run_study(arm, style, seed, args.trials, args.out, args.space)
                with args.results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                e = row["export"]
                print(f"   {row['seconds']:.0f}s export {e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
