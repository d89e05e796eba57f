"""``autolora miniworld images|build``: write a miniworld style folder that ``autolora tune --style-images`` reads,
or train the miniworld models from a seed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autolora.atomic import replace_folder
from autolora.errors import UserError, closest
from autolora.miniworld.battery import BATTERY, any_items
from autolora.miniworld.world import STYLES


def register(sub: Any) -> None:
    m = sub.add_parser("miniworld", help="the procedural miniworld (shapes x colours x styles)")
    msub = m.add_subparsers(dest="miniworld_command", required=True)
    mi = msub.add_parser("images", help="write a style folder of miniworld pictures with content captions")
    mi.add_argument(
        "--style",
        required=True,
        help="a miniworld style (plain, striped, dotted, outline, pastel, grain, checker) or one of the "
        "held-out battery that the world never trained on (navy, night, sunset, crosshatch, rings, halftone, "
        "shadow, comic, neon, paper, pinstripe, shaded, mosaic)",
    )
    mi.add_argument("--n", type=int, default=16, help="number of pictures (default 16)")
    mi.add_argument("--out", required=True, type=Path, help="new folder to write")
    mi.add_argument("--seed", type=int, default=0)
    mi.add_argument("--size", type=int, default=32, help="pixels (default 32)")
    mb = msub.add_parser(
        "build",
        help="train the miniworld diffusion model and CLIP judge from a seed",
        description="Train the miniworld VAE, UNet + text encoder and open_clip judge from a seed and write them "
        "as fp16 safetensors with build.json (timings, losses, judge accuracy). The shipped weights are one such "
        "build (autolora/models/weights).",
    )
    mb.add_argument("--out", required=True, type=Path, help="new folder to write")
    mb.add_argument("--seed", type=int, default=0)
    mb.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    mb.add_argument("--scale", type=float, default=1.0, help="multiply every step count (default 1; <1 for a smoke)")
    mb.add_argument(
        "--recipe",
        choices=("general", "narrow"),
        default="general",
        help="general (default, the shipped weights): VAE and judge also on a broad procedural family of flat art, "
        "UNet with offset noise 0.1; narrow: the earlier world, miniworld's pictures only (docs/miniworld.md)",
    )
    mb.add_argument(
        "--noise-offset",
        type=float,
        help="offset noise in the UNet's training, 0-1 (default: the recipe's, 0.1 general, 0 narrow)",
    )
    mb.add_argument(
        "--patterned-share",
        type=float,
        help="share of the UNet's pictures in the broad family's textures, captioned 'in patterned style' (default 0)",
    )
    m.set_defaults(handler=cmd_miniworld)


def cmd_miniworld(args: argparse.Namespace) -> int:
    if args.miniworld_command == "build":
        from autolora.miniworld.build import BuildConfig, build

        knobs = {"noise_offset": args.noise_offset, "patterned_share": args.patterned_share}
        config = BuildConfig.recipe(
            args.recipe,
            seed=args.seed,
            device=args.device,
            scale=args.scale,
            **{k: v for k, v in knobs.items() if v is not None},
        )
        info = build(config, args.out, log=lambda line: print(line, flush=True))
        print(f"wrote {args.out} in {info['wall_s']['total']:.0f} s on {info['device']}")
        return 0
    files = write_style_folder(args.style, args.n, args.out, seed=args.seed, size=args.size)
    print(f"{len(files)} {args.style} pictures in {args.out} (captions in .txt files)")
    return 0


def write_style_folder(style: str, n: int, out: Path, seed: int = 0, size: int = 32) -> list[Path]:
    """Draw ``n`` pictures of ``style`` into ``out`` (PNG + content caption in ``name.txt``), atomically."""

    known = [*STYLES, *BATTERY]
    if style not in known:
        raise UserError(f"miniworld style '{style}': unknown{closest(style, known)}; styles: {', '.join(known)}")
    if n < 1:
        raise UserError(f"--n {n}: expected at least 1 image")
    if size < 8 or size % 8:
        raise UserError(f"--size {size}: expected a multiple of 8, at least 8")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; choose a new folder")
    with replace_folder(out) as tmp:
        for i, (image, shape, colour) in enumerate(any_items(style, n, seed=seed, size=size)):
            image.save(tmp / f"{style}_{i:04d}.png")
            # The caption names the content only: autolora adds the trigger that stands for the style.
            (tmp / f"{style}_{i:04d}.txt").write_text(f"a {colour} {shape}\n")
    return sorted(out.glob("*.png"))
