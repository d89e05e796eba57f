"""Does the default search beat random search at the budgets users run? (issue "Selection users can trust").

Four arms per style and seed, each a whole ``autolora tune`` study on miniworld with the default objective
(content constraint and confirmation on):

- ``auto``: the default (``sampler: auto`` = TPE with a budget-scaled random start, the presets first, median
  pruning at the rungs);
- ``random``: random search, no presets, no pruning;
- ``tpe``: optuna's TPE with its default 10 random trials, no presets, median pruning;
- ``presets``: the two presets alone (2 trials).

Printed: the best *feasible* search value reached against the training steps spent (mean and spread over seeds at
four checkpoints of the smallest total), the confirmed best's value at the end (``selection.py`` reads the pixel
truth of every trial), and the
ratio of steps ``auto`` needs to reach random search's final best (the issue's aim: at most 1/3).

    python benchmarks/search_efficiency.py [--styles dotted,navy,shaded] [--seeds 5] [--trials 30]
        [--out bench-search] [--json docs/miniworld/search-efficiency.json] [--base-model builtin:miniworld]

The issue's size (3 styles x 5 seeds x 30 trials x 3 searching arms) is about 45 hours on the 2-core CPU machine
(a 10-trial study takes about 10 minutes there): a GPU run, or ``--seeds 2 --trials 12`` for a first look.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

ARMS: dict[str, list[tuple[str, str, Any]]] = {
    "auto": [("study", "sampler", "auto"), ("study", "presets", "auto"), ("study", "pruner", "median")],
    "random": [("study", "sampler", "random"), ("study", "presets", "none"), ("study", "pruner", "none")],
    "tpe": [("study", "sampler", "tpe"), ("study", "presets", "none"), ("study", "pruner", "median")],
    "presets": [("study", "presets", "auto"), ("study", "pruner", "none")],
}


def curve(study: Any) -> list[tuple[int, float | None]]:
    """(training steps spent so far, best feasible value so far) in order of completion; None until a trial is
    feasible (a study with nothing feasible has found nothing, not a value of minus infinity)."""
    import optuna

    from autolora.core.feasible import is_feasible

    spent, best, points = 0, None, []
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in sorted((t for t in study.trials if t.state in ended), key=lambda t: t.datetime_complete):
        last = max(t.intermediate_values) if t.intermediate_values else 0
        spent += int(t.params["steps"]) if t.state == optuna.trial.TrialState.COMPLETE else last
        if t.state == optuna.trial.TrialState.COMPLETE and is_feasible(t):
            best = float(t.value) if best is None else max(best, float(t.value))
        points.append((spent, best))
    return points


def best_at(points: list[tuple[int, float | None]], budget: int) -> float | None:
    """The best feasible value within ``budget`` steps; None when none was feasible by then."""
    vals = [b for s, b in points if s <= budget]
    return vals[-1] if vals else None


def steps_to_reach(points: list[tuple[int, float | None]], target: float) -> int | None:
    return next((s for s, b in points if b is not None and b >= target), None)


def run_arm(arm: str, style: str, seed: int, trials: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from selection import style_folder  # type: ignore[import-not-found]

    from autolora.config import load_config
    from autolora.core.feasible import best, confirmation
    from autolora.tune.job import run_tune

    name = f"{arm}-{style}-s{seed}"
    overrides = [
        ("study", "name", name),
        ("study", "out", str(work / name)),
        ("study", "mlflow_uri", f"sqlite:///{work}/mlflow.db"),
        ("study", "trials", 2 if arm == "presets" else trials),
        ("study", "seed", seed),
        ("train", "seed", seed),
        ("model", "base_model", args.base_model),
        *([("study", "search_space", args.search_space)] if args.search_space else []),
        ("data", "style_images", str(style_folder(style, work))),
        *ARMS[arm],
    ]
    result = run_tune(load_config(None, overrides), echo=lambda s: None, progress=False)
    study = result.study
    found = best(study)
    conf = confirmation(study)
    out: dict[str, Any] = {"curve": curve(study), "confirmed": None}
    if found and conf is not None and found[0].number in conf.trials:
        out["confirmed"] = conf.trials[found[0].number].values[0]
    return out


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--styles", default="dotted,navy,shaded")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("bench-search"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--base-model", default="builtin:miniworld", help="builtin:tiny-sd for a smoke test")
    parser.add_argument("--search-space", help="default: quick (tests/data/tiny.yaml for a smoke test)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for style in args.styles.split(","):
        for arm in ARMS:
            for seed in range(args.seeds):
                print(f"== {style} {arm} seed {seed} ({time.perf_counter() - t0:.0f}s)")
                runs.setdefault(style, {}).setdefault(arm, []).append(
                    run_arm(arm, style, seed, args.trials, args.out, args)
                )
    table: dict[str, Any] = {}
    for style, arms in runs.items():
        budget = min(r["curve"][-1][0] for arm, rs in arms.items() if arm != "presets" for r in rs if r["curve"])
        checkpoints = [budget // 4, budget // 2, budget * 3 // 4, budget]
        print(f"\n{style}: best feasible value by training steps spent (mean ± sd over {args.seeds} seeds)")
        print("  " + f"{'arm':>8s}" + "".join(f"{c:>18d}" for c in checkpoints) + "   confirmed at the end")
        table[style] = {"checkpoints": checkpoints, "arms": {}}
        for arm, rs in arms.items():
            cols = [[best_at(r["curve"], c) for r in rs] for c in checkpoints]
            cells = "".join(f"{_ms(col):>18s}" for col in cols)
            confirmed = [r["confirmed"] for r in rs if r["confirmed"] is not None]
            print(f"  {arm:>8s}{cells}   {_ms(confirmed)}")
            table[style]["arms"][arm] = {"at_checkpoints": cols, "confirmed": confirmed}
        ratios: list[float | None] = []
        random_found_none = 0
        for a, r in zip(arms["auto"], arms["random"], strict=True):
            target = r["curve"][-1][1] if r["curve"] else None
            if target is None:  # random search found nothing feasible: there is no target to reach
                random_found_none += 1
                ratios.append(None)
                continue
            reach = steps_to_reach(a["curve"], target)
            ratios.append(None if reach is None else reach / max(1, r["curve"][-1][0]))
        reached = [x for x in ratios if x is not None]
        compared = len(ratios) - random_found_none
        print(
            f"  steps auto needs to reach random search's final best: {_ms(reached)} of random's "
            f"(reached in {len(reached)} of the {compared} seeds where random search found a feasible trial; "
            f"aim <= 0.33)"
        )
        if random_found_none:
            print(f"  random search found no feasible trial in {random_found_none} of {len(ratios)} seeds")
        table[style]["steps_ratio"] = ratios
        table[style]["random_found_none"] = random_found_none
    print(f"\n{time.perf_counter() - t0:.0f}s in all")
    if args.json:  # strict JSON: a seed with nothing feasible is null, never -Infinity
        payload = {"table": table, "trials": args.trials, "seeds": args.seeds}
        args.json.write_text(json.dumps(payload, indent=1, allow_nan=False))


def _ms(xs: list[float | None]) -> str:
    """Mean ± sd over the seeds that have a value, and how many have none (never dropped silently)."""
    vals = [x for x in xs if x is not None]
    if not vals:
        return f"none ({len(xs)} seeds)"
    text = f"{statistics.mean(vals):+.4f} ± {statistics.stdev(vals) if len(vals) > 1 else 0:.4f}"
    return text + (f" ({len(xs) - len(vals)} of {len(xs)} none)" if len(vals) < len(xs) else "")


if __name__ == "__main__":
    main()
