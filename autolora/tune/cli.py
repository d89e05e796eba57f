"""The ``autolora tune`` subcommand: flags -> ``Config`` -> ``run_tune``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from autolora.config import load_config
from autolora.core.feasible import infeasible_line, refusal
from autolora.core.launch import WorkersFailed
from autolora.core.reading import print_best
from autolora.flags import flag_overrides, override_flags, study_flags
from autolora.tune.job import run_tune

# flag -> (section, key) it overrides in the config (the study flags are in autolora.flags)
TUNE_FLAGS = {
    "base_model": ("model", "base_model"),
    "style_images": ("data", "style_images"),
    "trigger": ("data", "trigger"),
    "identifier": ("data", "identifier"),
    "prompts": ("data", "prompts"),
    "search_space": ("study", "search_space"),
    "crop": ("data", "crop"),
    "objective": ("study", "objective"),
    "warm_start": ("study", "warm_start"),
    "presets": ("study", "presets"),
}


def register(sub: Any) -> None:
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
    t.add_argument(
        "--identifier",
        help="the trigger's rare word, where textual inversion and pivotal tuning write their tokens (default sks)",
    )
    t.add_argument("--prompts", help="text file of content prompts, one per line")
    t.add_argument(
        "--search-space",
        help="built-in name (quick, sd15, sdxl, sd3, flux, diffusers-default, kohya-like) or file "
        "(default quick; sd3 or flux for those models)",
    )
    t.add_argument(
        "--crop",
        choices=("buckets", "center"),
        help="buckets: pictures keep their aspect ratio in equal-area buckets (default); center: the centre square",
    )
    t.add_argument("--objective", help="built-in name (balanced, style-first, pareto) or file")
    t.add_argument(
        "--warm-start",
        metavar="RUN_DIR_OR_STUDY",
        help="a new study's first trials are the best configurations of this earlier study (same base model)",
    )
    t.add_argument(
        "--presets",
        help="a new study's first trials: auto (diffusers-default and kohya-like for UNets), none, or NAME,NAME",
    )
    study_flags(t, "trials to run now (default 10)", "the style folder's name")
    t.add_argument("--seed", type=int, help="seed of the sampler and of training")
    t.add_argument(
        "--register-model", metavar="NAME", help="register the best adapter in the MLflow Model Registry as NAME"
    )
    override_flags(t)
    t.set_defaults(handler=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    overrides = flag_overrides(args, TUNE_FLAGS)
    if args.seed is not None:
        overrides[:0] = [("train", "seed", args.seed), ("study", "seed", args.seed)]
    config = load_config(args.config, overrides)
    if args.register_model is not None:
        from autolora.report.registry import check_model_name

        check_model_name(args.register_model)

    try:
        result = run_tune(config, progress=not args.no_progress)
    except WorkersFailed as e:
        print(f"autolora: {e}", file=sys.stderr)
        return 1
    print(f"{result.n_new} new trials; study now has {len(result.study.trials)}.")
    print_best(result.study)
    warnings = result.study.user_attrs.get("autolora.warnings", [])
    if warnings:
        print(f"Mind the {len(warnings)} data warning(s) at setup, first: {warnings[0]}")
    for line in result.lines:
        print(line)

    nothing = refusal(result.study) is not None
    if args.register_model is not None and nothing:
        why = "no trial is feasible" if infeasible_line(result.study) else "the best learnt no measurable style"
        print(f"not registered as {args.register_model}: {why}")
    elif args.register_model is not None:
        from autolora.report.registry import register_best

        name, version, uri = register_best(result.study, result.run_dir, args.register_model)
        print(f"registered {name} version {version}: load it with mlflow.pyfunc.load_model('{uri}')")
    print(f"Open the dashboard: {result.mlflow_ui}")
    export = f"autolora export {result.run_dir} --out {result.run_dir / 'export'}"
    print(f"Export anyway (not advised): {export} --force" if nothing else f"Export the best adapter: {export}")
    return 0
