"""The miniworld vocabulary and its procedural drawing.

Content: a shape (circle, square, triangle, star) in a colour (red, green, blue, yellow, purple,
orange) at a random position and size on a light background. Style: how the shape is painted
(plain, striped, dotted, outline, pastel, grain, checker); every style keeps the silhouette and
the hue, so the content stays recognisable. Captions: ``"a red circle"`` and
``"a red circle in striped style"``. ``HELD_OUT_STYLES`` are kept out of the base model's
training, so that a style LoRA has something real to learn.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

SHAPES = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (230, 200, 30),
    "purple": (140, 50, 180),
    "orange": (240, 130, 20),
}
STYLES = ("plain", "striped", "dotted", "outline", "pastel", "grain", "checker")
HELD_OUT_STYLES = ("checker", "dotted")
BACKGROUND = (245, 242, 235)


@dataclass(frozen=True)
class Item:
    """One drawn picture's ground truth."""

    shape: str
    colour: str
    style: str
    cx: float
    cy: float
    radius: float

    @property
    def caption(self) -> str:
        return caption(self.shape, self.colour, self.style)


def caption(shape: str, colour: str, style: str = "plain") -> str:
    """``a red circle`` (plain) or ``a red circle in striped style``."""
    base = f"a {colour} {shape}"
    return base if style == "plain" else f"{base} in {style} style"


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.85), (cx - r, cy + r * 0.85)]
    if shape == "star":
        pts = []
        for i in range(10):
            a = math.pi / 2 + i * math.pi / 5
            rad = r if i % 2 == 0 else r * 0.45
            pts.append((cx + rad * math.cos(a), cy - rad * math.sin(a)))
        return pts
    return [(cx + r * math.cos(t), cy + r * math.sin(t)) for t in (2 * math.pi * k / 48 for k in range(48))]


def _mix(c: tuple[int, int, int], other: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return (
        round(c[0] * (1 - t) + other[0] * t),
        round(c[1] * (1 - t) + other[1] * t),
        round(c[2] * (1 - t) + other[2] * t),
    )


def _period(size: int) -> int:
    # 8 px at 32 px: cells and stripes of 4 px are 2 latent pixels wide behind the factor-2 VAE. Finer textures
    # (2 px cells, the first build) were beyond the 16x16-latent UNet: the base never drew its trained stripes
    # and no LoRA learnt the held-out checker's texture, only its darker paint.
    return max(4, 2 * (size // 8))


def pattern_period(style: str, size: int) -> int:
    """Pixels after which a patterned style's texture repeats (in x and y) at image size ``size``."""
    return _period(size)


def pattern(style: str, size: int, dx: int = 0, dy: int = 0) -> Any:
    """Where a patterned style (striped, dotted, checker) paints the full colour, as a (size, size) bool array.

    The grid is fixed to the image, so every picture of a style shares it; ``dx``/``dy`` shift it (to compare a
    picture with every phase). None for styles without a pattern.
    """
    import numpy as np

    yy, xx = np.mgrid[dy : dy + size, dx : dx + size]
    period = _period(size)
    if style == "striped":
        return ((xx + yy) // (period // 2)) % 2 == 0
    if style == "dotted":
        cx, cy = (xx % period) - period / 2, (yy % period) - period / 2
        return cx**2 + cy**2 < (period / 3) ** 2
    if style == "checker":
        return ((xx // (period // 2)) + (yy // (period // 2))) % 2 == 0
    return None


def _fill(style: str, rgb: tuple[int, int, int], size: int, rng: random.Random) -> Image.Image:
    """The paint inside the silhouette, as a full-size image."""
    import numpy as np
    from PIL import Image as PILImage

    light, dark = _mix(rgb, (255, 255, 255), 0.6), _mix(rgb, (0, 0, 0), 0.35)
    pick = pattern(style, size)
    if style in ("striped", "dotted"):
        arr = np.where(pick[..., None], rgb, light)
    elif style == "checker":
        arr = np.where(pick[..., None], rgb, dark)
    elif style == "pastel":
        arr = np.broadcast_to(np.array(_mix(rgb, (255, 255, 255), 0.5)), (size, size, 3))
    elif style == "grain":
        noise = np.random.default_rng(rng.randrange(2**31)).normal(0, 40, (size, size, 1))
        arr = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255)
    else:
        arr = np.broadcast_to(np.array(rgb), (size, size, 3))
    return PILImage.fromarray(np.ascontiguousarray(arr).astype(np.uint8))


def draw(
    shape: str, colour: str, style: str = "plain", rng: random.Random | None = None, size: int = 32
) -> tuple[Image.Image, Item]:
    """Draw one picture; returns it with its ground truth. Unknown names raise ``ValueError``."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    for value, allowed, what in ((shape, SHAPES, "shape"), (colour, COLOURS, "colour"), (style, STYLES, "style")):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    rng = rng or random.Random(0)
    r = rng.uniform(size * 0.22, size * 0.36)
    cx, cy = rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1)
    image = PILImage.new("RGB", (size, size), BACKGROUND)
    mask = PILImage.new("L", (size, size), 0)
    pts = _outline(shape, cx, cy, r)
    if style == "outline":
        ImageDraw.Draw(image).line([*pts, pts[0]], fill=COLOURS[colour], width=max(2, size // 14), joint="curve")
    else:
        ImageDraw.Draw(mask).polygon(pts, fill=255)
        image.paste(_fill(style, COLOURS[colour], size, rng), (0, 0), mask)
    return image, Item(shape, colour, style, cx, cy, r)


def sample_items(
    n: int, style: str | None = None, seed: int = 0, size: int = 32, styles: tuple[str, ...] = STYLES
) -> list[tuple[Image.Image, Item]]:
    """``n`` random pictures (every shape and colour equally likely), of one style or drawn from ``styles``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = style or rng.choice(styles)
        out.append(draw(rng.choice(SHAPES), rng.choice(list(COLOURS)), s, rng, size))
    return out
