"""A trial in its own process: ``python -m autolora.worker RUN_DIR --parent-run ID [--trials N]``.

The process reads the run folder's resolved config, loads the model, reads the study's caches
from disk, joins the study through its storage and runs its trials, logging under the parent
MLflow run. ``autolora tune --process-per-trial`` starts one per trial, so memory a GPU driver
or library leaks in one trial is returned to the system before the next.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run_worker(run_dir: Path, parent_run_id: str | None, n_trials: int = 1) -> int:

    from autolora.config import load_config
    from autolora.errors import TrialFailed
    from autolora.plan import make_plan
    from autolora.quiet import quiet_libraries
    from autolora.session import Session
    from autolora.store import best_numbers, prune_kept
    from autolora.study import open_study
    from autolora.tracking import ParentRun, Tracker
    from autolora.trial import TrialRunner

    quiet_libraries()
    config = load_config(run_dir / "config.yaml", [])
    plan = make_plan(config)
    session = Session.load(plan)
    session.prepare(plan.run_dir / "cache")
    study = open_study(plan)
    parent = None
    if parent_run_id:
        tracker = Tracker(config.study.mlflow_uri, f"autolora/{config.study_name}")
        parent = ParentRun(tracker.client, parent_run_id, tracker.experiment_id)
    runner = TrialRunner(session, parent, echo=lambda s: print(s, flush=True), progress=False)
    keep = config.study.keep_top_k
    study.optimize(
        runner,
        n_trials=n_trials,
        catch=(TrialFailed,),
        callbacks=[lambda st, _t: prune_kept(plan.run_dir, best_numbers(st, keep))],
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autolora.worker", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--parent-run", default=None)
    parser.add_argument("--trials", type=int, default=1)
    args = parser.parse_args(argv)
    from autolora.errors import UserError

    try:
        return run_worker(args.run_dir, args.parent_run, args.trials)
    except UserError as e:
        print(f"autolora: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
