"""The ``autolora explain`` subcommand: flags -> ``ExplainRunConfig`` -> ``run_explain``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autolora.config import load_config, parse_override
from autolora.errors import UserError
from autolora.explain.config import ExplainRunConfig
from autolora.explain.job import run_explain

EXPLAIN_FLAGS = {
    "base_model": ("model", "base_model"),
    "style_images": ("data", "style_images"),
    "prompts": ("data", "prompts"),
    "trigger": ("data", "trigger"),
    "granularity": ("explain", "granularity"),
    "rank": ("explain", "rank"),
    "objective": ("study", "objective"),
    "out": ("study", "out"),
    "mlflow_uri": ("study", "mlflow_uri"),
    "device": ("model", "device"),
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="where a LoRA's style lives, block by block, what each block costs the subject, and a smaller LoRA",
        description="Load the base model and the LoRA once; sample the fixed prompts with each block (or layer "
        "group) alone and with all but it, and score the samples with the study's judge: the style each group "
        "carries and the content it costs, with a spread over seeds. Also each layer's singular values (the rank "
        "the LoRA uses). --prune writes a smaller LoRA, checked by sampling first.",
    )
    p.add_argument("lora", type=Path, help="the LoRA file (diffusers/PEFT or kohya/A1111/ComfyUI .safetensors)")
    p.add_argument("--config", type=Path, help="YAML or TOML config file (flags override it)")
    p.add_argument("--base-model", help="diffusers folder, hub id or builtin:NAME (default: the embedded model)")
    p.add_argument("--style-images", help="the style's pictures (default: the LoRA's own samples on other seeds)")
    p.add_argument("--prompts", help="text file of content prompts, one per line")
    p.add_argument("--trigger", help='words added to every prompt (default "in sks style")')
    p.add_argument("--granularity", help="block (default) or layer")
    p.add_argument("--prune", action="store_true", help="also write a smaller LoRA (checked by sampling first)")
    p.add_argument("--rank", help="the pruned LoRA's ranks: auto (default: 99 %% of each layer's delta) or full")
    p.add_argument("--objective", help="the recipe whose style term and content floors are read (default balanced)")
    p.add_argument("--seeds", help="comma-separated sampling seeds (default 0,1)")
    p.add_argument("--out", help="folder to write into (default runs/explain-<lora stem>)")
    p.add_argument("--mlflow-uri", help="also log the map to this MLflow store (default MLFLOW_TRACKING_URI, if set)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override any config entry")
    p.set_defaults(handler=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    overrides: list[tuple[str, str, Any]] = [("explain", "lora", str(args.lora))]
    overrides += [(s, k, getattr(args, f)) for f, (s, k) in EXPLAIN_FLAGS.items() if getattr(args, f) is not None]
    if args.prune:
        overrides.append(("explain", "prune", True))
    if args.seeds is not None:
        try:
            overrides.append(("eval", "seeds", [int(s) for s in args.seeds.split(",")]))
        except ValueError:
            raise UserError(f"--seeds {args.seeds}: expected comma-separated integers, e.g. 0,1,2") from None
    overrides += [parse_override(text) for text in args.set]
    config = load_config(args.config, overrides, ExplainRunConfig)
    result = run_explain(config, echo=lambda s: print(s, flush=True))
    print("\n".join(["summary:", *result.lines]))
    return 0
