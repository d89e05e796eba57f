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

from autolora.miniworld.battery import any_items
from autolora.miniworld.world import BACKGROUND, COLOURS, pattern, pattern_period

if TYPE_CHECKING:
    from PIL import Image

# Fill ratio (silhouette area / the area of its core box, ``_core``) at which each shape is most typical: the
# mean over miniworld's own drawings at 32 px (``world.draw``, 40 of each; the geometric ideals are 1, 0.785 and
# 0.5, but a rasterised triangle fills more of its box and the core box trims its apex). Checked by
# tests/test_miniworld.py against fresh drawings.
_FILL = {"square": 1.0, "circle": 0.79, "triangle": 0.64}


def read_content(image: Image.Image) -> tuple[str | None, str | None]:
    """(shape, colour) read from the pixels; (None, None) when nothing is painted."""
    subject = _subject(image)
    if subject is None:
        return None, None
    painted, colour = subject
    from scipy import ndimage

    # Closing erodes paint at the picture's edge (scipy's border counts as empty): what was painted stays.
    filled = ndimage.binary_fill_holes(ndimage.binary_closing(painted, iterations=2) | painted)
    return _shape_of(filled), colour


def _subject(image: Image.Image) -> tuple[Any, str] | None:
    """(mask of the subject's painted pixels, its colour name); None when nothing is painted.

    The subject is the paint of one hue: the pixels far from the picture's own ground (``_painted``) whose chroma
    and hue are the subject's. Grey and black paint around it (a drop shadow, a dark outline, a frame) is not the
    subject, and a style that mixes the subject's colour with white or black (pastel, dots, a shading ramp) keeps
    its hue, so the colour is named by hue (``_hue_name``), not by the mean colour's distance from white (which
    read a darkened red as purple).
    """
    import numpy as np

    arr = np.asarray(image.convert("RGB"), dtype=float)
    painted = _painted(arr)
    chroma = arr.max(-1) - arr.min(-1)
    hue = _hue(arr)
    vivid = painted & (chroma >= _VIVID)
    ring = np.concatenate([arr[0], arr[-1], arr[1:-1, 0], arr[1:-1, -1]])
    ground = np.median(ring, axis=0)
    if float(ground.max() - ground.min()) >= _VIVID:
        # A coloured ground (a comic's yellow, a sunset): where a sample's ground is uneven, some of it passes for
        # paint; paint of the ground's own hue is not the subject unless nothing else is painted.
        other = vivid & (_hue_gap(hue, float(_hue(ground))) > _HUE_SPREAD)
        if other.sum() >= 6:
            vivid = other
    if vivid.sum() >= 6:
        # The subject's hue: of the peaks of the vivid paint's hues (chroma-weighted), the one whose largest blob
        # is largest and keeps off the picture's edge (stray ground that passed for paint hugs the edge); then
        # every painted pixel of that hue with some colour in it (a pale dot's rim, the dark end of a ramp).
        edge = np.zeros(painted.shape, dtype=bool)
        edge[[0, -1], :] = edge[:, [0, -1]] = True
        best: tuple[float, Any] | None = None
        for angle in _hue_peaks(hue[vivid], chroma[vivid]):
            paint = painted & (_hue_gap(hue, angle) <= _HUE_SPREAD) & (chroma >= _TINTED)
            blob = _largest(_open(paint))
            if blob is None:
                continue
            score = float(blob.sum()) * max(0.0, 1.0 - 4.0 * float((blob & edge).sum()) / float(blob.sum()))
            if best is None or score > best[0]:
                best = (score, _regrown(paint, blob))
        if best is not None:
            painted = best[1]
    else:
        painted = _open(painted)
    if painted.sum() < 6:
        return None
    painted = _largest(painted)  # stray pixels are not the subject
    pixels = arr[painted]
    if float((pixels.max(-1) - pixels.min(-1)).mean()) < _TINTED:
        # Grey paint has no hue to name: the colour by direction from white, as before.
        mean = pixels.mean(0)
        colour = min(COLOURS, key=lambda c: _colour_distance(mean, np.array(COLOURS[c], dtype=float)))
    else:
        colour = _hue_name(pixels)
    return painted, colour


_VIVID = 40.0
"""Chroma (max - min channel) of paint that certainly has a hue; every vocabulary colour has over 130."""
_TINTED = 20.0
"""Chroma below which a pixel is grey (shadows, outlines, a paper ground's grain)."""
_HUE_SPREAD = 40.0
"""Degrees of hue around the subject's that still count as its paint (the vocabulary's nearest hues, red and
orange, are 29 degrees apart; anti-aliased edges and grain move a pixel's hue less than this)."""


