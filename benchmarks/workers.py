"""Trials per hour with 1, 2 and 4 local workers on the embedded default, and the storage's cost per trial.

Each setting runs a fresh study of identical trials (benchmarks/fixed.yaml, pruning off) with
``tune --workers K``; trials per hour count from the end of the study's setup to the last trial.
The storage overhead is the time Optuna's SQLite storage adds per trial (ask, params, reports,
tell, heartbeat thread off) against an in-memory study, measured with an empty objective.

    python benchmarks/workers.py [--trials 8] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def tune(work: Path, k: int, trials: int, space: str) -> tuple[float, int]:
    from autolora.config import load_config
    from autolora.tune.job import run_tune

    overrides = [
        ("study", "trials", trials),
        ("study", "workers", k),
        ("study", "search_space", space),
        ("study", "pruner", "none"),
        ("study", "name", f"w{k}"),
        ("study", "out", str(work / f"w{k}")),
        ("study", "mlflow_uri", f"sqlite:///{work}/mlflow.db"),
    ]
    t0 = time.perf_counter()
    result = run_tune(load_config(None, overrides), echo=lambda s: None, progress=False)
    wall = time.perf_counter() - t0
    setup = float(result.study.user_attrs.get("autolora.setup_seconds", 0.0))
    return wall - setup, len(result.study.trials)


def storage_overhead(work: Path, n: int = 60) -> tuple[float, float]:
    import optuna

    from autolora.core.storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        for name in ("rank", "steps"):
            trial.suggest_int(name, 1, 64)
        trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
        for step in range(4):
            trial.report(0.1 * step, step)
        return 0.0

    def per_trial(storage: object) -> float:
        study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))  # type: ignore[arg-type]
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=n)
        return (time.perf_counter() - t0) / n

    memory = per_trial(None)
    sqlite = per_trial(make_storage(f"sqlite:///{work}/overhead.db"))
    return sqlite, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--search-space", default=str(Path(__file__).with_name("fixed.yaml")))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="autolora-workers-"))
    os.chdir(work)
    print(f"benchmark folder {work}; {args.trials} identical trials per setting; {os.cpu_count()} CPU cores")
    rows = []
    for k in (int(x) for x in args.workers.split(",")):
        seconds, n = tune(work, k, args.trials, args.search_space)
        rows.append((k, n, seconds, 3600.0 * n / seconds))
        print(f"  {k} worker(s): {n} trials in {seconds:.1f}s")
    base = rows[0][3]
    print(f"\n{'workers':>7} {'trials':>6} {'seconds':>8} {'trials/hour':>12} {'vs 1 worker':>12}")
    for k, n, seconds, rate in rows:
        print(f"{k:>7} {n:>6} {seconds:8.1f} {rate:12.1f} {rate / base:11.2f}x")
    sqlite, memory = storage_overhead(work)
    print(
        f"\nstorage per trial (3 params, 4 reports): SQLite {sqlite * 1000:.1f} ms, in-memory {memory * 1000:.1f} ms, "
        f"overhead {(sqlite - memory) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
