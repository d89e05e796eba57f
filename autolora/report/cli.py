"""``autolora report`` (the HTML study report) and ``autolora dashboard`` (optuna-dashboard on the study)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autolora.core.reading import find_study
from autolora.core.study import ATTR
from autolora.errors import UserError
from autolora.flags import study_args
from autolora.jobs import job_class, kind_of
from autolora.report.dashboard import serve
from autolora.report.html import write_report


def register(sub: Any) -> None:
    r = sub.add_parser(
        "report",
        help="write a study's HTML report (one self-contained file)",
        description="One HTML file with every picture inline: data diagnostics, trial table, optimisation "
        "history, Pareto front or best trial, parameter importances, and the top trials' samples beside the "
        "base model's (fusion runs: DLF against linear and the coefficient heatmap). Also logged to the "
        "study's MLflow parent run.",
    )
    study_args(r)
    r.add_argument("--out", type=Path, help="file to write (default RUN_DIR/report.html)")
    r.set_defaults(handler=cmd_report)

    d = sub.add_parser(
        "dashboard",
        help="start optuna-dashboard on a study's storage (pip install 'autolora[dashboard]')",
        description="Serve optuna-dashboard on the study's storage with its sample grids (the run folder's "
        "Optuna artifact store). Stop it with Ctrl-C.",
    )
    study_args(d)
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    d.set_defaults(handler=cmd_dashboard)


def cmd_report(args: argparse.Namespace) -> int:
    study, run_dir = find_study(args.run_dir, args.storage, args.study_name)
    out = args.out or (run_dir / "report.html" if run_dir else None)
    if out is None:
        raise UserError("--out: needed when the study records no run folder")
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; give a file name such as {out / 'report.html'}")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    path = write_report(study, run_dir, job_class(kind_of(study)), out)
    logged = _log_to_parent(study, path)
    print(f"report: {path}" + (f" (logged to MLflow run {logged})" if logged else ""))
    return 0


def _log_to_parent(study: Any, path: Path) -> str | None:
    """Log the report to the study's MLflow parent run when its tracking store is reachable; returns the run id."""

    uri, run_id = study.user_attrs.get(ATTR + "mlflow_uri"), study.user_attrs.get(ATTR + "mlflow_parent_run_id")
    if not uri or not run_id:
        return None
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).log_artifact(run_id, str(path))
    except Exception:  # the file is written; MLflow being elsewhere or gone is not the user's error here
        return None
    return str(run_id)


def cmd_dashboard(args: argparse.Namespace) -> int:
    return serve(args.run_dir, args.storage, args.study_name, args.host, args.port)
