"""Validation of a study's inputs: everything is checked before anything is created or loaded.

Checks run in order of cost: recipes and config values, device, style folder and prompts,
storage URL, model folder (JSON only), the search space bound to the model's module names, and
an existing study's search-space hash. Each failure is one ``UserError`` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.buckets import plan_buckets
from autolora.config import Config
from autolora.core.checks import check_existing_study, check_storage
from autolora.core.study import StudySpec
from autolora.data import BUILTIN_PROMPTS, builtin_style_folder, load_prompts, load_style_set
from autolora.errors import UserError
from autolora.methods import get
from autolora.methods.textual_inversion import TOKEN
from autolora.models.layers import candidates_from_config
from autolora.models.loading import native_resolution, resolve_device, resolve_dtype, resolve_model, size_factor
from autolora.scoring.objective import load_objective
from autolora.tune.presets import preset_trials, warm_start_trials
from autolora.tune.search import FLOW_ARCHS, load_search_space

if TYPE_CHECKING:
    from autolora.buckets import Bucket
    from autolora.data import StyleSet
    from autolora.models.loading import ModelRef
    from autolora.scoring.objective import Objective
    from autolora.tune.presets import FirstTrial
    from autolora.tune.search import CompiledSpace, SearchSpace


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
    buckets: list[Bucket] = field(default_factory=list)
    """The training sizes in use (``autolora.buckets``); one square for ``data.crop: center``."""
    bucket_of: list[int] = field(default_factory=list)
    """Each style picture's index into ``buckets``."""
    first_trials: list[FirstTrial] = field(default_factory=list)
    """Warm-start configurations, then presets: the first trials of a new study."""

    @property
    def run_dir(self) -> Path:
        return self.config.out_dir.resolve()

    def spec_defaults(self) -> dict[str, Any]:
        """A trial's settings that the config gives when the search space does not."""
        train = self.config.train
        return {
            "batch_size": train.batch_size,
            "min_snr_gamma": train.min_snr_gamma,
            "prior_images": train.prior_images,
        }


def study_spec(plan: Plan) -> StudySpec:
    """The one study of a ``tune`` run."""

    cfg = plan.config
    sampler, startup = cfg.study.sampler, None
    if sampler == "auto":
        sampler, startup = "tpe", auto_startup(cfg.study.trials, len(plan.first_trials))
    side_by_side = cfg.study.workers > 1 or cfg.study.queue_only  # queued trials: any number of workers
    return StudySpec(
        label="tune",
        name=cfg.study_name,
        fingerprint=plan.compiled.fingerprint(),
        directions=plan.objective.directions,
        metric_names=plan.objective.names,
        objective=plan.objective.name,
        space_kind="search space",
        sampler=sampler,
        sampler_startup=startup,
        constant_liar=sampler == "tpe" and side_by_side,
        pruner=cfg.study.pruner,
        pruner_startup_trials=cfg.study.pruner_startup_trials,
        first_trials=[t.params for t in plan.first_trials],
        first_trial_attrs=[t.attrs() for t in plan.first_trials],
    )


RANDOM_START = 40
"""``sampler: auto`` searches at random (after the opening trials) for this many trials, then models with TPE."""


def auto_startup(budget: int, first: int) -> int:
    """TPE's random start for ``sampler: auto``: every trial of a study of up to ``RANDOM_START`` trials, at least
    one after the opening (preset or warm-start) trials.

    Chosen by the replay on the trial table (``python -m benchmarks.replay``, ``docs/replay.md``): at 10, 20, 30
    and 40 trials, random search after the presets under the median pruner matched or beat every TPE start
    tried (a quarter of the budget, this rule's predecessor; optuna's 10; one) on the confirmed value of the export,
    by +0.02 to +0.04 on the wide table, with the pixel truth within 0.01 and fewer training steps (the pruner
    stops more of its trials). Past 40 trials the table cannot tell (random search has seen most of its 50
    configurations by then), so TPE models from the 41st trial on."""
    return max(first + 1, min(budget, RANDOM_START))


