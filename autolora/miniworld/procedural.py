"""A broad procedural distribution of flat-art pictures: what a general VAE (and the judge) train on.

Miniworld's own drawings (``world.draw``) are one corner of it. Here a picture is a background (any colour, dark
and saturated ones too, linear and radial gradients, textures) and one to four shapes (miniworld's four and
ellipses, rings, rectangles, polygons) painted flat, in gradients or in textures (stripes at any angle,
hatching, dots, checks, rings, noise) at periods of 2-14 px and any contrast, with or without outlines of 1-5 px;
sometimes a flat-art landscape (sky gradient, ground band, sun), sometimes grain over everything. The aim is
Stable Diffusion's property that a VAE round trip keeps the look of any simple picture, so that a style nobody
planned is still representable (``battery`` measures it on styles outside this family's training draws).

``styled_content`` draws miniworld content (one vocabulary shape in a vocabulary colour, which stays the
dominant paint) in a random style of this family: the judge learns shape and colour on any background from it.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from autolora.miniworld.world import BACKGROUND, COLOURS, SHAPES, _outline

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

RGB = tuple[int, int, int]
EXTRA_SHAPES = ("ellipse", "ring", "rectangle", "polygon")


def random_colour(rng: random.Random) -> RGB:
    """Any colour; a third dark, a third saturated, a third anything."""
    import colorsys

    r = rng.random()
    if r < 0.33:
        h, s, v = rng.random(), rng.random(), rng.uniform(0.02, 0.35)
    elif r < 0.66:
        h, s, v = rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.5, 1.0)
    else:
        h, s, v = rng.random(), rng.random(), rng.random()
    return tuple(round(255 * c) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return (round(a[0] * (1 - t) + b[0] * t), round(a[1] * (1 - t) + b[1] * t), round(a[2] * (1 - t) + b[2] * t))


def texture(kind: str, size: int, period: float, angle: float, ox: float, oy: float) -> np.ndarray:
    """A (size, size) float mask in [0, 1] of a repeating texture (``period`` px, ``angle`` rad, offset)."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = (xx - ox) * math.cos(angle) + (yy - oy) * math.sin(angle)
    v = -(xx - ox) * math.sin(angle) + (yy - oy) * math.cos(angle)
    if kind == "stripes":
        return ((u / period) % 1.0 < 0.5).astype(np.float32)
    if kind == "hatch":
        return np.maximum((u / period) % 1.0 < 0.3, (v / period) % 1.0 < 0.3).astype(np.float32)
    if kind == "dots":
        du, dv = (u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5
        return (du**2 + dv**2 < 0.09).astype(np.float32)
    if kind == "checks":
        return (((u // (period / 2)) + (v // (period / 2))) % 2 == 0).astype(np.float32)
    if kind == "rings":
        return ((np.hypot(xx - ox, yy - oy) / period) % 1.0 < 0.5).astype(np.float32)
    if kind == "wave":
        bend = 0.25 * period * np.sin(2 * math.pi * v / (3 * period))
        return (0.5 + 0.5 * np.sin(2 * math.pi * (u + bend) / period)).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r}")


TEXTURES = ("stripes", "hatch", "dots", "checks", "rings", "wave")


def _gradient(size: int, a: RGB, b: RGB, rng: random.Random) -> np.ndarray:
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    if rng.random() < 0.7:
        angle = rng.uniform(0, 2 * math.pi)
        t = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    else:
        cx, cy = rng.random(), rng.random()
        t = np.clip(np.hypot(xx - cx, yy - cy) / rng.uniform(0.5, 1.2), 0, 1)
    return np.array(a, np.float32) * (1 - t[..., None]) + np.array(b, np.float32) * t[..., None]


def paint(size: int, base: RGB, rng: random.Random, textured: float = 0.6, free: bool = True) -> np.ndarray:
    """A (size, size, 3) float paint layer: flat, a gradient, a texture of ``base`` and a partner, or noise.

    The partner is a tint or shade of ``base``, or (``free``) sometimes any colour.
    """
    import numpy as np

    r = rng.random()
    if r < 1 - textured:
        return np.broadcast_to(np.array(base, np.float32), (size, size, 3)).copy()
    if free and rng.random() < 0.4:
        other = random_colour(rng)
    else:
        other = mix(base, (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0), rng.uniform(0.25, 0.7))
    if r < 1 - textured * 0.8:
        return _gradient(size, base, other, rng)
    if r < 1 - textured * 0.1:
        mask = texture(
            rng.choice(TEXTURES),
            size,
            rng.uniform(2.0, 14.0),
            rng.uniform(0, math.pi),
            rng.uniform(0, size),
            rng.uniform(0, size),
        )[..., None]
        return np.array(base, np.float32) * mask + np.array(other, np.float32) * (1 - mask)
    noise = np.random.default_rng(rng.randrange(2**31)).normal(0, rng.uniform(8, 50), (size, size, 1))
    return np.clip(np.array(base, np.float32) + noise, 0, 255)


def shape_points(shape: str, cx: float, cy: float, r: float, rng: random.Random) -> list[tuple[float, float]]:
    if shape in SHAPES:
        return _outline(shape, cx, cy, r)
    if shape == "ellipse":
        ry, a0 = r * rng.uniform(0.4, 0.9), rng.uniform(0, math.pi)
        pts = [(r * math.cos(t), ry * math.sin(t)) for t in (2 * math.pi * k / 48 for k in range(48))]
        return [(cx + x * math.cos(a0) - y * math.sin(a0), cy + x * math.sin(a0) + y * math.cos(a0)) for x, y in pts]
    if shape == "rectangle":
        h = r * rng.uniform(0.3, 0.9)
        return [(cx - r, cy - h), (cx + r, cy - h), (cx + r, cy + h), (cx - r, cy + h)]
    n = rng.randrange(5, 9)
    a0 = rng.uniform(0, math.pi)
    return [
        (cx + r * math.cos(a0 + 2 * math.pi * k / n), cy + r * math.sin(a0 + 2 * math.pi * k / n)) for k in range(n)
    ]


def _mask(size: int, pts: list[tuple[float, float]], ring: float = 0.0, centre: tuple[float, float] = (0, 0)) -> Any:
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageDraw

    m = PILImage.new("L", (size, size), 0)
    ImageDraw.Draw(m).polygon(pts, fill=255)
    arr = np.asarray(m, np.float32) / 255.0
    if ring > 0:
        inner = PILImage.new("L", (size, size), 0)
        cx, cy = centre
        ImageDraw.Draw(inner).polygon([(cx + (x - cx) * ring, cy + (y - cy) * ring) for x, y in pts], fill=255)
        arr = arr * (1 - np.asarray(inner, np.float32) / 255.0)
    return arr


def _stroke(size: int, pts: list[tuple[float, float]], width: int) -> Any:
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageDraw

    m = PILImage.new("L", (size, size), 0)
    ImageDraw.Draw(m).line([*pts, pts[0]], fill=255, width=width, joint="curve")
    return np.asarray(m, np.float32) / 255.0


def background(size: int, rng: random.Random) -> np.ndarray:
    import numpy as np

    r = rng.random()
    if r < 0.15:  # a flat-art landscape: sky, ground, sometimes a sun
        sky = _gradient(size, random_colour(rng), random_colour(rng), random.Random(rng.randrange(2**31)))
        horizon = rng.uniform(0.45, 0.8) * size
        yy = np.mgrid[0:size, 0:size][0]
        ground = paint(size, random_colour(rng), rng, textured=0.4)
        out = np.where((yy > horizon)[..., None], ground, sky)
        if rng.random() < 0.6:
            sun = _mask(
                size,
                shape_points("circle", rng.uniform(0, size), rng.uniform(0, horizon), rng.uniform(2, size / 5), rng),
            )
            out = out * (1 - sun[..., None]) + np.array(random_colour(rng), np.float32) * sun[..., None]
        return np.asarray(out, np.float32)
    return paint(size, random_colour(rng), rng, textured=0.5)


def add_shape(
    canvas: np.ndarray,
    shape: str,
    rgb: RGB,
    cx: float,
    cy: float,
    r: float,
    rng: random.Random,
    textured: float = 0.6,
    free: bool = True,
) -> None:
    """Paint one shape onto ``canvas`` in place: fill (maybe textured), ring, outline, or fill and outline."""
    import numpy as np

    size = canvas.shape[0]
    pts = shape_points(shape, cx, cy, r, rng)
    how = rng.random()
    if how < 0.15:  # outline only
        m = _stroke(size, pts, rng.randrange(1, 6))
        layer = paint(size, rgb, rng, textured=0.2, free=free)
    else:
        m = _mask(size, pts, ring=rng.uniform(0.4, 0.8) if shape == "ring" or how < 0.22 else 0.0, centre=(cx, cy))
        layer = paint(size, rgb, rng, textured=textured, free=free)
        if how > 0.75:  # a stroke of another colour around the fill
            s = _stroke(size, pts, rng.randrange(1, 4 if not free else 5))
            edge = random_colour(rng) if free and rng.random() < 0.5 else (0, 0, 0)
            layer = layer * (1 - s[..., None]) + np.array(edge, np.float32) * s[..., None]
            m = np.maximum(m, s)
    canvas *= 1 - m[..., None]
    canvas += layer * m[..., None]


def random_picture(rng: random.Random, size: int = 32) -> Image.Image:
    """One picture of the broad distribution."""
    import numpy as np
    from PIL import Image as PILImage

    canvas = background(size, rng)
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
        r = rng.uniform(size * 0.08, size * 0.45)
        shape = rng.choice(SHAPES + EXTRA_SHAPES)
        add_shape(canvas, shape, random_colour(rng), rng.uniform(0, size), rng.uniform(0, size), r, rng)
    if rng.random() < 0.15:
        canvas += np.random.default_rng(rng.randrange(2**31)).normal(0, rng.uniform(4, 25), (size, size, 1))
    return PILImage.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8))


def styled_content(shape: str, colour: str, rng: random.Random, size: int = 32) -> Image.Image:
    """Miniworld content (``shape`` in ``colour``, the dominant paint) in a random style of the broad family."""
    import numpy as np
    from PIL import Image as PILImage

    rgb = np.array(COLOURS[colour], np.float32)
    for _ in range(20):  # a background far enough from the subject's colour to see it
        canvas = background(size, rng)
        if float(np.abs(canvas - rgb).sum(-1).mean()) > 120:
            break
    r = rng.uniform(size * 0.22, size * 0.36)
    cx, cy = rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1)
    add_shape(canvas, shape, COLOURS[colour], cx, cy, r, rng, textured=0.45, free=False)
    if rng.random() < 0.1:
        canvas += np.random.default_rng(rng.randrange(2**31)).normal(0, rng.uniform(4, 20), (size, size, 1))
    return PILImage.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8))


def patterned_content(shape: str, colour: str, rng: random.Random, size: int = 32) -> Image.Image:
    """Miniworld content on miniworld's light ground, its fill a random texture, gradient or noise of the broad
    family (never flat): what a base UNet built with ``--patterned-share`` learns as ``patterned`` style, so that
    its convolutions can draw textures at any period, angle and phase, as Stable Diffusion's can. A LoRA binds a
    texture its base can already draw (docs/miniworld.md: a LoRA on attention and feed-forward layers moved a known
    texture a third of the way in 300 steps, and one its base had never drawn not at all)."""
    import numpy as np
    from PIL import Image as PILImage

    canvas = np.broadcast_to(np.array(BACKGROUND, np.float32), (size, size, 3)).copy()
    r = rng.uniform(size * 0.22, size * 0.36)
    cx, cy = rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1)
    m = _mask(size, _outline(shape, cx, cy, r))
    layer = paint(size, COLOURS[colour], rng, textured=1.0, free=False)
    canvas = canvas * (1 - m[..., None]) + layer * m[..., None]
    return PILImage.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8))
