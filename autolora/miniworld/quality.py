"""Measurements of the miniworld models against ground truth, shared by ``benchmarks/miniworld_quality.py`` and
the tests (which run them on small samples).

- ``judge_accuracy``: zero-shot shape / colour / style accuracy of a CLIP judge on fresh draws.
- ``content_truth``: whether pictures show the shape and colour their prompt asks for, read by the judge and
  by ``truth.read_content`` (no CLIP).
- ``spearman``: rank correlation, for the objective-validity sweep.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autolora.miniworld.battery import BATTERY, battery_items
from autolora.miniworld.judge import classify
from autolora.miniworld.truth import read_content
from autolora.miniworld.world import STYLES, sample_items
from autolora.models.miniworld import SIZE
from autolora.models.roundtrip import round_trip_psnr

if TYPE_CHECKING:
    from PIL import Image

_PROMPT = re.compile(r"^a (\w+) (\w+)")


def judge_accuracy(judge: Any, n: int, seed: int = 424242) -> dict[str, float]:
    """Accuracy per attribute on ``n`` fresh draws over every style (the training draws use other seeds)."""

    items = sample_items(n, seed=seed)
    got = classify(judge.embed_images, judge.embed_texts, [im for im, _ in items])
    out = {}
    for k, what in enumerate(("shape", "colour", "style")):
        truth = [(it.shape, it.colour, it.style)[k] for _, it in items]
        out[what] = sum(g[k] == t for g, t in zip(got, truth, strict=True)) / n
    return out


def prompt_content(prompt: str) -> tuple[str, str]:
    """(shape, colour) a miniworld prompt asks for: ``a red circle ...`` -> (circle, red)."""
    m = _PROMPT.match(prompt)
    if not m:
        raise ValueError(f"not a miniworld prompt: {prompt!r} (expected 'a COLOUR SHAPE ...')")
    return m.group(2), m.group(1)


def content_truth(judge: Any, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, list[bool]]:
    """Per picture: is the prompt's shape / colour / both right, by the judge and by the pixel check."""

    wanted = [prompt_content(p) for p in prompts]
    by_judge = classify(judge.embed_images, judge.embed_texts, list(images))
    by_pixels = [read_content(im) for im in images]
    out: dict[str, list[bool]] = {}
    for name, got in (("judge", [(g[0], g[1]) for g in by_judge]), ("pixels", by_pixels)):
        out[f"{name}.shape"] = [g[0] == w[0] for g, w in zip(got, wanted, strict=True)]
        out[f"{name}.colour"] = [g[1] == w[1] for g, w in zip(got, wanted, strict=True)]
        out[f"{name}.both"] = [g == w for g, w in zip(got, wanted, strict=True)]
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (nan when either side is constant)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def battery_figures(
    vae: Any, embed_images: Any, embed_texts: Any, n: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per style (the vocabulary's, then the held-out battery's): the VAE round trip (median and 10th percentile,
    dB) and the judge's zero-shot shape and colour accuracy on ``n`` fresh pictures."""
    import statistics

    sets: dict[str, list[tuple[Any, str, str]]] = {
        style: [(im, it.shape, it.colour) for im, it in sample_items(n, style=style, seed=seed)] for style in STYLES
    }
    sets.update({style: battery_items(style, n, seed=seed) for style in BATTERY})
    out = {}
    for style, items in sets.items():
        images = [im for im, _, _ in items]
        psnrs = sorted(round_trip_psnr(vae, images, SIZE))
        got = classify(embed_images, embed_texts, images)
        out[style] = {
            "vocabulary": float(style in STYLES),
            "psnr_median": round(statistics.median(psnrs), 2),
            "psnr_p10": round(psnrs[len(psnrs) // 10], 2),
            "shape": round(sum(g[0] == s for g, (_, s, _) in zip(got, items, strict=True)) / len(items), 3),
            "colour": round(sum(g[1] == c for g, (_, _, c) in zip(got, items, strict=True)) / len(items), 3),
        }
    return out
