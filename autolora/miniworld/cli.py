"""``autolora miniworld images``: write a miniworld style folder that ``autolora tune --style-images`` reads."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from autolora.errors import UserError, closest


def write_style_folder(style: str, n: int, out: Path, seed: int = 0, size: int = 32) -> list[Path]:
    """Draw ``n`` pictures of ``style`` into ``out`` (PNG + content caption in ``name.txt``), atomically."""
    from autolora.miniworld.world import STYLES, sample_items

    if style not in STYLES:
        raise UserError(f"miniworld style '{style}': unknown{closest(style, STYLES)}; styles: {', '.join(STYLES)}")
    if n < 1:
        raise UserError(f"--n {n}: expected at least 1 image")
    if size < 8 or size % 8:
        raise UserError(f"--size {size}: expected a multiple of 8, at least 8")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for i, (image, item) in enumerate(sample_items(n, style=style, seed=seed, size=size)):
            image.save(tmp / f"{style}_{i:04d}.png")
            # The caption names the content only: autolora adds the trigger that stands for the style.
            (tmp / f"{style}_{i:04d}.txt").write_text(f"a {item.colour} {item.shape}\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(out.glob("*.png"))
