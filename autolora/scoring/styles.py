"""Several styles at once: each style's fidelity against its own references, plus content preservation.

For ``autolora fuse``. With styles ``s`` (one per LoRA) and the metrics of ``autolora.scoring.clip``:

- ``style_fidelity.<s>``, ``style_base.<s>``, ``style_gain.<s>``: the single-style metrics against style ``s``'s
  reference centroid (``style_gain.<s>`` = fidelity minus the base model's own fidelity to ``s``);
- ``style_gain_min``: the smallest ``style_gain.<s>``. A blend that drops one style has that style's gain near
  0 (or below), so its minimum is low however strong the other styles are: the aggregate a fusion should raise;
- ``style_gain_mean``: the mean of the gains (rewards a strong blend that may neglect one style);
- ``style_fidelity_min``: the smallest ``style_fidelity.<s>``;
- ``content_text``, ``content_text_delta``, ``content_text_ratio``, ``content_base``: as for ``tune`` (the ratio is
  the content constraint's metric).

Samples are embedded once per call, whatever the number of styles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from autolora.scoring.clip import ClipJudge


class MultiStyleScorer:
    """Per-style fidelity and the aggregates above, from one CLIP judge."""

    metrics = (
        "style_gain_min",
        "style_gain_mean",
        "style_fidelity_min",
        "content_text",
        "content_text_delta",
        "content_text_ratio",
        "content_base",
    )
    """The metrics an objective recipe may name (per-style metrics are logged, not named in recipes)."""

    def __init__(self, judge: ClipJudge) -> None:
        self.judge = judge
        self._ready: dict[str, Any] = {}

    def prepare(
        self,
        references: Mapping[str, list[Image.Image]],
        prompts: list[str],
        n_seeds: int,
        base_samples: list[Image.Image],
    ) -> None:
        """Called once per study: each style's references, the prompts and the base model's samples."""
        import torch

        normalize = torch.nn.functional.normalize
        centroids = {s: normalize(self.judge.embed_images(refs).mean(0), dim=-1) for s, refs in references.items()}
        text = self.judge.embed_texts(prompts).repeat_interleave(n_seeds, dim=0)
        base = self.judge.embed_images(base_samples)
        self._ready = {
            "centroids": centroids,
            "text": text,
            "base": base,
            "style_base": {s: float((base @ c).mean()) for s, c in centroids.items()},
            "content_text_base": float((base * text).sum(-1).mean()),
        }

    def score(self, samples: list[Image.Image]) -> dict[str, float]:
        """Metrics of one sampling pass (prompt-major, matching the base samples one to one)."""
        return self.score_and_each(samples)[0]

    def score_and_each(self, samples: list[Image.Image]) -> tuple[dict[str, float], dict[str, list[float]]]:
        """The metrics of ``score`` and, from the same embeddings, each sample's ``style_gain.<s>`` and
        ``content_text_delta`` (prompt-major: ``explain.reading.Reading.of`` makes them per-seed readings)."""
        if not self._ready:
            raise RuntimeError("MultiStyleScorer.score called before prepare")
        r = self._ready
        emb = self.judge.embed_images(samples)
        if emb.shape != r["base"].shape:
            raise ValueError(f"expected {r['base'].shape[0]} samples, got {emb.shape[0]}")
        out: dict[str, float] = {}
        each: dict[str, list[float]] = {}
        for style, centroid in r["centroids"].items():
            per_sample = emb @ centroid
            fidelity = float(per_sample.mean())
            out[f"style_fidelity.{style}"] = fidelity
            out[f"style_base.{style}"] = r["style_base"][style]
            out[f"style_gain.{style}"] = fidelity - r["style_base"][style]
            each[f"style_gain.{style}"] = (per_sample - r["style_base"][style]).tolist()
        gains = [out[f"style_gain.{s}"] for s in r["centroids"]]
        text_each = (emb * r["text"]).sum(-1)
        content_text = float(text_each.mean())
        each["content_text_delta"] = (text_each - r["content_text_base"]).tolist()
        out.update(
            style_gain_min=min(gains),
            style_gain_mean=sum(gains) / len(gains),
            style_fidelity_min=min(out[f"style_fidelity.{s}"] for s in r["centroids"]),
            content_text=content_text,
            content_text_delta=content_text - r["content_text_base"],
            content_text_ratio=content_text / max(r["content_text_base"], 1e-6),
            content_base=float((emb * r["base"]).sum(-1).mean()),
        )
        return out, each
