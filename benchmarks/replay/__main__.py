"""``python -m benchmarks.replay``: every arm replayed on a trial table, per style and seed, at 10-40 trials.

    python -m benchmarks.replay docs/table/wide docs/judge/table-wide-trials.jsonl --json docs/replay/wide.json \\
        --plot docs/replay/wide-anytime.png
    python -m benchmarks.replay docs/table/quick docs/judge/table-quick-trials.jsonl --json docs/replay/quick.json

Each (style, seed) replays every arm (``benchmarks.replay.arms.ARMS``): budget-dependent arms once per budget, the
others once at the largest budget with the smaller budgets read as its prefixes. Printed: per arm and budget the
probability of a usable export, of any export, the mean confirmed value (nothing exported counts as the base
model, 0) and pixel style, the mean training steps, and how often the pick beats the best preset by the pixel
truth; then the issue's two aims. ``--seeds`` (default 100) replay seeds per style; ``--jobs`` processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

BUDGETS = (10, 20, 30, 40)
CONFIRMED_ARM = "default"
CONFIRM_KS = (1, 3, 5, 10)
"""The default's exports again with the confirmation stage's top 1, 3 (``study.confirm_top_k``), 5 and 10."""
_LOOKUPS: dict[str, Any] = {}


def _init(table: str, trials: str, styles: list[str] | None) -> None:
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from benchmarks.replay.lookup import load_lookups

    _LOOKUPS.update(load_lookups(Path(table), Path(trials), styles))


def _work(job: tuple[str, int, list[str]]) -> dict[str, Any]:
    """Every arm on one style and seed: outcomes per budget, the anytime curve, the snapping distances."""
    from benchmarks.replay.arms import ARMS
    from benchmarks.replay.figures import outcome
    from benchmarks.replay.run import WARM_TOP, curve, export_after, portfolio, replay

    style, seed, arm_names = job
    lookup = _LOOKUPS[style]
    folio = portfolio(_LOOKUPS, style, WARM_TOP)
    out: dict[str, Any] = {"style": style, "seed": seed, "arms": {}}
    for arm in ARMS:
        if arm.name not in arm_names:
            continue
        entry: dict[str, Any] = {"budgets": {}}
        if arm.per_budget:
            runs = {b: replay(arm, lookup, seed, b, folio) for b in BUDGETS}
        else:
            trials = replay(arm, lookup, seed, max(BUDGETS), folio)
            runs = {b: trials[:b] for b in BUDGETS}
        trials = runs[max(BUDGETS)]
        for b in BUDGETS:
            entry["budgets"][b] = outcome(export_after(runs[b], lookup))
        if arm.name == CONFIRMED_ARM:  # how many trials the confirmation stage needs (study.confirm_top_k)
            entry["confirm_k"] = {
                b: {k: outcome(export_after(runs[b], lookup, k)) for k in CONFIRM_KS} for b in BUDGETS
            }
        # The largest budget's run, trial by trial: (steps spent, confirmed value, pixel style) of the export.
        entry["curve"] = [(e.steps, e.value, e.progress) for e in curve(trials, lookup)]
        entry["distance"] = [t.distance for t in trials]
        entry["configs"] = len({t.config for t in trials})
        out["arms"][arm.name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("table", type=Path, help="a packed trial table (docs/table/wide)")
    parser.add_argument("trials", type=Path, help="its re-scored trials (docs/judge/table-wide-trials.jsonl)")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--styles", help="comma-separated (default: every style of the table)")
    parser.add_argument("--arms", help="comma-separated arm names (default: all but the extra ones)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="the anytime curves (PNG)")
    args = parser.parse_args(argv)
    from benchmarks.replay.arms import ARMS

    for path in (args.table, args.trials):
        if not path.exists():
            print(f"{path}: no such file or folder", file=sys.stderr)
            return 2
    names = [a.name for a in ARMS]
    arm_names = args.arms.split(",") if args.arms else [a.name for a in ARMS if not a.extra]
    unknown = [a for a in arm_names if a not in names]
    if unknown:
        print(f"--arms {','.join(unknown)}: no such arm; arms: {', '.join(names)}", file=sys.stderr)
        return 2
    styles = args.styles.split(",") if args.styles else None
    t0 = time.perf_counter()
    _init(str(args.table), str(args.trials), styles)
    if styles and set(styles) - set(_LOOKUPS):
        print(f"--styles: not in the table: {','.join(sorted(set(styles) - set(_LOOKUPS)))}", file=sys.stderr)
        return 2
    jobs = [(s, seed, arm_names) for s in _LOOKUPS for seed in range(args.seeds)]
    if args.jobs > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        with ctx.Pool(args.jobs, initializer=_init, initargs=(str(args.table), str(args.trials), styles)) as pool:
            results = pool.map(_work, jobs, chunksize=max(1, len(jobs) // (8 * args.jobs)))
    else:
        results = [_work(j) for j in jobs]
    from benchmarks.replay.report import figures, markdown, plot

    payload = figures(results, _LOOKUPS, arm_names, BUDGETS)
    payload.update(table=str(args.table), seeds=args.seeds, seconds=round(time.perf_counter() - t0, 1))
    print(markdown(payload))
    print(f"\n{payload['seconds']:.0f}s ({len(jobs)} style-seeds x {len(arm_names)} arms, {args.jobs} processes)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    if args.plot:
        plot(payload, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
