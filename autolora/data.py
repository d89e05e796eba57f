"""Style folders and prompt files: validated before any model loads.

A style folder holds images (png/jpg/jpeg/webp/bmp) and, optionally, one caption per image in
``name.txt`` describing the content (the trigger is added by autolora). The built-in style set
(miniworld's held-out dotted style, circles and squares only) and prompts (triangles and stars) belong to
the built-in model; the pictures are drawn procedurally on first use.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autolora.errors import UserError
from autolora.miniworld.world import draw
from autolora.models.builtin import build_once, cache_root
from autolora.textfiles import read_text

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_EXTS = (".txt",)

BUILTIN_PROMPTS = ["a purple star", "a orange triangle", "a red triangle", "a blue star"]


@dataclass
class StyleSet:
    """The validated style images (RGB) with their content captions (may be empty)."""

    folder: Path
    images: list[Image.Image]
    captions: list[str]
    names: list[str]

    def fingerprint(self) -> str:
        """A hash of the pixels and captions: cache keys change when the data changes."""
        h = hashlib.sha256()
        for img, cap in zip(self.images, self.captions, strict=True):
            h.update(img.tobytes())
            h.update(cap.encode())
        return h.hexdigest()[:16]


def load_style_set(folder: Path) -> StyleSet:
    """Read and fully decode every image in ``folder``; any bad file is named in one line."""
    from PIL import Image

    if not folder.is_dir():
        raise UserError(f"style images {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images, captions, names = [], [], []
    for path in files:
        suffix = path.suffix.lower()
        if suffix in CAPTION_EXTS:
            if not any(path.with_suffix(e).exists() or path.with_suffix(e.upper()).exists() for e in IMAGE_EXTS):
                raise UserError(f"style images {folder}: caption {path.name} has no image beside it")
            continue
        if suffix not in IMAGE_EXTS:
            raise UserError(
                f"style images {folder}: {path.name} is not an image "
                f"(expected {', '.join(IMAGE_EXTS)} and .txt captions)"
            )
        try:
            with Image.open(path) as img:
                img.load()
                images.append(img.convert("RGB"))
        except Exception as e:
            raise UserError(
                f"style images {folder}: {path.name} is not a readable image ({type(e).__name__})"
            ) from None
        caption_file = path.with_suffix(".txt")
        captions.append(read_text(caption_file, "caption").strip() if caption_file.exists() else "")
        names.append(path.name)
    if not images:
        raise UserError(f"style images {folder}: the folder has no images")
    return StyleSet(folder=folder, images=images, captions=captions, names=names)


def load_prompts(path: Path) -> list[str]:
    """One content prompt per line; blank lines and ``#`` comments are skipped."""
    if not path.is_file():
        raise UserError(f"prompts file {path}: no such file")
    lines = read_text(path, "prompts file").splitlines()
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not prompts:
        raise UserError(f"prompts file {path}: no prompts (one per line; # starts a comment)")
    return prompts


# -- the built-in style set -----------------------------------------------------------------------

BUILTIN_STYLE = "dotted"
"""A miniworld style the base model never saw (``HELD_OUT_STYLES``) whose texture the world's VAE keeps (its round
trip reads 0.87 of a drawn reference's dots; checker's 4-px cells only 0.42, so no LoRA could show them)."""
BUILTIN_STYLE_CONTENT = [(s, c) for s in ("circle", "square") for c in ("red", "green", "blue", "yellow")]
"""What the built-in style pictures show; ``BUILTIN_PROMPTS`` ask for shapes and colours they never show."""


def builtin_style_folder(style: str = "") -> Path:
    """16 miniworld pictures of ``BUILTIN_STYLE`` (or ``style``), with content captions, drawn once into the cache.

    They show ``BUILTIN_STYLE_CONTENT`` only, so that ``BUILTIN_PROMPTS`` ask for what no style picture shows."""

    style = style or BUILTIN_STYLE

    def write(tmp: Path) -> None:
        rng = random.Random(0)
        for i in range(16):
            shape, colour = BUILTIN_STYLE_CONTENT[i % len(BUILTIN_STYLE_CONTENT)]
            image, item = draw(shape, colour, style, rng)
            image.save(tmp / f"{style}_{i:02d}.png")
            (tmp / f"{style}_{i:02d}.txt").write_text(f"a {item.colour} {item.shape}\n")

    return build_once(cache_root() / "styles" / f"miniworld-{style}-v2", write)
