"""Validation of a fusion run's inputs: everything is checked before any model loads or anything is created.

In order of cost: config values and the objective recipe, device, base model (JSON only), every LoRA file
(header only: readable, a LoRA, made for this base model's cross-attention width), style folders, prompts and
the storage URL. Each failure is one ``UserError`` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autolora.core.checks import check_storage
from autolora.data import BUILTIN_PROMPTS, builtin_style_folder, load_prompts, load_style_set
from autolora.errors import UserError
from autolora.fuse.config import FuseRunConfig
from autolora.loras.files import check_lora_file, lora_target
from autolora.models.builtin import is_builtin
from autolora.models.loading import native_resolution, resolve_device, resolve_dtype, resolve_model
from autolora.scoring.objective import load_objective

if TYPE_CHECKING:
    from autolora.data import StyleSet
    from autolora.models.loading import ModelRef
    from autolora.scoring.objective import Objective


@dataclass
class FusePlan:
    """Every input of a fusion run, validated."""

    config: FuseRunConfig
    model: ModelRef
    loras: list[tuple[str, Path]]
    """(name, file) per LoRA."""
    styles: dict[str, StyleSet]
    """LoRA name -> the references its style is scored against."""
    prompts: list[str]
    objective: Objective
    objective_text: str
    device: str
    resolution: int
    clip: tuple[str, str | None]
    sampler: str
    """The Optuna sampler, ``auto`` resolved."""

    @property
    def run_dir(self) -> Path:
        return self.config.out_dir.resolve()

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.loras]


def resolve_sampler(name: str, scalar: bool, objective: str) -> str:
    """``auto`` -> CMA-ES (scalar) or TPE (Pareto); CMA-ES with a Pareto objective is refused."""
    if name == "auto":
        return "cmaes" if scalar else "tpe"
    if name == "cmaes" and not scalar:
        raise UserError(f"fuse.sampler cmaes: single-objective only; objective {objective} is a Pareto one (use tpe)")
    return name


def make_fuse_plan(config: FuseRunConfig) -> FusePlan:
    """Validate every input in order of cost; raise ``UserError`` on the first bad one."""

    fuse = config.fuse
    objective, objective_text = load_objective(fuse.objective, scorer="fusion")
    sampler = resolve_sampler(fuse.sampler, objective.is_scalar, objective.name)
    device = resolve_device(config.model.device)
    resolve_dtype(config.model.mixed_precision, device)
    model = resolve_model(config.model.base_model, config.model.allow_pickle)
    config.eval.resolve_guidance(model.arch)
    width, components = lora_target(model)
    loras = fuse.entries()
    for _, path in loras:
        check_lora_file(path, width, components)
    folders = fuse.style_folders()
    styles = {}
    for name, _ in loras:
        if name in folders:
            styles[name] = load_style_set(folders[name])
        elif is_builtin(model.source):
            styles[name] = load_style_set(builtin_style_folder())
        else:
            raise UserError(f"LoRA {name}: no style images to score it against; add --style-images-for {name}=DIR")
    prompts = load_prompts(Path(config.data.prompts)) if config.data.prompts else list(BUILTIN_PROMPTS)
    check_storage(config.storage_url, config.out_dir.resolve())
    clip = objective.resolve_clip(model.source, config.eval.clip_model, config.eval.clip_pretrained)
    resolution = config.data.resolution or native_resolution(model)
    return FusePlan(config, model, loras, styles, prompts, objective, objective_text, device, resolution, clip, sampler)
