"""Aspect-ratio buckets: pictures keep their shape instead of losing their edges to a centre square.

As kohya sd-scripts, OneTrainer and SimpleTuner do it: a set of training sizes of about the same area as the
model's square resolution (never more), both sides multiples of the model's size factor (VAE factor times the
UNet's downsampling or the transformer's patch), aspect ratios up to ``MAX_ASPECT`` (2.5, about kohya's default
range of 256-1024 px sides at 512). Each picture goes to the bucket whose aspect ratio is closest to its own,
is scaled to cover it and centre-cropped to it (only the sliver the rounding leaves), and a batch is drawn
within one bucket. ``data.crop: center`` keeps the old behaviour: every picture's centre square.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_ASPECT = 2.5


@dataclass(frozen=True)
class Bucket:
    """A training size in pixels."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def make_buckets(resolution: int, factor: int, max_aspect: float = MAX_ASPECT) -> list[Bucket]:
    """Every bucket for ``resolution`` (square area) and ``factor``, tallest first; the square always in."""
    area = resolution * resolution
    found = {Bucket(resolution, resolution)} if resolution % factor == 0 else set()
    width = factor
    while width <= resolution * max_aspect:
        height = (area // width) // factor * factor  # the largest height of at most the square's area
        if 0 < height <= width and width / height <= max_aspect + 1e-9:
            found |= {Bucket(width, height), Bucket(height, width)}  # landscape and its portrait twin
        width += factor
    return sorted(found, key=lambda b: (b.width / b.height, -b.width * b.height))


def assign(size: tuple[int, int], buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is closest to that of a ``(width, height)`` picture (larger area on ties)."""
    w, h = size
    target = math.log(w / h)
    return min(buckets, key=lambda b: (abs(math.log(b.width / b.height) - target), -b.width * b.height))


def crop_loss(size: tuple[int, int], bucket: Bucket) -> float:
    """The share of the picture's area the cover-scale-and-crop into ``bucket`` drops."""
    w, h = size
    scale = max(bucket.width / w, bucket.height / h)
    return max(0.0, 1.0 - (bucket.width * bucket.height) / (w * scale * h * scale))


def square(resolution: int) -> Bucket:
    return Bucket(resolution, resolution)


def plan_buckets(
    sizes: Sequence[tuple[int, int]], resolution: int, factor: int, mode: str
) -> tuple[list[Bucket], list[int]]:
    """The buckets in use and each picture's bucket index; ``mode`` ``center`` gives one square bucket."""
    if mode == "center":
        return [square(resolution)], [0] * len(sizes)
    candidates = make_buckets(resolution, factor)
    chosen = [assign(s, candidates) for s in sizes]
    used = sorted(set(chosen), key=lambda b: (b.width / b.height, b.width))
    return used, [used.index(b) for b in chosen]
