"""Declarative search spaces -> optuna distributions; a trial's params -> an adapter spec.

A search-space file (``search_spaces/*.yaml``) names LoRA settings under ``params``. Each entry is
a fixed value (``rank: 4``), a range (``rank: {low: 4, high: 64, log: true}``) or a choice
(``init: {choices: [default, gaussian]}``). Ranges and choices compile to optuna's own
distributions (``IntDistribution``, ``FloatDistribution``, ``CategoricalDistribution``), so the
study stores and hashes them in optuna's serial form.

``method`` (lora, loha, lokr; ``autolora.methods``) is one more choice; a setting only some methods read
(``use_dora``, ``lokr_factor``...) is sampled only in their trials.

The target layers are three choices (``target_blocks``, ``target_layers``,
``target_projections``) that compile into one categorical ``target`` over the combinations that
select at least one module of the loaded UNet: a choice that would target nothing never reaches a
trial.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from autolora.errors import UserError, closest
from autolora.methods import METHODS, PeftMethod
from autolora.methods.param import Param
from autolora.methods.param import positive as _pos
from autolora.models.family import LossSettings
from autolora.models.flow import SCHEMES
from autolora.models.layers import (
    BLOCKS,
    LAYERS,
    PROJECTIONS,
    TEXT_ENCODER_TARGETS,
    block_of,
    check_block_name,
    select_modules,
)
from autolora.recipes import read_recipe

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from peft import PeftConfig

    from autolora.methods import Method

BAD_INITS = {
    "pissa": "writes the residual into the base weights",
    "olora": "writes the residual into the base weights",
    "loftq": "quantises and rewrites the base weights",
    "eva": "needs a data-driven initialisation pass",
    "corda": "writes the residual into the base weights",
}


CAPTION_MODES = ("content", "trigger")
PRIOR_PROMPTS = ("class", "captions")
PRIOR_KEYS = ("prior_prompts", "prior_images", "class_prompt")
"""Settings of the prior-preservation pictures: sampled only in trials whose ``prior_weight`` is above 0."""

SHARED: dict[str, Param] = {
    "rank": Param("int", 4, _pos, "an integer >= 1", help="LoRA rank r"),
    "alpha_ratio": Param("float", 1.0, _pos, "a number > 0", help="lora_alpha = alpha_ratio * rank"),
    "learning_rate": Param("float", 1e-4, lambda v: 0 < v < 1, "a number in (0, 1)", help="AdamW learning rate"),
    "steps": Param("int", 100, _pos, "an integer >= 1", help="optimiser steps"),
    "batch_size": Param("int", 1, _pos, "an integer >= 1", help="images per step"),
    "lr_scheduler": Param(
        "choice", "constant", allowed=("constant", "cosine", "linear"), help="learning-rate schedule"
    ),
    "warmup_ratio": Param("float", 0.0, lambda v: 0 <= v <= 0.5, "a number in [0, 0.5]", help="share of warmup steps"),
    "weight_decay": Param("float", 1e-2, lambda v: v >= 0, "a number >= 0", help="AdamW weight decay"),
    "min_snr_gamma": Param("float", 0.0, lambda v: v >= 0, "a number >= 0", help="min-SNR weighting (0: off)"),
    "target_blocks": Param(
        "subset",
        ["down", "mid", "up"],
        check_block_name,
        "down, mid, up, down.N, up.N (UNet) or double, joint, single, double.N, single.N-M (SD3, Flux)",
        help="block groups",
    ),
    "target_layers": Param("subset", ["self_attn", "cross_attn"], allowed=LAYERS, help="layer kinds in those blocks"),
    "target_projections": Param(
        "subset",
        list(PROJECTIONS),
        allowed=PROJECTIONS,
        help="attention projections (q, k, v, out) of the attention layers",
    ),
    "rank_scale_down": Param("float", 1.0, _pos, "a number > 0", help="rank multiplier for down blocks"),
    "rank_scale_mid": Param("float", 1.0, _pos, "a number > 0", help="rank multiplier for the mid block"),
    "rank_scale_up": Param("float", 1.0, _pos, "a number > 0", help="rank multiplier for up blocks"),
    "rank_scale_double": Param(
        "float", 1.0, _pos, "a number > 0", help="rank multiplier for double-stream / joint blocks (SD3, Flux)"
    ),
    "rank_scale_single": Param("float", 1.0, _pos, "a number > 0", help="rank multiplier for single blocks (Flux)"),
    "weighting_scheme": Param(
        "choice", "none", allowed=SCHEMES, help="flow matching (SD3, Flux): timestep density / loss weighting"
    ),
    "logit_mean": Param("float", 0.0, lambda v: -3 <= v <= 3, "a number in [-3, 3]", help="logit_normal mean"),
    "logit_std": Param("float", 1.0, lambda v: 0 < v <= 3, "a number in (0, 3]", help="logit_normal spread"),
    "mode_scale": Param("float", 1.29, lambda v: 0 <= v <= 2, "a number in [0, 2]", help="mode density's scale"),
    "flow_shift": Param(
        "float", 0.0, lambda v: v >= 0, "a number >= 0", help="timestep shift s (SD3, Flux); 0: the scheduler's"
    ),
    "guidance": Param("float", 1.0, lambda v: v >= 0, "a number >= 0", help="Flux dev: guidance value in training"),
    "text_encoder": Param("bool", False, help="train a LoRA on the text encoder(s) too"),
    "text_encoder_lr_ratio": Param("float", 1.0, _pos, "a number > 0", help="text-encoder lr / UNet lr"),
    "scaled_learning_rate": Param(
        "float",
        0.0,
        lambda v: 0 < v < 1,
        "a number in (0, 1)",
        help="learning_rate x the adapter's scale (alpha/r; alpha/sqrt(r) with rsLoRA): the step size of the update "
        "it trains, searched instead of learning_rate so that alpha is the learning-rate factor it is "
        "(0: off, learning_rate is searched)",
    ),
    "caption_mode": Param(
        "choice",
        "content",
        allowed=CAPTION_MODES,
        help="training captions: content (the picture's caption and the trigger) or trigger (the trigger alone)",
    ),
    "caption_dropout": Param(
        "float",
        0.0,
        lambda v: 0 <= v < 1,
        "a number in [0, 1)",
        help="share of training examples whose caption is empty (kohya's caption_dropout_rate)",
    ),
    "prior_weight": Param(
        "float", 0.0, lambda v: v >= 0, "a number >= 0", help="prior-preservation loss weight (0: off; DreamBooth: 1)"
    ),
    "prior_prompts": Param(
        "choice",
        "class",
        allowed=PRIOR_PROMPTS,
        help="what the base model draws for the prior: class (class_prompt) or captions (each style picture's "
        "content caption without the trigger, as kohya's regularisation images: the same subjects unstyled)",
    ),
    "prior_images": Param(
        "int", 8, _pos, "an integer >= 1", help="pictures the base model draws for the prior (train.prior_images)"
    ),
    "class_prompt": Param(
        "text",
        "a picture",
        lambda v: bool(v.strip()),
        "a non-empty prompt",
        help="the class prompt of the prior-preservation pictures (drawn by the base model)",
    ),
}


def _assemble() -> dict[str, Param]:
    """Every setting a search space can set: ``method``, the shared settings, then each method's own.

    A setting some method lists in ``reads`` (rank, learning_rate...) is read by those methods only, and a method's
    own setting (``Method.params``) by the methods that declare it (pivotal tuning declares LoRA's and the tokens'):
    the trials of other methods never sample it, and a space whose methods all ignore it is refused."""
    partial = set().union(*(m.reads for m in METHODS.values()))

    def readers(key: str) -> tuple[str, ...]:
        return tuple(n for n, m in METHODS.items() if key in m.reads or key in m.params)

    out = {"method": Param("choice", "lora", allowed=tuple(METHODS), help="adapter method (autolora.methods)")}
    for key, p in SHARED.items():
        out[key] = replace(p, methods=readers(key)) if key in partial else p
    for m in METHODS.values():
        for key, p in m.params.items():
            out.setdefault(key, replace(p, methods=readers(key)))
    return out


PARAMS = _assemble()
TARGET_KEYS = ("target_blocks", "target_layers", "target_projections")
FLOW_KEYS = ("weighting_scheme", "logit_mean", "logit_std", "mode_scale", "flow_shift", "guidance")
"""Settings of flow-matching training: SD3 and Flux only."""
ARCHS = ("sd1", "sd2", "sdxl", "sd3", "flux")
FLOW_ARCHS = ("sd3", "flux")
FILE_KEYS = ("description", "architectures", "params")


def _check_value(name: str, value: Any, where: str) -> Any:
    p = PARAMS[name]
    bad = f"{where}: params.{name}: expected "
    if p.kind == "bool":
        if not isinstance(value, bool):
            raise UserError(f"{bad}true or false, got {value!r}")
    elif p.kind in ("int", "float"):
        num_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if p.kind == "int":
            num_ok = num_ok and float(value).is_integer()
        if not num_ok or not p.check(value):
            raise UserError(f"{bad}{p.expected or ('an integer' if p.kind == 'int' else 'a number')}, got {value!r}")
        value = int(value) if p.kind == "int" else float(value)
    elif p.kind in ("word", "text"):
        if not isinstance(value, str) or not p.check(value):
            raise UserError(f"{bad}{p.expected}, got {value!r}")
    elif p.kind == "choice":
        if name == "init" and value in BAD_INITS:
            raise UserError(
                f"{where}: params.init: '{value}' {BAD_INITS[value]}, and peft's residual survives "
                f"delete_adapters; autolora keeps the base model intact, so use default or gaussian"
            )
        if value not in p.allowed:
            raise UserError(f"{bad}one of {', '.join(p.allowed)}, got {value!r}{closest(str(value), p.allowed)}")
    elif p.kind == "subset":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) for v in items):
            raise UserError(f"{bad}a non-empty list, got {value!r}")
        for v in items:
            ok = p.check(v) if not p.allowed else v in p.allowed
            if not ok:
                valid = p.expected or ", ".join(p.allowed)
                raise UserError(f"{bad}items from {valid}, got {v!r}{closest(v, p.allowed or BLOCKS)}")
        value = sorted(set(items), key=items.index)
    return value


@dataclass
class SearchSpace:
    """A parsed, validated search space (independent of any model)."""

    name: str
    source: str
    fixed: dict[str, Any]
    ranges: dict[str, dict[str, Any]]
    choices: dict[str, list[Any]]
    architectures: list[str] = field(default_factory=list)
    description: str = ""

    def compile(self, candidates: list[str], arch: str) -> CompiledSpace:
        """Bind to a model's candidate modules: optuna distributions plus fixed values."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.architectures and arch not in self.architectures:
            raise UserError(f"{self.source}: made for {', '.join(self.architectures)} models; the base model is {arch}")
        self._check_family(arch)
        dists: dict[str, BaseDistribution] = {}
        fixed = dict(self.fixed)
        for name, r in self.ranges.items():
            cls = IntDistribution if PARAMS[name].kind == "int" else FloatDistribution
            dists[name] = cls(r["low"], r["high"], log=r.get("log", False), step=r.get("step"))  # type: ignore[arg-type]
        for name, values in self.choices.items():
            if name in TARGET_KEYS:
                continue
            encoded = ["+".join(v) if isinstance(v, list) else v for v in values]
            if len(set(map(str, encoded))) == 1:
                fixed[name] = values[0]
            else:
                dists[name] = CategoricalDistribution(encoded)
        targets = _target_choices(self, candidates)
        if not targets:
            raise UserError(
                f"{self.source}: no choice of target_blocks x target_layers x "
                f"target_projections selects any module of this {arch} model's "
                f"{'transformer' if arch in FLOW_ARCHS else 'UNet'}"
            )
        if len(targets) == 1:
            fixed["target"] = targets[0]
        else:
            dists["target"] = CategoricalDistribution(targets)
        return CompiledSpace(self, dists, fixed, candidates)

    def _values(self, key: str) -> list[Any]:
        if key in self.choices:
            return list(self.choices[key])
        if key in self.ranges:
            return [self.ranges[key]["low"], self.ranges[key]["high"]]
        return [self.fixed[key]] if key in self.fixed else []

    def _check_family(self, arch: str) -> None:
        """Refuse settings the base model's family does not train with (each named with the model's arch)."""
        if arch in FLOW_ARCHS:
            learnt_tokens = [m for m in self._values("method") if METHODS[str(m)].learns_tokens]
            if learnt_tokens:
                raise UserError(
                    f"{self.source}: params.method: {learnt_tokens[0]} learns token embeddings of CLIP text encoders; "
                    f"autolora trains it on UNet models (SD 1.x, 2.x, SDXL), not {arch}"
                )
            if any(v > 0 for v in self._values("min_snr_gamma")):
                raise UserError(
                    f"{self.source}: params.min_snr_gamma: a {arch} model trains by flow matching, which has no SNR "
                    "weighting; use weighting_scheme (none, logit_normal, mode, sigma_sqrt, cosmap)"
                )
            if any(self._values("text_encoder")):
                raise UserError(
                    f"{self.source}: params.text_encoder: autolora trains the {arch} transformer only (as "
                    "diffusers' and ai-toolkit's defaults); set text_encoder: false"
                )
            return
        for key in FLOW_KEYS:
            if self._values(key):
                raise UserError(f"{self.source}: params.{key}: a flow-matching setting (sd3, flux); the base is {arch}")


