"""Ground truth without CLIP: which shape and colour a miniworld picture shows, read from its pixels.

The painted pixels are those far from the background; their mean colour names the colour (the
nearest of ``COLOURS``), and the filled silhouette's area over its bounding box names the shape
(square ~1.0, circle ~0.79, triangle ~0.5, star ~0.35). Outlines are filled before measuring.
Used to check base-model samples and to validate the CLIP objective against something that is
not CLIP.

A style's strength has two parts that a model can learn separately, so there are two readings:
``style_strength`` (the texture: correlation with the style's pattern) and ``tone_shift`` (the paint: how far
its average lightness, relative to the pure colour, has moved from a plain fill's towards the style's).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from autolora.miniworld.world import BACKGROUND, COLOURS

if TYPE_CHECKING:
    from PIL import Image

# Fill ratio (silhouette area / bounding-box area) at which each shape is most typical.
_FILL = {"square": 1.0, "circle": 0.785, "triangle": 0.5, "star": 0.33}


def read_content(image: Image.Image) -> tuple[str | None, str | None]:
    """(shape, colour) read from the pixels; (None, None) when nothing is painted."""
    subject = _subject(image)
    if subject is None:
        return None, None
    painted, colour = subject
    from scipy import ndimage

    filled = ndimage.binary_fill_holes(ndimage.binary_closing(painted, iterations=2))
    return _shape_of(filled), colour


def _subject(image: Image.Image) -> tuple[Any, str] | None:
    """(mask of the subject's painted pixels, its colour name); None when nothing is painted."""
    import numpy as np
    from scipy import ndimage

    arr = np.asarray(image.convert("RGB"), dtype=float)
    painted = _painted(arr)
    opened = ndimage.binary_opening(painted, iterations=1)
    if opened.sum() > 0.7 * painted.sum():  # removes specks, but would erase a 2-pixel outline
        painted = opened
    if painted.sum() < 6:
        return None
    labels, n = ndimage.label(painted)
    if n > 1:  # keep the largest blob: stray pixels are not the subject
        sizes = ndimage.sum(painted, labels, range(1, n + 1))
        painted = labels == (1 + int(np.argmax(sizes)))
    mean = arr[painted].mean(0)
    # Judge the colour by hue-ish direction: pastel and grain move brightness, not the nearest hue.
    colour = min(COLOURS, key=lambda c: _colour_distance(mean, np.array(COLOURS[c], dtype=float)))
    return painted, colour


def _painted(arr: Any) -> Any:
    """Mask of the pixels far from the picture's own ground (the median colour of its outermost ring of pixels).

    Not miniworld's ``BACKGROUND``: a model's samples come on slightly tinted grounds (a general VAE paints the
    ground a latent holds), and the battery's styles on dark or coloured ones; a fixed light ground would read
    the whole tinted picture as paint. A subject touching less than half the border leaves the median alone.
    """
    import numpy as np

    ring = np.concatenate([arr[0], arr[-1], arr[1:-1, 0], arr[1:-1, -1]])
    ground = np.median(ring, axis=0) if len(ring) else np.array(BACKGROUND, dtype=float)
    return np.abs(arr - ground).sum(-1) > 60


def _shape_of(filled: object) -> str:
    """Star: low solidity (area / convex-hull area); else square, circle or triangle by fill of the box."""
    import numpy as np
    from scipy.spatial import ConvexHull

    mask = np.asarray(filled, dtype=bool)
    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    hull = ConvexHull(corners).volume  # in 2-D, volume is the area
    if mask.sum() / hull < 0.78:
        return "star"
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    ratio = mask.sum() / box
    return min(("square", "circle", "triangle"), key=lambda s: abs(_FILL[s] - ratio))


def _colour_distance(a: object, b: object) -> float:
    """1 - cosine of the two colours' offsets from white.

    Pastel, striped and dotted paint mix the colour with white, which shortens its offset from
    white without turning it, so the direction names the colour whatever the mix.
    """
    import numpy as np

    da, db = 255.0 - np.asarray(a, dtype=float), 255.0 - np.asarray(b, dtype=float)
    return float(1.0 - da @ db / (np.linalg.norm(da) * np.linalg.norm(db) + 1e-6))


PATTERNED = ("striped", "dotted", "checker")
"""Styles whose strength ``style_strength`` can read as a texture fixed to the image grid that a plain fill lacks."""
SHADED = "shaded"
"""The battery style whose structure is anchored to the shape (light at its top, dark at its bottom)."""
TEXTURED = (*PATTERNED, SHADED)
"""Every style ``style_strength`` reads."""


def style_strength(image: Image.Image, style: str) -> float:
    """How strongly ``image`` shows ``style``'s texture inside the painted shape, without CLIP.

    The pattern of a patterned style is drawn on a fixed grid (``world._fill``); this is the best correlation,
    over the grid's phases, between the template and the luminance inside the silhouette. A flat fill scores
    ~0, the drawn style ~1; a sample that shows the texture faintly lands between.
    """
    import numpy as np

    from autolora.miniworld.world import pattern, pattern_period

    if style not in TEXTURED:
        raise ValueError(f"style_strength reads {', '.join(TEXTURED)}; not {style!r}")
    arr = np.asarray(image.convert("RGB"), dtype=float)
    size = arr.shape[0]
    painted = _painted(arr)
    if painted.sum() < 12:
        return 0.0
    if style == SHADED:
        return _shading(arr, painted)
    lum = arr.mean(-1)[painted]
    lum = lum - lum.mean()
    best = 0.0
    repeat = pattern_period(style, size)
    for dy in range(repeat):
        for dx in range(repeat):
            t = pattern(style, size, dx, dy)[painted].astype(float)
            t = t - t.mean()
            denom = float(np.sqrt((lum**2).sum() * (t**2).sum()))
            if denom > 0:
                best = max(best, abs(float((lum * t).sum())) / denom)
    return best


def _shading(arr: Any, painted: Any) -> float:
    """Correlation of the paint's darkness with its height in the picture: 1 for ``shaded``'s top-to-bottom
    ramp, ~0 for a flat fill, negative for paint darker at the top. Invariant to the paint's mean tone."""
    import numpy as np

    ys = np.nonzero(painted)[0].astype(float)
    lum = arr.mean(-1)[painted]
    ys, lum = ys - ys.mean(), lum - lum.mean()
    denom = float(np.sqrt((ys**2).sum() * (lum**2).sum()))
    return 0.0 if denom == 0 else -float((ys * lum).sum()) / denom


def _mean_tone(image: Image.Image) -> float | None:
    """Mean tone of the subject's paint: per pixel, (lum - lum_c) / (255 - lum_c) when lighter than the pure
    colour c (0 to 1: towards white), (lum - lum_c) / lum_c when darker (0 to -1: towards black)."""
    import numpy as np

    subject = _subject(image)
    if subject is None:
        return None
    painted, colour = subject
    lum = np.asarray(image.convert("RGB"), dtype=float).mean(-1)[painted]
    ref = float(np.mean(COLOURS[colour]))
    tone = np.where(lum >= ref, (lum - ref) / (255.0 - ref), (lum - ref) / ref)
    return float(tone.mean())


@cache
def _style_tone(style: str, size: int) -> float:
    """Mean tone of 48 drawn pictures of ``style``."""
    from autolora.miniworld.battery import any_items

    tones = [_mean_tone(image) for image, _, _ in any_items(style, 48, seed=12345, size=size)]
    return sum(t for t in tones if t is not None) / len(tones)


def tone_shift(image: Image.Image, style: str) -> float:
    """How far ``image``'s paint has moved from a plain fill's tone towards ``style``'s, without CLIP.

    0 for a plain fill, 1 for the drawn style (both averaged over drawn pictures, so anti-aliased edges cancel);
    beyond 1 overshoots, below 0 moves the other way. Reads tone only: ``checker`` (half its cells 35 % darker)
    and a uniformly 17 % darker fill both read 1; ``style_strength`` tells them apart. Nothing painted: 0.
    """
    size = image.size[0]
    plain, target = _style_tone("plain", size), _style_tone(style, size)
    if abs(target - plain) < 0.05:
        raise ValueError(f"style {style!r} paints in a plain fill's tone; tone_shift cannot read it")
    tone = _mean_tone(image)
    return 0.0 if tone is None else (tone - plain) / (target - plain)


def presence_reader(style: str) -> tuple[str, Callable[[Image.Image], float]]:
    """(kind, reader) of ``style``'s presence in a picture, from the pixels: ``texture`` (``style_strength``), else
    ``tone`` (``tone_shift``), else ``ground`` (``ground_shift``); each reads 0 on a plain picture, 1 on the style.

    For blends of two styles choose styles whose readers do not see each other (``benchmarks/fuse_pairs.py``
    prints the cross-readings): a ground style with a texture style, or two textures of another kind (``shaded``'s
    ramp and ``checker``'s grid); tone readers see most textures (a dotted fill is lighter on average).
    """
    from autolora.miniworld.battery import any_items

    if style in TEXTURED:
        return "texture", lambda im: style_strength(im, style)
    probe = any_items(style, 1, seed=7)[0][0]
    try:
        tone_shift(probe, style)
        return "tone", lambda im: tone_shift(im, style)
    except ValueError:
        return "ground", ground_shift(style)


def ground_shift(style: str) -> Callable[[Image.Image], float]:
    """How far a picture's ground (the median of its outermost ring of pixels) moved from the plain ground towards
    ``style``'s (0: plain, 1: the style's; a projection on the line between the two colours)."""
    import numpy as np

    from autolora.miniworld.battery import any_items

    def ground(im: Any) -> Any:
        arr = np.asarray(im.convert("RGB"), dtype=float)
        ring = np.concatenate([arr[0], arr[-1], arr[1:-1, 0], arr[1:-1, -1]])
        return np.median(ring, axis=0)

    plain = np.array(BACKGROUND, dtype=float)
    target = np.mean([ground(im) for im, _, _ in any_items(style, 16, seed=7)], axis=0)
    line = target - plain
    return lambda im: float((ground(im) - plain) @ line / (line @ line))
