"""Validation of an explain run's inputs: everything is checked before any model loads or anything is written.

In order of cost: config values and the objective recipe, device, base model (JSON only), the LoRA file (header
only: readable, a LoRA, made for this base model's cross-attention width), the style folder (when given) and the
prompts. Each failure is one ``UserError`` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autolora.data import BUILTIN_PROMPTS, load_prompts, load_style_set
from autolora.errors import UserError
from autolora.explain.config import ExplainRunConfig
from autolora.loras.files import check_lora_file, lora_target
from autolora.models.loading import native_resolution, resolve_device, resolve_dtype, resolve_model
from autolora.scoring.objective import load_objective

if TYPE_CHECKING:
    from autolora.data import StyleSet
    from autolora.models.loading import ModelRef
    from autolora.scoring.objective import Objective


@dataclass
class ExplainPlan:
    """Every input of an explain run, validated."""

    config: ExplainRunConfig
    model: ModelRef
    lora: Path
    style: StyleSet | None
    """The references; None: the LoRA's own full-strength samples stand in for them."""
    prompts: list[str]
    objective: Objective
    device: str
    resolution: int
    clip: tuple[str, str | None]

    @property
    def out_dir(self) -> Path:
        return self.config.out_dir.resolve()

    @property
    def style_metric(self) -> str:
        """The recipe's style term (``style_auto`` for ``style: auto``)."""
        style = self.objective.style or "style_gain"
        return "style_auto" if style == "auto" else style

    @property
    def content_metrics(self) -> list[str]:
        """The metrics the recipe's content floors read (the subject kept), in the recipe's order."""
        found = [c.metric for c in self.objective.constraints if c.metric.startswith("content_")]
        return list(dict.fromkeys(found)) or ["content_text_ratio"]


def make_explain_plan(config: ExplainRunConfig) -> ExplainPlan:
    """Validate every input in order of cost; raise ``UserError`` on the first bad one."""

    objective, _ = load_objective(config.study.objective)
    device = resolve_device(config.model.device)
    resolve_dtype(config.model.mixed_precision, device)
    model = resolve_model(config.model.base_model, config.model.allow_pickle)
    config.eval.resolve_guidance(model.arch)
    lora = Path(config.explain.lora)
    check_lora_file(lora, *lora_target(model))  # a LyCORIS file loads as its exact LoRA (``loras.engine``)
    style = load_style_set(Path(config.data.style_images)) if config.data.style_images else None
    prompts = load_prompts(Path(config.data.prompts)) if config.data.prompts else list(BUILTIN_PROMPTS)
    out = config.out_dir.resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    clip = objective.resolve_clip(model.source, config.eval.clip_model, config.eval.clip_pretrained)
    resolution = config.data.resolution or native_resolution(model)
    return ExplainPlan(config, model, lora, style, prompts, objective, device, resolution, clip)
