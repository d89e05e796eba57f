"""Validation of a study's inputs: everything is checked before anything is created or loaded.

Checks run in order of cost: recipes and config values, device, style folder and prompts,
storage URL, model folder (JSON only), the search space bound to the model's module names, and
an existing study's search-space hash. Each failure is one ``UserError`` line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autolora.config import Config
from autolora.errors import UserError

if TYPE_CHECKING:
    from autolora.data import StyleSet
    from autolora.models.loading import ModelRef
    from autolora.scoring.objective import Objective
    from autolora.search import CompiledSpace, SearchSpace

ATTR = "autolora."


@dataclass
class Plan:
    """Every input of a study, validated, before anything is created or loaded."""

    config: Config
    model: ModelRef
    space: SearchSpace
    space_text: str
    compiled: CompiledSpace
    objective: Objective
    objective_text: str
    style: StyleSet
    prompts: list[str]
    device: str
    resolution: int
    clip: tuple[str, str | None]
    eval_every: int = 1
    """Steps between evaluations, the same for every trial so the pruner compares like with like."""

    @property
    def run_dir(self) -> Path:
        return self.config.out_dir.resolve()


def check_storage(url: str, default_in: Path | None) -> None:
    """Refuse a storage URL that cannot be opened, without creating a study in it."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if path.parent != default_in and not path.parent.is_dir():
            raise UserError(f"storage {url}: folder {path.parent} does not exist")
        return
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as e:
        raise UserError(
            f"storage {url}: cannot be opened ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        ) from None


def _check_existing(plan: Plan) -> None:
    """A study under this name must have been made with the same search space and objective."""
    check_existing_study(
        plan.config.storage_url,
        plan.config.study_name,
        plan.compiled.fingerprint(),
        plan.objective.directions,
        plan.objective.name,
        "search space",
    )


def check_existing_study(
    url: str, name: str, fingerprint: str, directions: list[str], objective: str, what: str
) -> None:
    """Refuse to add to study ``name`` in ``url`` if it was made with another ``what`` or other directions."""
    import optuna

    from autolora.storage import with_retries

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return
    storage = with_retries(lambda: optuna.storages.RDBStorage(url))
    try:
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            return
        attrs = storage.get_study_user_attrs(study_id)
        stored = attrs.get(ATTR + "search_space_hash")
        if stored and stored != fingerprint:
            raise UserError(
                f"study '{name}' in {url} was made with a different {what} "
                f"(hash {stored}, now {fingerprint}); mixing them would corrupt the study: "
                f"use a new --study-name or the original {what}"
            )
        stored_directions = attrs.get(ATTR + "directions")
        if stored_directions and stored_directions != directions:
            raise UserError(
                f"study '{name}' optimises {stored_directions}; objective "
                f"{objective} has {directions}: use a new --study-name"
            )
    finally:
        storage.remove_session()
        storage.engine.dispose()


def make_plan(config: Config) -> Plan:
    """Validate every input in order of cost; raise ``UserError`` on the first bad one."""
    from autolora.data import BUILTIN_PROMPTS, builtin_style_folder, load_prompts, load_style_set
    from autolora.models.layers import unet_candidates_from_config
    from autolora.models.loading import resolve_device, resolve_dtype, resolve_model
    from autolora.scoring.objective import load_objective
    from autolora.search import load_search_space

    space, space_text = load_search_space(config.study.search_space)
    objective, objective_text = load_objective(config.study.objective)
    device = resolve_device(config.model.device)
    resolve_dtype(config.model.mixed_precision, device)
    if not objective.is_scalar and config.study.sampler == "cmaes":
        raise UserError(
            f"study.sampler cmaes: single-objective only; objective {objective.name} has "
            f"{len(objective.targets)} objectives (use tpe, nsga2, random or gp)"
        )
    style_folder = Path(config.data.style_images) if config.data.style_images else builtin_style_folder()
    style = load_style_set(style_folder)
    prompts = load_prompts(Path(config.data.prompts)) if config.data.prompts else list(BUILTIN_PROMPTS)
    check_storage(config.storage_url, config.out_dir.resolve())
    model = resolve_model(config.model.base_model, config.model.allow_pickle)
    compiled = space.compile(unet_candidates_from_config(model.unet_config), model.arch)
    resolution = config.data.resolution or native_resolution(model)
    clip = objective.resolve_clip(model.source, config.eval.clip_model, config.eval.clip_pretrained)
    plan = Plan(
        config,
        model,
        space,
        space_text,
        compiled,
        objective,
        objective_text,
        style,
        prompts,
        device,
        resolution,
        clip,
        eval_every=config.train.eval_every or _aligned_eval_every(compiled),
    )
    _check_existing(plan)
    return plan


def native_resolution(model: ModelRef) -> int:
    """The model's own sample size in pixels (UNet sample size times the VAE's downscaling), from JSON only."""
    sample_size = int(model.unet_config.get("sample_size", 64))
    factor = 8
    vae_cfg = model.folder / "vae" / "config.json"
    if vae_cfg.is_file():
        factor = 2 ** (len(json.loads(vae_cfg.read_text()).get("block_out_channels", [0] * 4)) - 1)
    return sample_size * factor


def _aligned_eval_every(compiled: CompiledSpace) -> int:
    """Half the fewest steps a trial can have: every trial reports at the same steps (2 or more times)."""
    import math

    dist = compiled.distributions.get("steps")
    fewest = getattr(dist, "low", None) or compiled.fixed.get("steps") or 100
    return max(1, math.ceil(int(fewest) / 2))
