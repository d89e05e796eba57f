"""The ``autolora fuse`` subcommand: flags -> ``FuseRunConfig`` -> ``run_fuse``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# flag -> (section, key) it overrides in the config
FUSE_FLAGS = {
    "base_model": ("model", "base_model"),
    "prompts": ("data", "prompts"),
    "trigger": ("data", "trigger"),
    "granularity": ("fuse", "granularity"),
    "schedule": ("fuse", "schedule"),
    "objective": ("fuse", "objective"),
    "sampler": ("fuse", "sampler"),
    "trials": ("study", "trials"),
    "timeout": ("study", "timeout"),
    "study_name": ("study", "name"),
    "out": ("study", "out"),
    "storage": ("study", "storage"),
    "mlflow_uri": ("study", "mlflow_uri"),
    "device": ("model", "device"),
    "seed": ("study", "seed"),
}


def add_fuse_parser(sub: Any) -> None:
    from autolora.cli import override_flags, study_flags

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
    override_flags(f)


def cmd_fuse(args: argparse.Namespace) -> int:
    from autolora.cli import flag_overrides
    from autolora.config import load_config, parse_override
    from autolora.fusion.config import FuseRunConfig

    overrides = flag_overrides(args, FUSE_FLAGS)
    if args.lora:
        overrides.append(("fuse", "loras", list(args.lora)))
    if args.style_images_for:
        overrides.append(("fuse", "style_images", list(args.style_images_for)))
    if args.no_baseline:
        overrides.append(("fuse", "baseline", False))
    overrides += [parse_override(s) for s in args.set]
    config = load_config(args.config, overrides, FuseRunConfig)
    from autolora.fusion.study import run_fuse

    result = run_fuse(config, progress=not args.no_progress)
    print("\n".join(["summary:", *result.lines]))
    print(f"Open the dashboard: {result.mlflow_ui}")
    print(f"Export the best fusion: autolora export {result.run_dir} --out {result.run_dir / 'export'}")
    return 0
