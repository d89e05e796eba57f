"""A battery of styles outside miniworld's vocabulary: can the world represent and judge what nobody planned?

Each style paints miniworld content (a vocabulary shape in a vocabulary colour) in a way the UNet never trains
on: no caption names it and no training picture of the diffusion model shows it. The VAE and the judge train on
the broad procedural family (``procedural``), which covers some of these looks in general form (dark grounds,
gradients, hatching at random periods) but never these settings; ``shadow``, ``neon``, ``halftone``,
``mosaic`` and ``shaded`` are outside that family altogether. ``benchmarks/miniworld_battery.py`` reports the
VAE round trip and the judge's zero-shot shape and colour accuracy on each, beside plain.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autolora.miniworld.world import BACKGROUND, COLOURS, SHAPES, STYLES, _outline, draw, sample_items

if TYPE_CHECKING:
    from PIL import Image

RGB = tuple[int, int, int]
Painter = Callable[[Any, Any, RGB, random.Random, int], Any]
"""(silhouette mask (H, W) in [0, 1], outline points, colour, rng, size) -> (H, W, 3) float image."""


def _np() -> Any:
    import numpy as np

    return np


def _flat(size: int, rgb: RGB) -> Any:
    np = _np()
    return np.broadcast_to(np.array(rgb, np.float32), (size, size, 3)).copy()


def _over(bg: Any, fg: Any, mask: Any) -> Any:
    return bg * (1 - mask[..., None]) + fg * mask[..., None]


def _grid(size: int) -> tuple[Any, Any]:
    np = _np()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _lighter(rgb: RGB, t: float) -> RGB:
    return (round(rgb[0] + (255 - rgb[0]) * t), round(rgb[1] + (255 - rgb[1]) * t), round(rgb[2] + (255 - rgb[2]) * t))


def _on(ground: RGB) -> Painter:
    def paint(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
        return _over(_flat(size, ground), _flat(size, rgb), mask)

    return paint


def _sunset(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
    np = _np()
    yy, _ = _grid(size)
    t = (yy / (size - 1))[..., None]
    sky = np.array((250, 214, 160), np.float32) * (1 - t) + np.array((196, 170, 222), np.float32) * t
    return _over(sky, _flat(size, rgb), mask)


def _crosshatch(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
    np = _np()
    yy, xx = _grid(size)
    lines = (((xx + yy) % 6) < 1.5) | (((xx - yy) % 6) < 1.5)
    paint = np.where(lines[..., None], np.array(rgb, np.float32), np.array(_lighter(rgb, 0.75), np.float32))
    return _over(_flat(size, BACKGROUND), paint, mask)


def _rings(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
    np = _np()
    yy, xx = _grid(size)
    cx, cy = float(np.mean([p[0] for p in pts])), float(np.mean([p[1] for p in pts]))
    band = (np.hypot(xx - cx, yy - cy) % 6) < 3
    paint = np.where(band[..., None], np.array(rgb, np.float32), np.array(_lighter(rgb, 0.6), np.float32))
    return _over(_flat(size, BACKGROUND), paint, mask)


def _halftone(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
    np = _np()
    yy, xx = _grid(size)
    radius = 0.8 + 2.2 * yy / (size - 1)  # dots grow from top to bottom
    dots = np.hypot(xx % 6 - 3, yy % 6 - 3) < radius
    paint = np.where(dots[..., None], np.array(rgb, np.float32), np.array((255, 255, 255), np.float32))
    return _over(_flat(size, BACKGROUND), paint, mask)


def _shadow(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
    np = _np()
    shadow = np.roll(np.roll(mask, 2, axis=0), 2, axis=1)
    ground = _over(_flat(size, BACKGROUND), _flat(size, (90, 90, 96)), shadow)
    return _over(ground, _flat(size, rgb), mask)


def _comic(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
    from PIL import Image as PILImage
    from PIL import ImageDraw

    np = _np()
    edge = PILImage.new("L", (size, size), 0)
    ImageDraw.Draw(edge).line([*pts, pts[0]], fill=255, width=2, joint="curve")
    img = _over(_flat(size, (252, 236, 150)), _flat(size, rgb), mask)
    return _over(img, _flat(size, (15, 15, 15)), np.asarray(edge, np.float32) / 255.0)


def _neon(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFilter

    np = _np()
    edge = PILImage.new("L", (size, size), 0)
    ImageDraw.Draw(edge).line([*pts, pts[0]], fill=255, width=2, joint="curve")
    glow = np.asarray(edge.filter(ImageFilter.GaussianBlur(1.5)), np.float32) / 255.0
    line = np.asarray(edge, np.float32) / 255.0
    img = _over(_flat(size, (10, 10, 18)), _flat(size, rgb), np.clip(1.6 * glow, 0, 1) * 0.8)
    img = _over(img, _flat(size, _lighter(rgb, 0.2)), line)
    return _over(img, _flat(size, rgb), mask * 0.35)


def _paper(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
    np = _np()
    grain = np.random.default_rng(rng.randrange(2**31)).normal(0, 18, (size, size, 1))
    paper = np.clip(np.array((226, 212, 184), np.float32) + grain, 0, 255)
    return _over(paper, _flat(size, rgb), mask)


def _pinstripe(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
    np = _np()
    yy, _ = _grid(size)
    lines = (yy % 4) < 2
    paint = np.where(lines[..., None], np.array(rgb, np.float32), np.array(_lighter(rgb, 0.55), np.float32))
    return _over(_flat(size, BACKGROUND), paint, mask)


def _shaded(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
    np = _np()
    ys = [p[1] for p in pts]
    yy, _ = _grid(size)
    t = np.clip((yy - min(ys)) / max(1.0, max(ys) - min(ys)), 0, 1)[..., None]
    top, bottom = np.array(_lighter(rgb, 0.5), np.float32), np.array(rgb, np.float32) * 0.6
    return _over(_flat(size, BACKGROUND), top * (1 - t) + bottom * t, mask)


def _mosaic(mask: Any, pts: Any, rgb: RGB, rng: random.Random, size: int) -> Any:
    np = _np()
    cells = np.random.default_rng(rng.randrange(2**31)).uniform(-0.25, 0.25, (size // 4 + 1, size // 4 + 1))
    yy, xx = _grid(size)
    jitter = cells[(yy // 4).astype(int), (xx // 4).astype(int)][..., None]
    base = np.array(rgb, np.float32)
    paint = np.clip(np.where(jitter > 0, base + (255 - base) * jitter, base * (1 + jitter)), 0, 255)
    seams = ((xx % 4) < 1) | ((yy % 4) < 1)
    paint = np.where(seams[..., None], np.array((250, 250, 250), np.float32), paint)
    return _over(_flat(size, BACKGROUND), paint, mask)


BATTERY: dict[str, Painter] = {
    "navy": _on((20, 30, 70)),
    "night": _on((8, 8, 10)),
    "sunset": _sunset,
    "crosshatch": _crosshatch,
    "rings": _rings,
    "halftone": _halftone,
    "shadow": _shadow,
    "comic": _comic,
    "neon": _neon,
    "paper": _paper,
    "pinstripe": _pinstripe,
    "shaded": _shaded,
    "mosaic": _mosaic,
}
"""The held-out battery: style name -> painter. None of these names is a miniworld style."""


def draw_battery(style: str, shape: str, colour: str, rng: random.Random | None = None, size: int = 32) -> Image.Image:
    """One picture of miniworld content in a battery style (the geometry of ``world.draw``)."""
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageDraw

    if style not in BATTERY:
        raise ValueError(f"unknown battery style {style!r}; expected one of {', '.join(BATTERY)}")
    rng = rng or random.Random(0)
    r = rng.uniform(size * 0.22, size * 0.36)
    cx, cy = rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1)
    pts = _outline(shape, cx, cy, r)
    m = PILImage.new("L", (size, size), 0)
    ImageDraw.Draw(m).polygon(pts, fill=255)
    image = BATTERY[style](np.asarray(m, np.float32) / 255.0, pts, COLOURS[colour], rng, size)
    return PILImage.fromarray(np.clip(image, 0, 255).round().astype(np.uint8))


def draw_any(style: str, shape: str, colour: str, rng: random.Random | None = None, size: int = 32) -> Image.Image:
    """One picture of miniworld content in a miniworld style or a battery style."""

    if style in STYLES:
        return draw(shape, colour, style, rng or random.Random(0), size)[0]
    return draw_battery(style, shape, colour, rng, size)


def battery_items(style: str, n: int, seed: int = 0, size: int = 32) -> list[tuple[Image.Image, str, str]]:
    """``n`` pictures of ``style`` (every shape and colour equally likely) with their (shape, colour)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        out.append((draw_battery(style, shape, colour, rng, size), shape, colour))
    return out


def any_items(style: str, n: int, seed: int = 0, size: int = 32) -> list[tuple[Image.Image, str, str]]:
    """``n`` pictures of a miniworld style (``world.sample_items``) or a battery style (``battery_items``)."""

    if style in BATTERY:
        return battery_items(style, n, seed=seed, size=size)
    return [(image, it.shape, it.colour) for image, it in sample_items(n, style=style, seed=seed, size=size)]
