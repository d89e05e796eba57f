"""The scorer extension point: samples in, named metrics out.

A scorer knows nothing of training. The study calls ``prepare`` once (style references, the
evaluation prompts and the base model's own samples for the same prompts and seeds), then
``score`` for every evaluation of every trial. Samples always come prompt-major:
``[(p0, s0), (p0, s1), ..., (p1, s0), ...]`` for prompts ``p`` and seeds ``s``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


class Scorer(ABC):
    """Turns a trial's samples into metrics (higher is not necessarily better: recipes decide)."""

    metrics: tuple[str, ...] = ()
    """Names of the metrics ``score`` returns."""

    @abstractmethod
    def prepare(
        self, references: list[Image.Image], prompts: list[str], n_seeds: int, base_samples: list[Image.Image]
    ) -> None:
        """Called once per study, before the first trial, with what every trial is compared to."""

    @abstractmethod
    def score(self, samples: list[Image.Image]) -> dict[str, float]:
        """Called after every evaluation pass; ``samples`` matches ``base_samples`` one to one."""