def _choices_of(space: SearchSpace, key: str) -> list[list[str]]:
    if key in space.choices:
        return [v if isinstance(v, list) else [v] for v in space.choices[key]]
    value = space.fixed.get(key, PARAMS[key].default)
    return [value if isinstance(value, list) else [value]]


def _target_choices(space: SearchSpace, candidates: list[str]) -> list[str]:
    """Encoded ``blocks|layers|projections`` combinations that select distinct, non-empty module sets."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for blocks in _choices_of(space, "target_blocks"):
        for layers in _choices_of(space, "target_layers"):
            for projs in _choices_of(space, "target_projections"):
                modules = tuple(select_modules(candidates, blocks, layers, projs))
                if modules and modules not in seen:
                    seen.add(modules)
                    out.append("|".join("+".join(x) for x in (blocks, layers, projs)))
    return out


def decode_target(encoded: str) -> tuple[list[str], list[str], list[str]]:
    blocks, layers, projs = encoded.split("|")
    return blocks.split("+"), layers.split("+"), projs.split("+")


@dataclass
class CompiledSpace:
    """A search space bound to a model: what optuna samples and what stays fixed."""

    space: SearchSpace
    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any]
    candidates: list[str]

    def fingerprint(self) -> str:
        """Hash of the distributions and fixed values: a study refuses a different space."""
        from optuna.distributions import distribution_to_json

        payload = {
            "distributions": {k: json.loads(distribution_to_json(v)) for k, v in sorted(self.distributions.items())},
            "fixed": {k: self.fixed[k] for k in sorted(self.fixed)},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def methods(self) -> list[str]:
        """The adapter methods this space's trials can train."""
        from optuna.distributions import CategoricalDistribution

        dist = self.distributions.get("method")
        if isinstance(dist, CategoricalDistribution):
            return [str(c) for c in dist.choices]
        return [str(self.fixed.get("method", PARAMS["method"].default))]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every distribution through the trial's public ``suggest_*`` API."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        params: dict[str, Any] = {}
        # The method first: a setting only other methods read is not sampled (optuna's TPE handles such
        # conditional parameters), so a LoHa trial records no use_dora; likewise the prior's pictures after
        # prior_weight, sampled only when there is a prior.
        order = sorted(self.distributions, key=lambda n: (n != "method", n != "prior_weight"))
        for name in order:
            d = self.distributions[name]
            if not self.reads(name, params):
                continue
            if isinstance(d, IntDistribution):
                params[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
            elif isinstance(d, FloatDistribution):
                params[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
            elif isinstance(d, CategoricalDistribution):
                params[name] = trial.suggest_categorical(name, d.choices)
        return params

    def reads(self, name: str, params: dict[str, Any]) -> bool:
        """Whether a trial with (some of its) ``params`` reads setting ``name``: its method reads it, and a
        setting of the prior's pictures only when ``prior_weight`` is above 0."""
        method = params.get("method", self.fixed.get("method", PARAMS["method"].default))
        if PARAMS.get(name) and PARAMS[name].methods and method not in PARAMS[name].methods:
            return False
        if name in PRIOR_KEYS:
            return float(params.get("prior_weight", self.fixed.get("prior_weight", 0.0))) > 0
        return True

    def spec(self, sampled: dict[str, Any], defaults: dict[str, Any] | None = None) -> LoraSpec:
        """A full LoRA spec from sampled params + fixed values + defaults."""
        values = {name: p.default for name, p in PARAMS.items()}
        values.update(defaults or {})
        values.update(self.fixed)
        values.update(sampled)
        for key in ("target_blocks", "target_layers", "target_projections"):
            if isinstance(values.get(key), str):
                values[key] = values[key].split("+")
        blocks, layers, projs = decode_target(values.pop("target"))
        values.update(target_blocks=blocks, target_layers=layers, target_projections=projs)
        modules = select_modules(self.candidates, blocks, layers, projs)
        spec = LoraSpec(values=values, modules=modules)
        if float(values["scaled_learning_rate"]) > 0 and self.reads("scaled_learning_rate", values):
            values["learning_rate"] = float(values["scaled_learning_rate"]) / spec.scale()
        return spec


@dataclass
class LoraSpec:
    """Everything a trial needs to build and train its adapter."""

    values: dict[str, Any]
    modules: list[str]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def scale(self) -> float:
        """The adapter's scale, alpha / r (alpha / sqrt(r) with rsLoRA; the same for every module: a per-group rank
        keeps the alpha ratio)."""
        ratio = float(self["alpha_ratio"])
        return (
            ratio * math.sqrt(int(self["rank"])) if self["use_rslora"] and "use_rslora" in self.method.params else ratio
        )

    def group_rank(self, module: str) -> int:
        found = block_of(module)
        group = found[0] if found else "mid"
        return max(1, round(self["rank"] * self[f"rank_scale_{group}"]))

    def loss_settings(self, noise_offset: float = 0.0) -> LossSettings:
        """The training-loss settings of this trial (the family uses the ones that apply to it)."""

        return LossSettings(
            noise_offset=noise_offset,
            min_snr_gamma=float(self["min_snr_gamma"]),
            weighting_scheme=str(self["weighting_scheme"]),
            logit_mean=float(self["logit_mean"]),
            logit_std=float(self["logit_std"]),
            mode_scale=float(self["mode_scale"]),
            flow_shift=float(self["flow_shift"]),
            guidance=float(self["guidance"]),
        )

    @property
    def method(self) -> Method:
        return METHODS[str(self["method"])]

    def rank_pattern(self) -> dict[str, int]:
        """The modules whose rank differs from ``rank`` (per-group rank scales), as peft's ``rank_pattern``."""
        rank = int(self["rank"])
        return {m: self.group_rank(m) for m in self.modules if self.group_rank(m) != rank}

    def _peft(self) -> PeftMethod:
        method = self.method
        if not isinstance(method, PeftMethod):
            raise ValueError(f"method {method.name} trains no peft adapter on the denoiser")
        return method

    def unet_config(self) -> PeftConfig:
        """The peft config of the denoiser's adapter (the UNet's or the transformer's), by the trial's method."""
        return self._peft().denoiser_config(self)

    def text_encoder_config(self) -> PeftConfig | None:
        if not self["text_encoder"]:
            return None
        return self._peft().text_encoder_config(self, list(TEXT_ENCODER_TARGETS))

    def _scaled(self) -> bool:
        return float(self["scaled_learning_rate"]) > 0 and isinstance(self.method, PeftMethod)

    def summary(self) -> str:
        """The params that matter, in one short string for the per-trial line."""
        v = self.values
        method = self.method
        parts = [] if method.name == PARAMS["method"].default else [method.name]
        parts += method.describe(v)
        if v["prior_weight"] > 0:
            what = "captions" if v["prior_prompts"] == "captions" else repr(v["class_prompt"])
            parts.append(f"prior={v['prior_weight']:g}:{what}x{v['prior_images']}")
        if v["caption_mode"] != "content":
            parts.append(f"captions={v['caption_mode']}")
        if v["caption_dropout"] > 0:
            parts.append(f"caption_dropout={v['caption_dropout']:g}")
        if not isinstance(method, PeftMethod) and "learning_rate" not in method.reads:  # tokens only
            return " ".join([*parts, f"steps={v['steps']}"])
        if not isinstance(method, PeftMethod):  # the denoiser's own weights
            parts.append(f"lr={v['learning_rate']:.2g} steps={v['steps']} modules={len(self.modules)}")
            return " ".join(
                [*parts, f"blocks={'+'.join(v['target_blocks'])}", f"layers={'+'.join(v['target_layers'])}"]
            )
        parts += [
            f"r={v['rank']}",
            f"a={v['alpha_ratio'] * v['rank']:g}",
            f"lr={v['learning_rate']:.2g}" + (f" (x a/r={v['scaled_learning_rate']:.2g})" if self._scaled() else ""),
            f"steps={v['steps']}",
            f"blocks={'+'.join(v['target_blocks'])}",
            f"layers={'+'.join(v['target_layers'])}",
        ]
        if v["target_projections"] != list(PROJECTIONS):
            parts.append(f"proj={'+'.join(v['target_projections'])}")
        parts += [k for k in ("use_dora", "use_rslora") if k in method.params and v[k]]
        parts += ["text_encoder"] if v["text_encoder"] else []
        return " ".join(parts)


# -- parsing --------------------------------------------------------------------------------------


def _parse_entry(name: str, value: Any, where: str, space: SearchSpace) -> None:
    p = PARAMS[name]
    if isinstance(value, dict) and "choices" in value:
        extra = set(value) - {"choices"}
        if extra:
            raise UserError(f"{where}: params.{name}: unknown key '{sorted(extra)[0]}' beside choices")
        if not isinstance(value["choices"], list) or not value["choices"]:
            raise UserError(f"{where}: params.{name}.choices: expected a non-empty list, got {value['choices']!r}")
        space.choices[name] = [_check_value(name, v, where) for v in value["choices"]]
    elif isinstance(value, dict):
        if p.kind not in ("int", "float"):
            raise UserError(f"{where}: params.{name}: a {p.kind} takes a value or {{choices: [...]}}, not a range")
        allowed = ("low", "high", "log", "step")
        for key in value:
            if key not in allowed:
                raise UserError(f"{where}: params.{name}: unknown key '{key}'{closest(str(key), allowed)}")
        if "low" not in value or "high" not in value:
            raise UserError(f"{where}: params.{name}: a range needs low and high")
        low, high = _check_value(name, value["low"], where), _check_value(name, value["high"], where)
        if low > high:
            raise UserError(f"{where}: params.{name}: low ({low}) is greater than high ({high})")
        log, step = bool(value.get("log", False)), value.get("step")
        if log and step is not None:
            raise UserError(f"{where}: params.{name}: log and step cannot be combined")
        if step is not None:
            step = _check_value(name, step, where) if p.kind == "int" else float(step)
            if step <= 0:
                raise UserError(f"{where}: params.{name}.step: expected a number > 0, got {step!r}")
        if log and low <= 0:
            raise UserError(f"{where}: params.{name}: a log range needs low > 0")
        space.ranges[name] = {"low": low, "high": high, "log": log, "step": step if p.kind == "float" else step or 1}
    else:
        space.fixed[name] = _check_value(name, value, where)


def parse_search_space(data: Any, name: str, source: str) -> SearchSpace:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with 'params'")
    for key in data:
        if key not in FILE_KEYS:
            raise UserError(f"{source}: unknown key '{key}'{closest(str(key), FILE_KEYS)}")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise UserError(f"{source}: params: expected a mapping of parameter names")
    archs = data.get("architectures") or []
    if not isinstance(archs, list) or not all(a in ARCHS for a in archs):
        raise UserError(f"{source}: architectures: expected a list of {', '.join(ARCHS)}, got {archs!r}")
    space = SearchSpace(
        name=name,
        source=source,
        fixed={},
        ranges={},
        choices={},
        architectures=archs,
        description=str(data.get("description", "")),
    )
    for key, value in params.items():
        if key not in PARAMS:
            raise UserError(f"{source}: unknown parameter '{key}'{closest(str(key), PARAMS)}")
        _parse_entry(key, value, source, space)
    _check_methods(space)
    _check_learning_rates(space)
    return space


def _check_learning_rates(space: SearchSpace) -> None:
    """One of learning_rate and scaled_learning_rate: the second derives the first."""
    scaled = space._values("scaled_learning_rate")
    methods = [str(m) for m in space._values("method")] or [str(PARAMS["method"].default)]
    # a method that reads learning_rate but has no adapter scale (DreamBooth) needs its own
    full = [m for m in methods if "learning_rate" in METHODS[m].reads and not isinstance(METHODS[m], PeftMethod)]
    if scaled and any(v > 0 for v in scaled) and space._values("learning_rate") and not full:
        raise UserError(
            f"{space.source}: params.learning_rate and params.scaled_learning_rate: set one (scaled_learning_rate "
            "= learning_rate x alpha/r derives the learning rate of the peft methods)"
        )


def _check_methods(space: SearchSpace) -> None:
    """Refuse a setting that no method of the space reads (``use_dora: true`` in a LoHa space), naming both."""
    methods = [str(m) for m in space._values("method")] or [str(PARAMS["method"].default)]
    for name, p in PARAMS.items():
        if not p.methods or any(m in p.methods for m in methods):
            continue
        values = space._values(name)
        if name in space.ranges or name in space.choices or any(v != p.default for v in values):
            raise UserError(
                f"{space.source}: params.{name}: read by {', '.join(p.methods)} only; this space's method "
                f"is {', '.join(methods)}"
            )


def load_search_space(name_or_file: str) -> tuple[SearchSpace, str]:
    """A built-in search space by name, or a YAML file; returns the space and its text."""
    data, name, source, text = read_recipe(name_or_file, "autolora.search_spaces", "search space")
    return parse_search_space(data, name, source), text


def describe_params() -> str:
    """A table of the parameters a search space can set (for docs and ``--help``)."""
    rows = [f"{n:22s} {p.kind:7s} default {p.default!r:28s} {p.help}" for n, p in PARAMS.items()]
    return "\n".join(rows)
