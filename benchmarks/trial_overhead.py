"""Where a trial's time goes, and in-process trials vs one process per trial, side by side.

Runs two short studies on the embedded default model with the same seed, search space and
trial count (pruning off, so every trial runs to its end):

1. in-process: the model is loaded once; prints the per-phase seconds of every trial (adapter
   add/remove, train, sample, score, log, keep) and the share that is neither training nor
   sampling;
2. process per trial: each trial starts a fresh Python process that reloads the model.

Then prints trials per hour for both and their ratio.

    python benchmarks/trial_overhead.py [--trials 4] [--search-space quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

PHASES = ("adapter", "train", "sample", "score", "log", "keep")


def run(mode: str, args: argparse.Namespace, work: Path) -> tuple[float, list[dict[str, float]], float]:
    from autolora.config import load_config
    from autolora.tune.job import run_tune

    overrides = [
        ("study", "trials", args.trials),
        ("study", "search_space", args.search_space),
        ("study", "pruner", "none"),
        ("study", "name", mode),
        ("study", "out", str(work / mode)),
        ("study", "mlflow_uri", f"sqlite:///{work}/mlflow.db"),
        ("study", "process_per_trial", mode == "process-per-trial"),
    ]
    config = load_config(None, overrides)
    t0 = time.perf_counter()
    result = run_tune(config, echo=lambda s: print("   ", s), progress=False)
    wall = time.perf_counter() - t0
    setup = float(result.study.user_attrs.get("autolora.setup_seconds", 0.0))
    timings = [t.user_attrs.get("timings", {}) for t in result.study.trials]
    return wall, timings, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--search-space", default=str(Path(__file__).with_name("fixed.yaml")))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="autolora-bench-"))
    os.chdir(work)
    print(f"benchmark folder {work}; {args.trials} trials per mode, search space {args.search_space}")
    results = {}
    for mode in ("in-process", "process-per-trial"):
        print(f"\n== {mode}")
        results[mode] = run(mode, args, work)

    wall, timings, setup = results["in-process"]
    print(f"\nsetup once per study (load pipeline + judge, latents, caption embeddings, base samples): {setup:.2f}s")
    print(f"{'trial':>5} " + " ".join(f"{p:>8s}" for p in PHASES) + f" {'total':>8s} {'overhead':>9s}")
    shares = []
    for i, t in enumerate(timings):
        total = sum(t.get(p, 0.0) for p in PHASES)
        other = total - t.get("train", 0.0) - t.get("sample", 0.0)
        shares.append(other / total if total else 0.0)
        print(f"{i:>5} " + " ".join(f"{t.get(p, 0.0):8.2f}" for p in PHASES) + f" {total:8.2f} {other / total:8.1%}")
    print(f"share of trial time that is not training or sampling: mean {statistics.mean(shares):.1%}")

    rates = {}
    for mode, (wall, timings, setup) in results.items():
        per_trial = (wall - setup) / max(1, len(timings))
        rates[mode] = 3600.0 / per_trial
    print(f"\n{'mode':<20s} {'trials/hour':>12s}")
    for mode, rate in rates.items():
        print(f"{mode:<20s} {rate:12.1f}")
    print(f"ratio in-process / process-per-trial: {rates['in-process'] / rates['process-per-trial']:.2f}x")


if __name__ == "__main__":
    main()