def _hue(arr: Any) -> Any:
    """HSV hue in degrees of an (..., 3) RGB array (0 for greys)."""
    import numpy as np

    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    mx, mn = arr.max(-1), arr.min(-1)
    d = np.where(mx - mn > 0, mx - mn, 1.0)
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return np.where(mx - mn > 0, h * 60.0, 0.0)


def _hue_peaks(hues: Any, weights: Any, most: int = 3) -> list[float]:
    """Up to ``most`` hues the paint is most of (peaks of a chroma-weighted histogram of 10-degree bins, each
    smoothed with its neighbours, at least 40 degrees apart and a fifth of the highest), each refined by the
    circular mean of the hues within 20 degrees of it."""
    import numpy as np

    hues, weights = np.asarray(hues, dtype=float), np.asarray(weights, dtype=float)
    counts = np.bincount((hues // 10).astype(int) % 36, weights=weights, minlength=36)
    smooth = counts + np.roll(counts, 1) + np.roll(counts, -1)
    out: list[float] = []
    for b in np.argsort(-smooth):
        centre = float(b * 10 + 5)
        if smooth[b] < 0.2 * smooth.max() or len(out) == most:
            break
        if all(_hue_gap(centre, o) >= 40 for o in out):
            near = _hue_gap(hues, centre) <= 20
            mean = np.angle((weights[near] * np.exp(1j * np.deg2rad(hues[near]))).sum(), deg=True)
            out.append(float(mean) % 360)
    return out


def _regrown(mask: Any, blob: Any) -> Any:
    """``blob`` (an opened part of ``mask``) with the pixels of ``mask`` that opening took off its rim given back
    (a square's corners: opened, a small square reads as a circle); stray paint further off stays out."""
    from scipy import ndimage

    return mask & ndimage.binary_dilation(blob, iterations=1)


def _open(mask: Any) -> Any:
    """Specks removed, unless that would erase most of the mask (a 2-pixel outline)."""
    from scipy import ndimage

    opened = ndimage.binary_opening(mask, iterations=1)
    return opened if opened.sum() > 0.7 * mask.sum() else mask


def _largest(mask: Any) -> Any:
    """The largest connected blob of ``mask`` (None when empty)."""
    import numpy as np
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    if n == 1:
        return labels == 1
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))


def _hue_gap(a: Any, b: Any) -> Any:
    import numpy as np

    d = np.abs(np.asarray(a, dtype=float) - b) % 360
    return np.minimum(d, 360 - d)


def _hue_name(pixels: Any) -> str:
    """The vocabulary colour whose hue is nearest the pixels' chroma-weighted mean hue. Mixing a colour with white,
    grey or black keeps its hue: pastel, dotted, shaded and a darkened sample's paint all name their colour."""
    import numpy as np

    chroma = pixels.max(-1) - pixels.min(-1)
    angle = float(np.angle((chroma * np.exp(1j * np.deg2rad(_hue(pixels)))).sum(), deg=True)) % 360
    hues = {c: float(_hue(np.array(rgb, dtype=float))) for c, rgb in COLOURS.items()}
    return min(hues, key=lambda c: float(_hue_gap(hues[c], angle)))


def _painted(arr: Any) -> Any:
    """Mask of the pixels far from the picture's own ground.

    The ground is read from the picture's border, row by row (the median of the outermost two columns over five
    rows, and of the top and bottom rows near them), so a ground that changes down the picture (a sunset's
    gradient) is the ground everywhere, not paint. Not miniworld's ``BACKGROUND``: a model's samples come on
    slightly tinted grounds (a general VAE paints the ground a latent holds), and the battery's styles on dark or
    coloured ones. A subject touching less than half the border leaves the medians alone.
    """
    import numpy as np

    h = arr.shape[0]
    ring = np.concatenate([arr[0], arr[-1], arr[1:-1, 0], arr[1:-1, -1]])
    flat = np.median(ring, axis=0) if len(ring) else np.array(BACKGROUND, dtype=float)
    sides = np.concatenate([arr[:, :2], arr[:, -2:]], axis=1)  # (h, 4, 3)
    ground = np.empty((h, 3))
    for y in range(h):
        lo, hi = max(0, y - 2), min(h, y + 3)
        near = [sides[lo:hi].reshape(-1, 3)]
        if y < 3:
            near.append(arr[0])
        if y >= h - 3:
            near.append(arr[-1])
        ground[y] = np.median(np.concatenate(near), axis=0)
    # A flat ground reads the same either way; the rows' medians follow a gradient the whole ring's median cannot.
    rows_vary = float(np.abs(ground - flat).sum(-1).max()) > 30
    base = ground[:, None, :] if rows_vary else flat
    return np.abs(arr - base).sum(-1) > 60


