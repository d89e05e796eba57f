"""The ``autolora fuse`` subcommand: flags -> ``FuseRunConfig`` -> ``run_fuse``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from autolora.config import load_config
from autolora.core.feasible import noise_line, refusal
from autolora.core.launch import WorkersFailed
from autolora.flags import flag_overrides, override_flags, study_flags
from autolora.fuse.config import FuseRunConfig
from autolora.fuse.job import run_fuse

# flag -> (section, key) it overrides in the config (the study flags are in autolora.flags)
FUSE_FLAGS = {
    "base_model": ("model", "base_model"),
    "prompts": ("data", "prompts"),
    "trigger": ("data", "trigger"),
    "granularity": ("fuse", "granularity"),
    "schedule": ("fuse", "schedule"),
    "objective": ("fuse", "objective"),
    "sampler": ("fuse", "sampler"),
    "seed": ("study", "seed"),
}


def register(sub: Any) -> None:
    f = sub.add_parser(
        "fuse",
        help="find the best per-layer mix of several style LoRAs (Dynamic Layer-wise Fusion)",
        description="Load the base model and every LoRA once, then search per-group coefficients with Optuna; "
        "each trial samples the fixed prompts and is scored against every style. A linear-fusion baseline "
        "with the same budget runs too. Flags override CONFIG.",
    )
    f.add_argument("config", nargs="?", type=Path, help="YAML or TOML config file")
    f.add_argument("--lora", action="append", default=[], metavar="[NAME=]FILE", help="a LoRA file (repeat)")
    f.add_argument("--base-model", help="diffusers folder, hub id or builtin:NAME (default: the embedded model)")
    f.add_argument(
        "--style-images-for", action="append", default=[], metavar="NAME=DIR", help="style references of a LoRA"
    )
    f.add_argument("--prompts", help="text file of content prompts, one per line")
    f.add_argument("--trigger", help='words added to every prompt (default "in sks style")')
    f.add_argument("--granularity", help="global, block (default) or layer")
    f.add_argument("--schedule", help="constant (default) or two-phase")
    f.add_argument("--objective", help="fuse-balanced (default), fuse-pareto or a file")
    f.add_argument("--sampler", help="auto (default: cmaes, or tpe for Pareto), cmaes, tpe, gp, random, qmc")
    study_flags(f, "trials per study (default 10)", "fuse-<lora names>")
    f.add_argument("--seed", type=int, help="sampler seed")
    f.add_argument("--no-baseline", action="store_true", help="skip the linear-fusion baseline study")
    f.add_argument(
        "--register-model", metavar="NAME", help="register the best fused LoRA in the MLflow Model Registry as NAME"
    )
    override_flags(f)
    f.set_defaults(handler=cmd_fuse)


def cmd_fuse(args: argparse.Namespace) -> int:
    overrides: list[tuple[str, str, Any]] = []
    if args.lora:
        overrides.append(("fuse", "loras", list(args.lora)))
    if args.style_images_for:
        overrides.append(("fuse", "style_images", list(args.style_images_for)))
    if args.no_baseline:
        overrides.append(("fuse", "baseline", False))
    config = load_config(args.config, overrides + flag_overrides(args, FUSE_FLAGS), FuseRunConfig)
    if args.register_model is not None:
        from autolora.report.registry import check_model_name

        check_model_name(args.register_model)

    try:
        result = run_fuse(config, progress=not args.no_progress)
    except WorkersFailed as e:
        print(f"autolora: {e}", file=sys.stderr)
        return 1
    print("\n".join(["summary:", *result.lines]))

    refused = refusal(result.study)
    noise = noise_line(result.study)
    if noise:
        print(f"{noise}: `autolora export --force` exports it anyway")
    if args.register_model is not None and refused:
        print(f"not registered as {args.register_model}: {refused}")
    elif args.register_model is not None:
        from autolora.report.registry import register_best

        name, version, uri = register_best(result.study, result.run_dir, args.register_model)
        print(f"registered {name} version {version}: load it with mlflow.pyfunc.load_model('{uri}')")
    print(f"Open the dashboard: {result.mlflow_ui}")
    export = f"autolora export {result.run_dir} --out {result.run_dir / 'export'}"
    print(f"Export anyway (not advised): {export} --force" if refused else f"Export the best fusion: {export}")
    return 0
