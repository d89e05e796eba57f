"""The first trials of a new study: community presets and the best of an earlier study (warm start).

A study that starts from what people already use can never end worse than it (its presets are trials like any
other), and the sampler learns from them at once. The presets are the trainers' defaults autolora ships as fixed
search spaces: ``diffusers-default`` (diffusers' LoRA script: rank 4, alpha 4, lr 1e-4, attention q/k/v/out) and
``kohya-like`` (rank 32, alpha 16, attention + feed-forward + proj). Both are UNet presets; SD3 and Flux studies
start from none unless given.

A preset is a point of its own space; a study runs it in the study's space, so each value is projected onto it:
a number outside a range is clipped to the range, a choice missing from the space becomes the nearest one (most
modules in common for the targets), and every change is said in the trial's ``autolora.preset`` attribute. A
point outside the space would be refused by a categorical distribution and distort the sampler's model of a range.

``--warm-start RUN_DIR_OR_STUDY`` enqueues the best configurations of an earlier study on the same base model
(its confirmed best first, each with the steps of its best rung): a new style starts from what worked on the
last one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.core.feasible import best, candidates
from autolora.core.reading import find_study
from autolora.core.study import ATTR
from autolora.errors import UserError
from autolora.models.layers import select_modules
from autolora.tune.search import FLOW_ARCHS, PARAMS, TARGET_KEYS, decode_target, load_search_space

if TYPE_CHECKING:
    from autolora.tune.search import CompiledSpace, SearchSpace

UNET_PRESETS = ("diffusers-default", "kohya-like")
PRESET_ATTR = "autolora.preset"
"""Trial user attribute (and MLflow tag) of a first trial: where it came from and what the projection changed."""
WARM_START_TOP = 3
"""How many of an earlier study's best configurations a warm start enqueues."""


@dataclass
class FirstTrial:
    """A configuration enqueued when the study is new, and where it came from."""

    params: dict[str, Any]
    origin: str
    """``preset diffusers-default`` or ``warm start: study 'ink' trial 4``."""
    notes: list[str] = field(default_factory=list)
    """What the projection onto the study's space changed (``learning_rate 0.0001 -> 0.0005``)."""

    def attrs(self) -> dict[str, Any]:
        text = self.origin + (f" ({'; '.join(self.notes)})" if self.notes else "")
        return {PRESET_ATTR: text}


def short_origin(text: str) -> str:
    """``preset kohya-like`` of ``preset kohya-like (rank 32 -> 8; ...)``."""
    return text.split(" (", 1)[0]


def preset_names(setting: str, arch: str) -> list[str]:
    """``auto``: the presets of the model's family; ``none``; or a comma-separated list of space names/files."""

    if setting == "none":
        return []
    if setting == "auto":
        return [] if arch in FLOW_ARCHS else list(UNET_PRESETS)
    return [s.strip() for s in setting.split(",") if s.strip()]


def preset_trials(setting: str, compiled: CompiledSpace, arch: str) -> list[FirstTrial]:
    names = preset_names(setting, arch)
    if setting == "auto":
        # The community presets are LoRAs: a study that cannot train one (method fixed to LoHa, textual
        # inversion...) starts without them; an explicit list is still projected (and says what it changed).
        dist = compiled.distributions.get("method")
        methods = list(getattr(dist, "choices", [compiled.fixed.get("method", PARAMS["method"].default)]))
        if "lora" not in methods:
            names = []
    out = []
    for name in names:
        try:
            preset, _ = load_search_space(name)
        except UserError as e:
            raise UserError(f"study.presets: {e}") from None
        if preset.ranges or preset.choices:
            raise UserError(f"study.presets: {preset.source} searches ranges or choices; a preset fixes every value")
        params, notes = project(preset, compiled)
        out.append(FirstTrial(params, f"preset {preset.name}", notes))
    return out


def project(preset: SearchSpace, compiled: CompiledSpace) -> tuple[dict[str, Any], list[str]]:
    """The preset's values as params of ``compiled`` (each distribution gets one), and what had to change."""

    values = {name: p.default for name, p in PARAMS.items()} | dict(preset.fixed)
    encoded = {k: "+".join(v) if isinstance(v, list) else v for k, v in values.items()}
    encoded["target"] = "|".join("+".join(values[k]) for k in TARGET_KEYS)
    converted, said = _rates(encoded, compiled)
    params, notes = _fit(converted, compiled)
    notes = said + notes
    fixed = compiled.fixed.get("method", PARAMS["method"].default)
    if "method" not in compiled.distributions and fixed != values["method"]:
        # The space fixes another method: the preset's settings train that method (said, not hidden).
        notes.insert(0, f"method {values['method']} -> {fixed} (fixed by the search space)")
    return params, notes


