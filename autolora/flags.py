"""Flags shared by the subcommands that run a study (``tune``, ``fuse``), and how they become config overrides."""

from __future__ import annotations

import argparse
from typing import Any

from autolora.config import parse_override

# flag -> (section, key) it overrides in the config, for every job
STUDY_FLAGS = {
    "trials": ("study", "trials"),
    "timeout": ("study", "timeout"),
    "study_name": ("study", "name"),
    "out": ("study", "out"),
    "storage": ("study", "storage"),
    "mlflow_uri": ("study", "mlflow_uri"),
    "device": ("model", "device"),
    "workers": ("study", "workers"),
    "strict": ("data", "strict"),
}


def study_flags(p: argparse.ArgumentParser, trials_help: str, default_name: str) -> None:
    """The flags of where a study lives, how long it runs and who runs its trials."""
    p.add_argument("--trials", type=int, help=trials_help)
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--study-name", help=f"study name (default: {default_name})")
    p.add_argument("--out", help="run folder (default runs/<study-name>)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///<out>/optuna.db)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default MLFLOW_TRACKING_URI, else MLflow's)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, help="local worker processes sharing the study (default 0: in-process)")
    p.add_argument("--devices", help="comma-separated devices for the workers, e.g. cuda:0,cuda:1")
    p.add_argument("--process-per-trial", action="store_true", default=None, help="run each trial in a new process")
    p.add_argument(
        "--queue-only",
        action="store_true",
        default=None,
        help="create the study and queue --trials trials for 'autolora worker' processes",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="stop before the first trial if a data diagnostic warns (default: warn and run)",
    )


def study_args(p: argparse.ArgumentParser) -> None:
    """RUN_DIR or --storage + --study-name: how show, export, report and dashboard find a study."""
    from pathlib import Path

    p.add_argument("run_dir", nargs="?", type=Path, help="run folder of a study (holds config.yaml)")
    p.add_argument("--storage", help="Optuna storage URL (instead of RUN_DIR)")
    p.add_argument("--study-name", help="study name in --storage")


def override_flags(p: argparse.ArgumentParser) -> None:
    """``--set`` and ``--no-progress``."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config entry, e.g. --set train.eval_every=10 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")


def flag_overrides(args: argparse.Namespace, table: dict[str, tuple[str, str]]) -> list[tuple[str, str, Any]]:
    """(section, key, value) for every flag of ``table`` and of ``STUDY_FLAGS`` given on the command line,
    then the ``--set`` entries (which win)."""

    out = [
        (section, key, getattr(args, flag))
        for flag, (section, key) in {**STUDY_FLAGS, **table}.items()
        if getattr(args, flag, None) is not None
    ]
    if args.process_per_trial:
        out.append(("study", "process_per_trial", True))
    if args.queue_only:
        out.append(("study", "queue_only", True))
    if args.devices:
        out.append(("study", "devices", [d.strip() for d in args.devices.split(",") if d.strip()]))
    return out + [parse_override(s) for s in args.set]