def make_plan(config: Config) -> Plan:
    """Validate every input in order of cost; raise ``UserError`` on the first bad one."""

    if config.study.search_space:
        space, space_text = load_search_space(config.study.search_space)
    objective, objective_text = load_objective(config.study.objective)
    device = resolve_device(config.model.device)
    resolve_dtype(config.model.mixed_precision, device)
    used = {m for t in objective.targets for m in t.terms} | {c.metric for c in objective.constraints}
    readers = {"style_intro": ("eval.intro_style", config.eval.intro_style), "style_csd": ("eval.style_model",
               config.eval.style_model)}  # fmt: skip
    for term, (key, on) in readers.items():
        if term in used and not on:
            raise UserError(f"objective {objective.name} scores {term}, which needs {key} (it is off)")
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
    config.eval.resolve_guidance(model.arch)
    if not config.study.search_space:
        # No space named: the quick one for UNets, the family's own for a transformer (quick's groups are UNet's).
        space, space_text = load_search_space(model.arch if model.arch in FLOW_ARCHS else "quick")
    compiled = space.compile(candidates_from_config(model.denoiser_config, model.denoiser_class), model.arch)
    _check_identifier(config, compiled)
    _check_prior_captions(space, style)
    resolution = config.data.resolution or native_resolution(model)
    factor = size_factor(model)
    if resolution % factor and config.data.crop == "center":
        raise UserError(
            f"data.resolution {resolution}: a {model.arch} model needs a multiple of {factor} px "
            f"(its VAE factor times its {'patch' if model.arch in FLOW_ARCHS else 'downsampling'})"
        )
    buckets, bucket_of = plan_buckets([im.size for im in style.images], resolution, factor, config.data.crop)
    first = first_trials(config, model.source, model.arch, compiled)
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
        buckets=buckets,
        bucket_of=bucket_of,
        first_trials=first,
    )
    check_existing_study(config.storage_url, study_spec(plan))
    return plan


def _check_identifier(config: Config, compiled: CompiledSpace) -> None:
    """A space that can learn tokens needs the trigger's word they stand for (or none: the whole trigger)."""

    data = config.data
    learners = [m for m in compiled.methods() if get(m).learns_tokens]
    if learners and data.identifier and get(learners[0]).spelled_trigger(data.trigger, data.identifier) == TOKEN:
        raise UserError(
            f"data.identifier {data.identifier!r}: not a word of data.trigger {data.trigger!r}, where {learners[0]} "
            "writes its tokens (the rest of the trigger kept): set it to the trigger's rare word "
            "(--identifier WORD), or to '' to replace the whole trigger"
        )


def _check_prior_captions(space: SearchSpace, style: StyleSet) -> None:
    """``prior_prompts: captions`` draws each style picture's caption: every picture needs one."""
    if "captions" not in space._values("prior_prompts"):
        return
    missing = [n for n, c in zip(style.names, style.captions, strict=True) if not c]
    if missing:
        raise UserError(
            f"params.prior_prompts: captions draws the prior from the style pictures' captions; {len(missing)} of "
            f"{len(style.names)} pictures in {style.folder} have none ({missing[0]}): add a name.txt caption beside "
            "each, or use prior_prompts: class"
        )


def first_trials(config: Config, base_model: str, arch: str, compiled: CompiledSpace) -> list[FirstTrial]:
    """A warm start's configurations, then the presets, without repeats (enqueued only when the study is new)."""

    found = []
    if config.study.warm_start:
        found += warm_start_trials(config.study.warm_start, config.storage_url, base_model, compiled)
    found += preset_trials(config.study.presets, compiled, arch)
    out: list[FirstTrial] = []
    for t in found:
        if all(t.params != o.params for o in out):
            out.append(t)
    return out


def _aligned_eval_every(compiled: CompiledSpace) -> int:
    """Half the fewest steps a trial can have: every trial reports at the same steps (2 or more times). The replay
    on the trial table (``docs/replay.md``) kept it: rungs at the fewest steps trained 600-3,300 more steps in 40
    trials for no better export."""
    import math

    dist = compiled.distributions.get("steps")
    fewest = getattr(dist, "low", None) or compiled.fixed.get("steps") or 100
    return max(1, math.ceil(int(fewest) / 2))
