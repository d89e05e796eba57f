"""The ``autolora explain`` run: the ``explain`` section, and the run config that adds it to the shared sections.

``model``, ``data`` (``style_images``, ``prompts``, ``trigger``, ``prompt_template``, ``resolution``), ``eval``
(``seeds``, ``inference_steps``, the judge) and ``study`` (``out``, ``mlflow_uri``, ``objective``: its style term
and content floors) mean what they mean for ``tune``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autolora.config import RunConfig, _check

EXPLAIN_GRANULARITIES = ("block", "layer")
RANKS = ("auto", "full")


@dataclass
class ExplainSection:
    """Which LoRA, at which granularity, and whether to write a smaller one."""

    lora: str = ""
    """The LoRA file (diffusers/PEFT or kohya/A1111/ComfyUI ``.safetensors``)."""
    granularity: str = "block"
    """``block`` (``down.N``, ``mid``, ``up.N``, each text encoder; DiT: ``double.N``, ``single.N``) or ``layer``
    (per transformer unit)."""
    prune: bool = False
    """Also write a smaller LoRA: the groups that carry the style, each layer at the rank that holds ``energy`` of
    its delta (``rank``), checked by sampling before it is written."""
    rank: str = "auto"
    """Pruned LoRA's ranks: ``auto`` (per layer, the fewest directions holding ``energy`` of its delta) or ``full``."""
    energy: float = 0.99
    """Share of a layer's delta (squared singular values) that ``rank: auto`` keeps."""
    min_share: float = 0.05
    """A group carrying less than this share of the style is dropped from the pruned LoRA."""
    keep_style: float = 0.9
    """The pruned LoRA must keep this share of the full LoRA's style (groups are added back, most style first,
    until it does)."""

    def validate(self, where: str) -> None:
        _check(bool(self.lora), f"{where}.lora", "a LoRA file", self.lora)
        _check(
            self.granularity in EXPLAIN_GRANULARITIES,
            f"{where}.granularity",
            "|".join(EXPLAIN_GRANULARITIES),
            self.granularity,
        )
        _check(self.rank in RANKS, f"{where}.rank", "|".join(RANKS), self.rank)
        _check(0 < self.energy <= 1, f"{where}.energy", "a share in (0, 1]", self.energy)
        _check(0 <= self.min_share < 1, f"{where}.min_share", "a share in [0, 1)", self.min_share)
        _check(0 < self.keep_style <= 1, f"{where}.keep_style", "a share in (0, 1]", self.keep_style)


@dataclass
class ExplainRunConfig(RunConfig):
    """A whole ``autolora explain`` run: the shared sections and ``explain``."""

    explain: ExplainSection = field(default_factory=ExplainSection)

    path_keys = RunConfig.path_keys | {("explain", "lora")}

    @property
    def study_name(self) -> str:
        return self.study.name or f"explain-{Path(self.explain.lora).stem}"