def _shape_of(filled: object) -> str | None:
    """Star: low solidity (area / convex-hull area); else square, circle or triangle by fill of the box."""
    import numpy as np
    from scipy.spatial import ConvexHull

    mask = np.asarray(filled, dtype=bool)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    hull = ConvexHull(corners).volume  # in 2-D, volume is the area (pixel corners: never a degenerate hull)
    if mask.sum() / hull < 0.78:
        return "star"
    rows, cols = _core(mask.sum(1)), _core(mask.sum(0))
    core = mask[rows, cols]
    ratio = core.sum() / core.size
    return min(("square", "circle", "triangle"), key=lambda s: abs(_FILL[s] - ratio))


def _core(counts: Any) -> slice:
    """The span of rows (or columns) the shape fills, without straggling edge rows of a few pixels each (under
    15 % of the fullest): a speck of paint by a big square made its box wider and the square read as a circle.
    A triangle loses a little of its apex, a circle almost nothing."""
    import numpy as np

    kept = np.nonzero(counts > 0.15 * counts.max())[0]
    return slice(int(kept[0]), int(kept[-1]) + 1)


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
    """(kind, reader) of ``style``'s presence in a picture, from the pixels; each reads ~0 on a plain picture and
    ~1 on the drawn style: ``texture`` (``style_strength``: dotted, striped, checker, shaded's ramp), a structure
    of its own (``STRUCTURES``: shadow, comic, sunset), else ``tone`` (``tone_shift``), else ``ground``
    (``ground_shift``).

    For blends of two styles choose styles whose readers do not see each other (``benchmarks/fuse_pairs.py``
    prints the cross-readings): a ground style with a texture style, or two textures of another kind (``shaded``'s
    ramp and ``checker``'s grid); tone readers see most textures (a dotted fill is lighter on average).
    """

    if style in TEXTURED:
        return "texture", lambda im: style_strength(im, style)
    if style in STRUCTURES:
        kind, make = STRUCTURES[style]
        return kind, make(style)
    probe = any_items(style, 1, seed=7)[0][0]
    try:
        tone_shift(probe, style)
        return "tone", lambda im: tone_shift(im, style)
    except ValueError:
        return "ground", ground_shift(style)


def _calibrated(style: str, raw: Callable[[Any], float | None]) -> Callable[[Image.Image], float]:
    """``raw`` rescaled so that drawn pictures of ``style`` read 1 on average and plain ones 0 (48 of each, drawn
    once); a picture ``raw`` cannot read (nothing painted) reads 0."""

    def mean(name: str) -> float:
        vals = [raw(im) for im, _, _ in any_items(name, 48, seed=12345)]
        got = [v for v in vals if v is not None]
        return sum(got) / max(1, len(got))

    plain, target = mean("plain"), mean(style)
    if abs(target - plain) < 1e-6:
        raise ValueError(f"style {style!r} reads like plain; this reader cannot see it")

    def read(im: Image.Image) -> float:
        v = raw(im)
        return 0.0 if v is None else (v - plain) / (target - plain)

    return read


def _darkness(arr: Any, where: Any, ground: Any) -> float | None:
    """Mean darkness of ``where``'s pixels against the ground's lightness (0: as light as the ground, 1: black)."""
    import numpy as np

    if not where.any():
        return None
    lum = arr.mean(-1)
    g = float(np.mean(ground))
    return float(((g - lum[where]) / max(g, 1.0)).mean())


def _around(image: Image.Image) -> tuple[Any, Any, Any] | None:
    """(pixels, subject mask, the picture's ground colour) for the readers of what a style draws around the
    subject; None when nothing is painted."""
    import numpy as np

    subject = _subject(image)
    if subject is None:
        return None
    arr = np.asarray(image.convert("RGB"), dtype=float)
    ring = np.concatenate([arr[0], arr[-1], arr[1:-1, 0], arr[1:-1, -1]])
    return arr, subject[0], np.median(ring, axis=0)


def shadow_reader(style: str, offset: int = 2) -> Callable[[Image.Image], float]:
    """A drop shadow: how much darker the ground is just below-right of the subject (where the shadow falls,
    ``offset`` pixels down and right) than just above-left of it (where none falls). A darker ground everywhere,
    or a dark outline all round, reads 0: only the shadow's direction counts."""
    import numpy as np

    def raw(im: Any) -> float | None:
        found = _around(im)
        if found is None:
            return None
        arr, mask, ground = found
        below = np.roll(np.roll(mask, offset, 0), offset, 1) & ~mask
        above = np.roll(np.roll(mask, -offset, 0), -offset, 1) & ~mask
        dark_below, dark_above = _darkness(arr, below, ground), _darkness(arr, above, ground)
        if dark_below is None or dark_above is None:
            return None
        return dark_below - dark_above

    return _calibrated(style, raw)


