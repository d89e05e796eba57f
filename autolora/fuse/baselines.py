"""The literature's training-free fusions, run as fixed trials of every fusion run (study label ``fixed``).

* ``klora:<name>``: K-LoRA-style selection with LoRA ``<name>`` in the content role (``autolora.fuse.klora``);
  one trial per LoRA.
* ``block-prior``: one LoRA on the blocks that carry style, the other on the blocks that carry content, in the
  spirit of B-LoRA (Frenkel et al. 2024) and InstantStyle (Wang et al. 2024).
  - SDXL: the published blocks, ``up_blocks.0.attentions.1`` (style) and ``down_blocks.2.attentions.1``
    (content/layout), as B-LoRA uses them: the style LoRA only on the first transformer unit, the content LoRA
    only on the second, both text encoders at 1. Two LoRAs only, tried in both role orders
    (``block-prior:<style>``).
  - Any other layout (SD 1.x/2.x, miniworld, DiT models): nothing published is assumed; the blocks are
    *measured* in the run, by ``autolora explain``'s map of each LoRA (``autolora.fuse.probes``): ``probe:``
    trials draw each LoRA in full and each of its block groups alone and left out (the other LoRAs off), and the
    LoRA's map gives every group its share of the style (``explain.reading.StyleMap``). ``block-prior`` then gives
    every UNet/transformer block to the LoRA whose share is highest there, relative to that LoRA's best block (a
    LoRA left without a block gets its best one), text encoders at 1. ``show`` prints each LoRA's map.

Each baseline is a ``Blend``: what a trial applies to the loaded adapters (``apply``, which may return a
``callback_on_step_end``), a one-line ``summary`` and a ``to_dict`` kept with the trial.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autolora.core.feasible import complete
from autolora.fuse.config import BASELINE_KINDS
from autolora.fuse.klora import KLora, Magnitudes
from autolora.fuse.probes import (
    READING_ATTR,
    is_text,
    maps_of,
    parse,
    prior_shares,
    probe_coefficients,
    probe_names,
)
from autolora.fuse.space import Blend, Fusion

if TYPE_CHECKING:
    import optuna

    from autolora.explain.reading import StyleMap
    from autolora.loras.engine import FusedAdapters

KINDS = BASELINE_KINDS
"""Baseline families ``fuse.baselines`` may name (defined with the setting, ``autolora.fuse.config``)."""
PUBLISHED = {"sdxl": {"style": "up.0.attentions.1", "content": "down.2.attentions.1"}}
"""Layer group keys of the published style and content blocks, per architecture."""
PARAM = "baseline"


@dataclass(frozen=True)
class KLoraBlend:
    content: str
    k: int | None = None

    def apply(self, fa: FusedAdapters) -> Callable[..., Any] | None:
        key = f"klora.magnitudes.{self.k}"
        if key not in fa.cache:
            fa.cache[key] = Magnitudes.of(fa, self.k)
        return KLora(fa, fa.cache[key], self.content)

    def summary(self) -> str:
        return f"K-LoRA, content {self.content}"

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": "klora", "content": self.content, "k": self.k}


@dataclass(frozen=True)
class FixedSpace:
    """The fixed trials of a run: their names, in the order they run, and what each one applies."""

    names: list[str]
    block_keys: dict[str, list[str]]
    """LoRA -> its block group keys."""
    layer_keys: dict[str, list[str]]
    """LoRA -> its layer group keys."""
    arch: str
    klora_k: int | None = None
    probe_wait: float = 60.0
    """Seconds the measured prior waits for probes other workers still run (a probe left RUNNING by a killed
    worker would otherwise hold it forever; the prior then reads the probes that finished)."""
    granularity: str = "fixed"
    schedule: str = "constant"

    @classmethod
    def of(
        cls, fa: FusedAdapters, arch: str, kinds: list[str], klora_k: int | None = None, probe_wait: float = 60.0
    ) -> FixedSpace:
        loras = list(fa.names)
        blocks = {lora: fa.lora_group_keys(lora, "block") for lora in loras}
        layers = {lora: fa.lora_group_keys(lora, "layer") for lora in loras}
        names: list[str] = []
        if len(loras) >= 2 and "klora" in kinds:
            names += [f"klora:{lora}" for lora in loras]
        if len(loras) >= 2 and "block-prior" in kinds:
            if arch in PUBLISHED:
                if len(loras) == 2:
                    names += [f"block-prior:{lora}" for lora in loras]
            else:
                names += [n for lora in loras for n in probe_names(lora, blocks[lora])]
                names.append("block-prior")
        return cls(names, blocks, layers, arch, klora_k, probe_wait)

    def param_names(self) -> list[str]:
        return [PARAM]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        from optuna.distributions import CategoricalDistribution

        return {PARAM: CategoricalDistribution(self.names)}

    def fingerprint(self) -> str:
        text = json.dumps({"fixed": self.names, "arch": self.arch, "k": self.klora_k})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def first_trials(self) -> list[dict[str, Any]]:
        return [{PARAM: name} for name in self.names]

    def suggest(self, trial: optuna.Trial) -> Blend:
        name = trial.suggest_categorical(PARAM, self.names)
        return self.blend(str(name), trial.study)

    def blend(self, name: str, study: optuna.Study | None = None) -> Blend:
        """The blend ``name`` (the measured ``block-prior`` reads the maps of the study's probe trials)."""
        kind, _, rest = name.partition(":")
        if kind == "klora":
            return KLoraBlend(rest, self.klora_k)
        if kind == "probe":
            return Fusion(probe_coefficients(name, self.block_keys))
        if kind == "block-prior" and rest:
            return Fusion(self._published(rest))
        if kind == "block-prior":
            if study is None:
                raise ValueError("the measured block prior needs its study's probe trials")
            wait_probes(study, self.probe_wait)
            return Fusion(self.measured_prior(prior_shares(probe_maps(study))))
        raise ValueError(f"unknown fixed trial {name!r}; expected one of {self.names}")

    def of_trial(self, trial: optuna.trial.FrozenTrial) -> Blend:
        """What a finished fixed trial applied (the measured prior as it was then, from the trial's record)."""
        name = str(trial.params[PARAM])
        if name == "block-prior" and "fusion" in trial.user_attrs:
            return Fusion.from_dict(trial.user_attrs["fusion"])
        return self.blend(name)

    def _published(self, style: str) -> dict[str, dict[str, float]]:
        units = PUBLISHED[self.arch]
        out = {}
        for lora, keys in self.layer_keys.items():
            unit = units["style"] if lora == style else units["content"]
            out[lora] = {k: 1.0 if k == unit or is_text(k) else 0.0 for k in keys}
        return out

    def measured_prior(self, shares: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        """Block coefficients giving every probed block to the LoRA whose (normalised) share is highest there."""
        owner = assign_blocks(shares)
        return {
            lora: {k: 1.0 if is_text(k) or owner.get(k) == lora else 0.0 for k in keys}
            for lora, keys in self.block_keys.items()
        }


def wait_probes(study: optuna.Study, timeout: float, poll: float = 0.5) -> None:
    """Return when no probe trial of ``study`` is running (workers take the fixed trials in the order they were
    queued, so the prior's trial starts after every probe has been taken, not after each has finished), or after
    ``timeout`` seconds."""
    import optuna

    deadline = time.monotonic() + timeout
    running = (optuna.trial.TrialState.RUNNING,)
    while any(_name(t).startswith("probe:") for t in study.get_trials(False, states=running)):
        if time.monotonic() > deadline:
            return
        time.sleep(poll)


def _name(trial: optuna.trial.FrozenTrial) -> str:
    """A fixed trial's name, also before its objective has suggested it (a queued trial's fixed parameters)."""
    return str(trial.params.get(PARAM, trial.system_attrs.get("fixed_params", {}).get(PARAM, "")))


def probe_maps(study: optuna.Study) -> dict[str, StyleMap]:
    """LoRA -> its map (``explain``'s), from the study's complete probe trials."""
    readings: dict[str, dict[str, dict[str, list[float]]]] = {}
    for t in complete(study):
        name = str(t.params.get(PARAM, ""))
        if not name.startswith("probe:") or READING_ATTR not in t.user_attrs:
            continue
        lora, view, group = parse(name)
        readings.setdefault(lora, {})[f"{view}:{group}" if group else view] = t.user_attrs[READING_ATTR]
    return maps_of(readings)


def assign_blocks(gains: Mapping[str, Mapping[str, float]]) -> dict[str, str]:
    """Block -> the LoRA that owns it: the highest share (or gain) over that LoRA's best one (ties: the earlier
    LoRA); then a LoRA owning nothing takes its best block."""
    best = {lora: max(max(g.values(), default=0.0), 1e-9) for lora, g in gains.items()}
    blocks = sorted({b for g in gains.values() for b in g})
    owner: dict[str, str] = {}
    for b in blocks:
        scored = [(g[b] / best[lora], -i, lora) for i, (lora, g) in enumerate(gains.items()) if b in g]
        owner[b] = max(scored)[2]
    for lora, g in gains.items():
        if g and lora not in owner.values():
            owner[max(g, key=lambda b: g[b])] = lora
    return owner
