"""The ``autolora`` command: subcommands register themselves; flags -> config -> the job. Bad input: one line, exit 2.

``tune`` (``autolora.tune.cli``), ``fuse`` (``autolora.fuse.cli``) and ``miniworld`` (``autolora.miniworld.cli``)
add their own parsers; ``worker``, ``show`` and ``export`` are the study core's and serve every job, found by
the kind each study records (``autolora.jobs``). Registering imports only argparse code: ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from autolora import __version__
from autolora.core.reading import find_study
from autolora.core.worker import StorageLost, run_worker
from autolora.errors import UserError
from autolora.flags import study_args
from autolora.jobs import job_class, kind_of

COMMANDS = (
    "autolora.tune.cli",
    "autolora.fuse.cli",
    "autolora.explain.cli",
    "autolora.miniworld.cli",
    "autolora.report.cli",
)
"""Modules with a ``register(subparsers)`` that adds their subcommand (with ``handler`` set as its default)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autolora", description="Find the best LoRA for an artistic style.")
    parser.add_argument("--version", action="version", version=f"autolora {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    importlib.import_module(COMMANDS[0]).register(sub)

    w = sub.add_parser(
        "worker",
        help="join a study through its storage and run its trials",
        description="Join a study made by 'autolora tune' or 'autolora fuse' (its config is stored with it) and "
        "run trials until its budget is spent, or --trials of them. A fusion run's worker works all its "
        "studies in their order (baselines, linear, DLF), whichever of them is named.",
    )
    w.add_argument("--storage", required=True, help="Optuna storage URL of the study")
    w.add_argument("--study-name", required=True, help="study name")
    w.add_argument("--trials", type=int, help="at most this many trials from this worker")
    w.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    w.add_argument("--device", help="device for this worker (default: the study's model.device)")
    w.add_argument("--mlflow-uri", help="MLflow tracking URI (default: the one the study was made with)")
    w.add_argument("--parent-run", help=argparse.SUPPRESS)
    w.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    w.set_defaults(handler=cmd_worker)

    for module in COMMANDS[1:]:
        importlib.import_module(module).register(sub)

    s = sub.add_parser("show", help="trial table and best trial (or Pareto set) of a study")
    study_args(s)
    s.set_defaults(handler=cmd_show)

    e = sub.add_parser("export", help="write a kept adapter as diffusers and kohya .safetensors")
    study_args(e)
    e.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    e.add_argument("--out", required=True, type=Path, help="folder to write the files into")
    e.add_argument("--name", help="file stem of the kohya file (default <study>-trial<N>)")
    e.add_argument("--rank", type=int, help="fusion runs: also write an SVD rank-R version (prints its error)")
    e.add_argument(
        "--top-rated", action="store_true", help="export the trial you rated highest in 'autolora dashboard'"
    )
    e.add_argument(
        "--force",
        action="store_true",
        help="export even an infeasible trial (it broke the recipe's constraints) or a best with no measurable style",
    )
    e.add_argument("--register-model", metavar="NAME", help="also register it in the MLflow Model Registry as NAME")
    e.add_argument("--mlflow-uri", help="MLflow tracking URI for --register-model (default: the study's)")
    e.set_defaults(handler=cmd_export)
    return parser


def cmd_worker(args: argparse.Namespace) -> int:
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials {args.trials}: expected at least 1")
    try:
        n = run_worker(
            args.storage,
            args.study_name,
            job_class,
            trials=args.trials,
            device=args.device,
            timeout=args.timeout,
            mlflow_uri=args.mlflow_uri,
            parent_run_id=args.parent_run,
            worker_index=args.worker_index,
            echo=lambda s: print(s, flush=True),
        )
    except StorageLost as e:
        print(f"autolora: error: {e}", file=sys.stderr)
        return 3
    print(f"worker: {n} trials finished", flush=True)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    study, run_dir = find_study(args.run_dir, args.storage, args.study_name)
    job_class(kind_of(study)).show(study, run_dir)
    _show_ratings(study)
    return 0


def _show_ratings(study: object) -> None:
    """The ratings people gave in ``autolora dashboard`` (trial notes), when there are any."""
    try:
        from autolora.report.dashboard import ratings

        rated = ratings(study)  # type: ignore[arg-type]
    except UserError:  # optuna-dashboard is not installed: nobody rated with it here
        return
    if rated:
        best = sorted(rated.items(), key=lambda kv: (-kv[1], kv[0]))
        print("rated in the dashboard: " + ", ".join(f"trial {n} {r:g}" for n, r in best))


def cmd_export(args: argparse.Namespace) -> int:
    if args.rank is not None and args.rank < 1:
        raise UserError(f"--rank {args.rank}: expected at least 1")
    if args.top_rated and args.trial is not None:
        raise UserError("--top-rated and --trial: choose one")
    if args.register_model is not None:
        from autolora.report.registry import check_model_name

        check_model_name(args.register_model)
    study, run_dir = find_study(args.run_dir, args.storage, args.study_name)
    if args.top_rated:
        from autolora.report.dashboard import top_rated

        args.trial = top_rated(study)
    job = job_class(kind_of(study))
    paths = job.export(study, run_dir, args.trial, args.out, args.name, args.rank, force=args.force)
    for kind, path in paths.items():
        print(f"{kind:9s} {path}")
    if args.register_model is not None:
        from autolora.report.registry import register_export

        name, version, uri = register_export(paths, args.register_model, study, args.mlflow_uri)
        print(f"registered {name} version {version}: load it with mlflow.pyfunc.load_model('{uri}')")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except UserError as e:
        print(f"autolora: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nautolora: interrupted; the study is saved, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
