"""The coefficient search space of a fusion study, and one point of it (a ``Fusion``).

Parameter names: ``{lora}.{group}`` for a constant schedule; ``early.{lora}.{group}``, ``late.{lora}.{group}``
and ``switch_at`` for a two-phase one. Each coefficient is a float in ``[low, high]``; ``switch_at`` a float in
``SWITCH_RANGE`` unless fixed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from autolora.fuse.config import SWITCH_RANGE
from autolora.loras.groups import Coefficients

if TYPE_CHECKING:
    import optuna

    from autolora.fuse.config import FuseSection
    from autolora.loras.engine import FusedAdapters

PHASES = ("early", "late")


class Blend(Protocol):
    """What one fusion trial applies: a ``Fusion`` of coefficients, or a training-free baseline
    (``autolora.fuse.baselines``)."""

    def apply(self, fa: FusedAdapters) -> Callable[..., Any] | None:
        """Set the adapters' scales; return the ``callback_on_step_end`` it needs, if any."""
        ...

    def summary(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Fusion:
    """One fusion: coefficients, and for two phases the late set and the switch point."""

    early: Coefficients
    late: Coefficients | None = None
    switch_at: float | None = None

    def apply(self, fa: FusedAdapters) -> Callable[..., Any] | None:
        """Set the coefficients on ``fa``; return the ``callback_on_step_end`` a two-phase fusion needs."""
        if self.late is None:
            fa.set_coefficients(self.early)
            return None
        return fa.two_phase(self.early, self.late, float(self.switch_at or 0.5))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"coefficients": self.early}
        if self.late is not None:
            out = {"early": self.early, "late": self.late, "switch_at": self.switch_at}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fusion:
        if "coefficients" in data:
            return cls(dict(data["coefficients"]))
        return cls(dict(data["early"]), dict(data["late"]), float(data["switch_at"]))

    def summary(self) -> str:
        """One line: per LoRA its coefficient (global) or min..max over its groups."""

        def one(coeffs: Coefficients) -> str:
            parts = []
            for lora, groups in coeffs.items():
                values = list(groups.values())
                lo, hi = min(values), max(values)
                parts.append(f"{lora}={lo:.2f}" if len(values) == 1 else f"{lora}={lo:.2f}..{hi:.2f}")
            return " ".join(parts)

        if self.late is None:
            return one(self.early)
        return f"early {one(self.early)} | late {one(self.late)} | switch {self.switch_at:.2f}"


@dataclass(frozen=True)
class CoefficientSpace:
    """The parameters of a fusion study over the loaded LoRAs."""

    granularity: str
    schedule: str
    low: float
    high: float
    switch_at: float | None
    keys: dict[str, list[str]]
    """LoRA name -> the group keys it needs at this granularity."""

    @classmethod
    def of(cls, fa: FusedAdapters, granularity: str, schedule: str, section: FuseSection) -> CoefficientSpace:
        keys = {lora: fa.lora_group_keys(lora, granularity) for lora in fa.names}
        return cls(granularity, schedule, section.low, section.high, section.switch_at, keys)

    def _names(self, prefix: str = "") -> list[str]:
        return [f"{prefix}{lora}.{key}" for lora, keys in self.keys.items() for key in keys]

    def param_names(self) -> list[str]:
        if self.schedule == "constant":
            return self._names()
        switch = ["switch_at"] if self.switch_at is None else []
        return [*self._names("early."), *self._names("late."), *switch]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        from optuna.distributions import FloatDistribution

        out: dict[str, optuna.distributions.BaseDistribution] = {
            n: FloatDistribution(self.low, self.high) for n in self.param_names()
        }
        if "switch_at" in out:
            out["switch_at"] = FloatDistribution(*SWITCH_RANGE)
        return out

    def fingerprint(self) -> str:
        """A hash of the distributions: a study is tied to it like ``tune``'s search-space hash."""
        from optuna.distributions import distribution_to_json

        text = json.dumps({k: distribution_to_json(d) for k, d in self.distributions().items()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def suggest(self, trial: optuna.Trial) -> Fusion:
        dists = self.distributions().items()
        params = {name: trial.suggest_float(name, d.low, d.high) for name, d in dists}  # type: ignore[attr-defined]
        return self.fusion(params)

    def fusion(self, params: Mapping[str, Any]) -> Fusion:
        """The ``Fusion`` of a trial's parameters."""

        def coeffs(prefix: str) -> Coefficients:
            return {
                lora: {key: float(params[f"{prefix}{lora}.{key}"]) for key in keys} for lora, keys in self.keys.items()
            }

        if self.schedule == "constant":
            return Fusion(coeffs(""))
        switch = self.switch_at if self.switch_at is not None else float(params["switch_at"])
        return Fusion(coeffs("early."), coeffs("late."), switch)

    def of_trial(self, trial: optuna.trial.FrozenTrial) -> Fusion:
        """The ``Fusion`` a finished trial applied."""
        return self.fusion(trial.params)

    def uniform(self, value: float) -> dict[str, float]:
        """Parameters giving every coefficient ``value`` (switch in the middle): a trial to enqueue."""
        params = dict.fromkeys(self.param_names(), value)
        if "switch_at" in params:
            params["switch_at"] = sum(SWITCH_RANGE) / 2
        return params
