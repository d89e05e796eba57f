"""The ``autolora`` command: parse flags -> config -> library call. Bad input: one line, exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from autolora import __version__
from autolora.errors import UserError

# flag -> (section, key) it overrides in the config
TUNE_FLAGS = {
    "base_model": ("model", "base_model"),
    "style_images": ("data", "style_images"),
    "trigger": ("data", "trigger"),
    "prompts": ("data", "prompts"),
    "search_space": ("study", "search_space"),
    "objective": ("study", "objective"),
    "trials": ("study", "trials"),
    "timeout": ("study", "timeout"),
    "study_name": ("study", "name"),
    "out": ("study", "out"),
    "storage": ("study", "storage"),
    "mlflow_uri": ("study", "mlflow_uri"),
    "device": ("model", "device"),
}


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", type=Path, help="run folder of a study (holds config.yaml)")
    p.add_argument("--storage", help="Optuna storage URL (instead of RUN_DIR)")
    p.add_argument("--study-name", help="study name in --storage")


def study_flags(p: argparse.ArgumentParser, trials_help: str, default_name: str) -> None:
    """The flags of where a study lives and how long it runs (``tune`` and ``fuse``)."""
    p.add_argument("--trials", type=int, help=trials_help)
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--study-name", help=f"study name (default: {default_name})")
    p.add_argument("--out", help="run folder (default runs/<study-name>)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///<out>/optuna.db)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default MLFLOW_TRACKING_URI, else MLflow's)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")


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
    """(section, key, value) for every flag of ``table`` given on the command line."""
    return [
        (section, key, getattr(args, flag)) for flag, (section, key) in table.items() if getattr(args, flag) is not None
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autolora", description="Find the best LoRA for an artistic style.")
    parser.add_argument("--version", action="version", version=f"autolora {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "tune",
        help="run (or resume) a LoRA hyperparameter study",
        description="Run or resume an Optuna study over LoRA settings; each trial trains briefly, "
        "samples fixed prompts and is scored with CLIP. Flags override CONFIG.",
    )
    t.add_argument("config", nargs="?", type=Path, help="YAML or TOML config file")
    t.add_argument("--base-model", help="diffusers folder, hub id or builtin:NAME (default builtin:miniworld)")
    t.add_argument("--style-images", help="folder of style images (default: the built-in style set)")
    t.add_argument("--trigger", help='words that call the style (default "in sks style")')
    t.add_argument("--prompts", help="text file of content prompts, one per line")
    t.add_argument("--search-space", help="built-in name (quick, sd15, sdxl, diffusers-default, kohya-like) or file")
    t.add_argument("--objective", help="built-in name (balanced, style-first, pareto) or file")
    study_flags(t, "trials to run now (default 10)", "the style folder's name")
    t.add_argument("--seed", type=int, help="seed of the sampler and of training")
    t.add_argument("--process-per-trial", action="store_true", default=None, help="run each trial in a new process")
    t.add_argument("--workers", type=int, help="local worker processes sharing the study (default 0: in-process)")
    t.add_argument(
        "--queue-only",
        action="store_true",
        default=None,
        help="create the study and queue --trials trials for 'autolora worker' processes",
    )
    t.add_argument("--devices", help="comma-separated devices for the workers, e.g. cuda:0,cuda:1")
    override_flags(t)

    w = sub.add_parser(
        "worker",
        help="join a study through its storage and run its trials",
        description="Join a study made by 'autolora tune' (its config is stored with it) and run "
        "trials until its budget is spent, or --trials of them.",
    )
    w.add_argument("--storage", required=True, help="Optuna storage URL of the study")
    w.add_argument("--study-name", required=True, help="study name")
    w.add_argument("--trials", type=int, help="at most this many trials from this worker")
    w.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    w.add_argument("--device", help="device for this worker (default: the study's model.device)")
    w.add_argument("--mlflow-uri", help="MLflow tracking URI (default: the one the study was made with)")
    w.add_argument("--parent-run", help=argparse.SUPPRESS)
    w.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)

    m = sub.add_parser("miniworld", help="the procedural miniworld (shapes x colours x styles)")
    msub = m.add_subparsers(dest="miniworld_command", required=True)
    mi = msub.add_parser("images", help="write a style folder of miniworld pictures with content captions")
    mi.add_argument("--style", required=True, help="plain, striped, dotted, outline, pastel, grain or checker")
    mi.add_argument("--n", type=int, default=16, help="number of pictures (default 16)")
    mi.add_argument("--out", required=True, type=Path, help="new folder to write")
    mi.add_argument("--seed", type=int, default=0)
    mi.add_argument("--size", type=int, default=32, help="pixels (default 32)")
    mb = msub.add_parser(
        "build",
        help="train the miniworld diffusion model and CLIP judge from a seed",
        description="Train the miniworld VAE, UNet + text encoder and open_clip judge from a seed and write them "
        "as fp16 safetensors with build.json (timings, losses, judge accuracy). The shipped weights are one such "
        "build (autolora/miniworld/weights).",
    )
    mb.add_argument("--out", required=True, type=Path, help="new folder to write")
    mb.add_argument("--seed", type=int, default=0)
    mb.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    mb.add_argument("--scale", type=float, default=1.0, help="multiply every step count (default 1; <1 for a smoke)")

    from autolora.fusion.cli import add_fuse_parser

    add_fuse_parser(sub)

    s = sub.add_parser("show", help="trial table and best trial (or Pareto set) of a study")
    _study_args(s)

    e = sub.add_parser("export", help="write a kept adapter as diffusers and kohya .safetensors")
    _study_args(e)
    e.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    e.add_argument("--out", required=True, type=Path, help="folder to write the files into")
    e.add_argument("--name", help="file stem of the kohya file (default <study>-trial<N>)")
    e.add_argument("--rank", type=int, help="fusion runs: also write an SVD rank-R version (prints its error)")
    return parser


def cmd_tune(args: argparse.Namespace) -> int:
    from autolora.config import load_config, parse_override

    overrides = flag_overrides(args, TUNE_FLAGS)
    if args.seed is not None:
        overrides += [("train", "seed", args.seed), ("study", "seed", args.seed)]
    if args.process_per_trial:
        overrides.append(("study", "process_per_trial", True))
    if args.queue_only:
        overrides.append(("study", "queue_only", True))
    if args.workers is not None:
        overrides.append(("study", "workers", args.workers))
    if args.devices:
        overrides.append(("study", "devices", [d.strip() for d in args.devices.split(",") if d.strip()]))
    overrides += [parse_override(s) for s in args.set]
    config = load_config(args.config, overrides)
    from autolora.launch import WorkersFailed
    from autolora.study import run_tune

    try:
        result = run_tune(config, progress=not args.no_progress)
    except WorkersFailed as e:
        print(f"autolora: {e}", file=sys.stderr)
        return 1
    print(f"{result.n_new} new trials; study now has {len(result.study.trials)}.")
    from autolora.report import print_best

    print_best(result.study)
    print(f"Open the dashboard: {result.mlflow_ui}")
    print(f"Export the best adapter: autolora export {result.run_dir} --out {result.run_dir / 'export'}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from autolora.worker import StorageLost, run_worker

    try:
        n = run_worker(
            args.storage,
            args.study_name,
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


def cmd_fuse(args: argparse.Namespace) -> int:
    from autolora.fusion.cli import cmd_fuse as run

    return run(args)


def cmd_miniworld(args: argparse.Namespace) -> int:
    from autolora.miniworld.cli import write_style_folder

    if args.miniworld_command == "build":
        from autolora.miniworld.build import BuildConfig, build

        config = BuildConfig(seed=args.seed, device=args.device, scale=args.scale)
        info = build(config, args.out, log=lambda line: print(line, flush=True))
        print(f"wrote {args.out} in {info['wall_s']['total']:.0f} s on {info['device']}")
        return 0
    files = write_style_folder(args.style, args.n, args.out, seed=args.seed, size=args.size)
    print(f"{len(files)} {args.style} pictures in {args.out} (captions in .txt files)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from autolora.fusion.exporting import is_fusion_run, show_run
    from autolora.report import find_study, print_table

    if is_fusion_run(args.run_dir):
        show_run(args.run_dir)
        return 0
    study, run_dir = find_study(args.run_dir, args.storage, args.study_name)
    print_table(study, run_dir)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autolora.fusion.exporting import export_run, is_fusion_run
    from autolora.report import export_trial, find_study

    if is_fusion_run(args.run_dir):
        paths = export_run(args.run_dir, args.trial, args.out, args.name, args.rank)
    elif args.rank is not None:
        raise UserError("--rank: rank reduction applies to fusion runs (autolora fuse)")
    else:
        study, run_dir = find_study(args.run_dir, args.storage, args.study_name)
        paths = export_trial(study, run_dir, args.trial, args.out, args.name)
    for kind, path in paths.items():
        print(f"{kind:9s} {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "tune": cmd_tune,
        "worker": cmd_worker,
        "miniworld": cmd_miniworld,
        "fuse": cmd_fuse,
        "show": cmd_show,
        "export": cmd_export,
    }[args.command]
    try:
        return handler(args)
    except UserError as e:
        print(f"autolora: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nautolora: interrupted; the study is saved, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
