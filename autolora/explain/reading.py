"""What a map is made of: readings per seed, and the per-group arithmetic (style shares, content costs).

Every sampling pass draws the same prompts x seeds; a ``Reading`` keeps each metric's mean over the prompts for
each seed, so every figure has a spread over seeds. A group's style is read twice: *alone* (only that group on:
what it carries by itself) and *without* (everything but it: what the LoRA loses without it). Blocks interact, so
the two need not agree; the share reported is their mean, each normalised over the groups. A group's content cost
is the base model's content reading minus the reading with that group alone, in points (x 100): what it costs the
subject by itself.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

COST_FLOOR = 1.0
"""Content costs under this many points count as none when the pruned LoRA is chosen (the judge's noise on the same
samples is of that order; a real cost is not)."""


@dataclass(frozen=True)
class Reading:
    """Metric -> its mean over the prompts, one value per seed."""

    per_seed: dict[str, list[float]]

    @classmethod
    def of(cls, each: dict[str, list[float]], n_seeds: int) -> Reading:
        """From per-sample metrics in prompt-major order (``ClipStyleContentScorer.score_each``)."""
        out = {}
        for metric, values in each.items():
            n_prompts = len(values) // n_seeds
            out[metric] = [statistics.fmean(values[p * n_seeds + s] for p in range(n_prompts)) for s in range(n_seeds)]
        return cls(out)

    def mean(self, metric: str) -> float:
        return statistics.fmean(self.per_seed[metric])

    def sd(self, metric: str) -> float:
        values = self.per_seed[metric]
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def to_dict(self, metrics: list[str]) -> dict[str, Any]:
        return {m: {"mean": self.mean(m), "sd": self.sd(m), "per_seed": self.per_seed[m]} for m in metrics}


@dataclass
class GroupReading:
    key: str
    alone: Reading
    without: Reading


@dataclass
class StyleMap:
    """One LoRA's map: the base model, the whole LoRA, and each group alone and without."""

    granularity: str
    style_metric: str
    content_metrics: list[str]
    base: Reading
    full: Reading
    groups: list[GroupReading]
    references: str
    """``style images`` (the user's) or ``own samples`` (the LoRA's full-strength samples on other seeds)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return [g.key for g in self.groups]

    def style_full(self) -> float:
        return self.full.mean(self.style_metric) - self.base.mean(self.style_metric)

    def _alone(self, g: GroupReading) -> float:
        return g.alone.mean(self.style_metric) - self.base.mean(self.style_metric)

    def _drop(self, g: GroupReading) -> float:
        return self.full.mean(self.style_metric) - g.without.mean(self.style_metric)

    def shares(self) -> dict[str, float]:
        """Group -> its share of the style: the mean of its normalised style alone and its normalised loss when
        left out (negative readings count as 0). Sums to 1 when any group shows style; all 0 when none does."""
        alone = _normalised({g.key: max(self._alone(g), 0.0) for g in self.groups})
        drop = _normalised({g.key: max(self._drop(g), 0.0) for g in self.groups})
        views = [v for v in (alone, drop) if any(v.values())]
        return {k: statistics.fmean(v[k] for v in views) if views else 0.0 for k in self.keys}

    def cost(self, key: str, metric: str) -> tuple[float, float]:
        """What group ``key`` alone costs content reading ``metric``, in points: mean and sd over seeds."""
        g = next(g for g in self.groups if g.key == key)
        diffs = [100 * (b - a) for b, a in zip(self.base.per_seed[metric], g.alone.per_seed[metric], strict=True)]
        return statistics.fmean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0

    def full_cost(self, metric: str) -> float:
        return 100 * (self.base.mean(metric) - self.full.mean(metric))

    def cost_shares(self) -> dict[str, float]:
        """Group -> its share of the content cost of all groups alone (``worst_cost``); all 0 when no group costs
        anything."""
        return _normalised({k: self.worst_cost(k) for k in self.keys})

    def worst_cost(self, key: str) -> float:
        """Group ``key``'s largest content cost alone over the content readings, in points; 0 unless it is at least
        ``COST_FLOOR`` and above its own spread over seeds (two seeds' noise is not a cost)."""
        costs = [self.cost(key, m) for m in self.content_metrics]
        real = [mean for mean, sd in costs if mean >= COST_FLOOR and mean > sd]
        return max(real, default=0.0)

    def rows(self) -> list[dict[str, Any]]:
        """One row per group: style alone/without (mean, sd), share, content cost per metric."""
        shares = self.shares()
        out = []
        for g in self.groups:
            alone = [
                v - b
                for v, b in zip(g.alone.per_seed[self.style_metric], self.base.per_seed[self.style_metric], strict=True)
            ]
            drop = [
                f - w
                for f, w in zip(
                    self.full.per_seed[self.style_metric], g.without.per_seed[self.style_metric], strict=True
                )
            ]
            out.append(
                {
                    "group": g.key,
                    "share": shares[g.key],
                    "style_alone": statistics.fmean(alone),
                    "style_alone_sd": statistics.stdev(alone) if len(alone) > 1 else 0.0,
                    "style_drop": statistics.fmean(drop),
                    "style_drop_sd": statistics.stdev(drop) if len(drop) > 1 else 0.0,
                    "worst_cost": self.worst_cost(g.key),
                    "content_cost": {
                        m: dict(zip(("mean", "sd"), self.cost(g.key, m), strict=True)) for m in self.content_metrics
                    },
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        metrics = [self.style_metric, *self.content_metrics]
        return {
            "granularity": self.granularity,
            "style_metric": self.style_metric,
            "content_metrics": self.content_metrics,
            "references": self.references,
            "seeds": len(self.base.per_seed[self.style_metric]),
            "base": self.base.to_dict(metrics),
            "full": self.full.to_dict(metrics),
            "style_full": self.style_full(),
            "content_cost_full": {m: self.full_cost(m) for m in self.content_metrics},
            "groups": self.rows(),
            **self.extra,
        }


def _normalised(values: dict[str, float]) -> dict[str, float]:
    total = sum(values.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in values.items()}