def outline_reader(style: str, width: int = 2) -> Callable[[Image.Image], float]:
    """A dark outline: the darkness of a ``width``-pixel band around the subject against the picture's ground."""
    from scipy import ndimage

    def raw(im: Any) -> float | None:
        found = _around(im)
        if found is None:
            return None
        arr, mask, ground = found
        band = ndimage.binary_dilation(mask, iterations=width) & ~mask
        return _darkness(arr, band, ground)

    return _calibrated(style, raw)


def gradient_reader(style: str, rows: int = 4) -> Callable[[Image.Image], float]:
    """A ground that changes down the picture: the difference between its top and bottom rows' ground colours
    (medians of the border pixels there), projected on the drawn style's difference."""
    import numpy as np

    def raw(im: Any) -> Any:
        arr = np.asarray(im.convert("RGB"), dtype=float)
        top = np.concatenate([arr[0], arr[:rows, 0], arr[:rows, -1]])
        bottom = np.concatenate([arr[-1], arr[-rows:, 0], arr[-rows:, -1]])
        return np.median(top, axis=0) - np.median(bottom, axis=0)

    line = np.mean([raw(im) for im, _, _ in any_items(style, 48, seed=12345)], axis=0)
    return _calibrated(style, lambda im: float(raw(im) @ line / (line @ line)))


def rings_reader(style: str, period: int = 6) -> Callable[[Image.Image], float]:
    """Concentric bands centred on the subject: the best correlation of the paint's darkness with bands of
    ``period`` pixels around the subject's centre (its area centroid, give or take a pixel), over the bands'
    phases. A flat fill, stripes or dots fixed to the image grid read near 0."""
    import numpy as np

    def raw(im: Any) -> float | None:
        subject = _subject(im)
        if subject is None:
            return None
        mask = subject[0]
        arr = np.asarray(im.convert("RGB"), dtype=float)
        ys, xs = np.nonzero(mask)
        if len(ys) < 12:
            return None
        dark = -arr.mean(-1)[mask]
        dark = dark - dark.mean()
        best = 0.0
        for dy in (-1.0, 0.0, 1.0):
            for dx in (-1.0, 0.0, 1.0):
                r = np.hypot(xs - xs.mean() - dx, ys - ys.mean() - dy)
                for phase in range(period):
                    t = (((r + phase) % period) < period / 2).astype(float)
                    t = t - t.mean()
                    denom = float(np.sqrt((dark**2).sum() * (t**2).sum()))
                    if denom > 0:
                        best = max(best, float((dark * t).sum()) / denom)
        return best

    return _calibrated(style, raw)


def _comic(style: str) -> Callable[[Image.Image], float]:
    """Two parts, each read: the dark outline and the coloured ground; the presence is their mean."""
    outline, ground = outline_reader(style), ground_shift(style)
    return lambda im: 0.5 * (outline(im) + ground(im))


STRUCTURES: dict[str, tuple[str, Callable[[str], Callable[[Image.Image], float]]]] = {
    "shadow": ("structure", shadow_reader),
    "comic": ("structure", _comic),
    "sunset": ("gradient", gradient_reader),
    "rings": ("structure", rings_reader),
}
"""Battery styles that draw something around the subject or across the ground, with their readers."""


def ground_shift(style: str) -> Callable[[Image.Image], float]:
    """How far a picture's ground (the median of its outermost ring of pixels) moved from the plain ground towards
    ``style``'s (0: plain, 1: the style's): the projection on the line between the two colours, less the distance
    off that line (in the line's length)."""
    import numpy as np

    def ground(im: Any) -> Any:
        arr = np.asarray(im.convert("RGB"), dtype=float)
        ring = np.concatenate([arr[0], arr[-1], arr[1:-1, 0], arr[1:-1, -1]])
        return np.median(ring, axis=0)

    plain = np.array(BACKGROUND, dtype=float)
    target = np.mean([ground(im) for im, _, _ in any_items(style, 16, seed=7)], axis=0)
    line = target - plain
    length = float(np.sqrt(line @ line))

    def read(im: Any) -> float:
        moved = ground(im) - plain
        along = float(moved @ line / (line @ line))
        # Off the line counts against it: a ground moved to another colour is not this style's ground (the
        # projection alone read a navy ground as 0.9 of a yellow one).
        off = float(np.linalg.norm(moved - along * line)) / length
        return along - off

    return read