def _fit(params: dict[str, Any], compiled: CompiledSpace) -> tuple[dict[str, Any], list[str]]:
    """``params`` (optuna's encoding) moved into ``compiled``'s distributions, and the changes in words.

    A number is clipped to its range (and rounded to its step), a missing choice becomes the nearest one, and the
    targets the choice with the most modules in common. A name the space does not search is dropped (its value is
    fixed by the space); a searched name missing from ``params`` is left to the sampler.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    def modules(encoded: str) -> set[str]:
        return set(select_modules(compiled.candidates, *decode_target(encoded)))

    out: dict[str, Any] = {}
    notes: list[str] = []
    for name, dist in compiled.distributions.items():
        if name not in params:
            continue
        want = params[name]
        got: Any
        if isinstance(dist, IntDistribution | FloatDistribution):
            got = min(max(want, dist.low), dist.high)
            if dist.step is not None:
                got = dist.low + round((got - dist.low) / dist.step) * dist.step
            got = int(round(got)) if isinstance(dist, IntDistribution) else float(got)
        elif isinstance(dist, CategoricalDistribution) and want in dist.choices:
            got = want
        elif isinstance(dist, CategoricalDistribution) and name == "target":
            wanted = modules(want)
            choices = [str(c) for c in dist.choices]
            share = {c: len(modules(c) & wanted) / max(1, len(modules(c) | wanted)) for c in choices}
            got = max(choices, key=lambda c: (share[c], -choices.index(c)))
            notes.append(f"targets {want} -> {got} ({share[got]:.0%} of the modules in common)")
            out[name] = got
            continue
        else:
            assert isinstance(dist, CategoricalDistribution)
            got = _nearest(want, list(dist.choices))
        out[name] = got
        if got != want:
            notes.append(f"{name} {_show(want)} -> {_show(got)}")
    return out, notes


def _rates(params: dict[str, Any], compiled: CompiledSpace) -> tuple[dict[str, Any], list[str]]:
    """``params`` with the learning rate in the form ``compiled`` searches: a preset's (or an earlier study's)
    ``learning_rate`` times its scale (alpha/r) for a space that searches ``scaled_learning_rate``, and the other
    way round (the same update step either way); and the conversion in words."""

    def value(name: str) -> Any:
        return params.get(name, compiled.fixed.get(name, PARAMS[name].default))

    scale = float(value("alpha_ratio"))
    if value("use_rslora") and value("method") in ("lora", "pivotal"):
        scale *= math.sqrt(int(value("rank")))
    out = dict(params)
    scaled = float(out.get("scaled_learning_rate") or 0.0)
    searched = compiled.distributions
    if "scaled_learning_rate" in searched and scaled <= 0 and "learning_rate" in out:
        out["scaled_learning_rate"] = lr = float(out.pop("learning_rate")) * scale
        return out, [f"learning_rate {params['learning_rate']:g} = scaled_learning_rate {lr:g}"]
    if "learning_rate" in searched and "learning_rate" not in out and scaled > 0:
        out["learning_rate"] = scaled / scale
        return out, [f"scaled_learning_rate {scaled:g} = learning_rate {out['learning_rate']:g}"]
    return out, []


def _nearest(value: Any, choices: list[Any]) -> Any:
    if isinstance(value, int | float) and all(isinstance(c, int | float) for c in choices):
        return min(choices, key=lambda c: abs(c - value))
    if isinstance(value, str) and "+" in value or all(isinstance(c, str) and "+" in c for c in choices):
        want = set(str(value).split("+"))
        return max(choices, key=lambda c: len(want & set(str(c).split("+"))) / len(want | set(str(c).split("+"))))
    return choices[0]


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "+".join(v) if isinstance(v, list) else str(v)


def warm_start_trials(source: str, storage_url: str, base_model: str, compiled: CompiledSpace) -> list[FirstTrial]:
    """The best configurations of the earlier study ``source`` (a run folder, or a study name in ``storage_url``),
    refused when it trained another base model; params outside this study's space are projected like a preset's."""

    path = Path(source)
    try:
        study, _ = find_study(path, None, None) if path.is_dir() else find_study(None, storage_url, source)
    except UserError as e:
        what = "run folder" if path.is_dir() else "no such run folder, nor a study of that name"
        raise UserError(f"--warm-start {source}: {what} ({e})") from None
    config = study.user_attrs.get(ATTR + "config") or {}
    theirs = (config.get("model") or {}).get("base_model")
    if study.user_attrs.get(ATTR + "job") != "tune":
        raise UserError(f"--warm-start {source}: study '{study.study_name}' is not a tune study")
    if theirs != base_model:
        raise UserError(
            f"--warm-start {source}: study '{study.study_name}' trained {theirs}, this study trains {base_model}; "
            "a warm start needs the same base model"
        )
    order = best(study) + [t for t in candidates(study, WARM_START_TOP + 1) if t not in best(study)]
    if not order:
        raise UserError(f"--warm-start {source}: study '{study.study_name}' has no feasible complete trial")
    out = []
    for t in order[:WARM_START_TOP]:
        wanted = dict(t.params)
        best_step = t.user_attrs.get("best_step")
        if "steps" in wanted and best_step is not None and best_step != wanted["steps"]:
            wanted["steps"] = best_step  # its result was its best rung: the steps that worked, not the budget
        converted, said = _rates(wanted, compiled)
        params, notes = _fit(converted, compiled)
        notes = said + notes
        out.append(FirstTrial(params, f"warm start: study '{study.study_name}' trial {t.number}", notes))
    return out
