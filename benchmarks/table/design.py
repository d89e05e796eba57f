"""The configurations of a table: a space-filling design over a search space, and the presets.

A Latin hypercube (scipy's, with its centred-discrepancy optimisation: each one-dimensional projection is
stratified, so with 48 points every level of a 2-, 3-, 4- or 6-way choice appears equally often) over every
searched dimension except ``steps``: every configuration trains to the space's largest step budget and is read at
every rung, so the step budget is the rung, not a dimension of the design. Settings a configuration does not read
(the prior's pictures without a prior, a method's own settings under another method) are dropped, as optuna's
trials do not record them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from autolora.tune.search import CompiledSpace


@dataclass
class Configuration:
    """One row of the design: the params a study would record (``steps`` at the space's largest budget)."""

    number: int
    params: dict[str, Any]
    origin: str = "design"
    """``design``, or ``preset NAME`` for a preset as ``tune`` runs it (projected onto the space)."""
    notes: list[str] = field(default_factory=list)
    budget: int | None = None
    """The preset's own step budget (None: the design's, every rung)."""


def largest_steps(compiled: CompiledSpace) -> int:
    dist = compiled.distributions.get("steps")
    if dist is None:
        return int(compiled.fixed.get("steps", 100))
    return int(dist.high)  # type: ignore[attr-defined]


def design(compiled: CompiledSpace, n: int, seed: int = 0) -> list[Configuration]:
    """``n`` configurations of a Latin hypercube over ``compiled``'s dimensions (``steps`` fixed at its largest)."""
    from scipy.stats import qmc

    names = sorted(k for k in compiled.distributions if k != "steps")
    points = qmc.LatinHypercube(d=len(names), rng=seed, optimization="random-cd").random(n) if names else [[]] * n
    out = []
    for i, point in enumerate(points):
        wanted = {name: _value(compiled.distributions[name], float(u)) for name, u in zip(names, point, strict=True)}
        params = {k: v for k, v in wanted.items() if compiled.reads(k, wanted)}
        if "steps" in compiled.distributions:
            params["steps"] = largest_steps(compiled)
        out.append(Configuration(i, params))
    return out


def presets(compiled: CompiledSpace, arch: str, setting: str = "auto", first: int = 0) -> list[Configuration]:
    """The presets as ``tune`` runs them (projected onto the space: ``study.presets``), numbered from ``first``,
    trained to the design's largest budget like every configuration (their own budget kept in ``budget``)."""
    from autolora.tune.presets import preset_trials

    out = []
    for i, t in enumerate(preset_trials(setting, compiled, arch)):
        params = {k: v for k, v in t.params.items() if compiled.reads(k, t.params)}
        budget = params.get("steps")
        if "steps" in compiled.distributions:
            params["steps"] = largest_steps(compiled)
        out.append(Configuration(first + i, params, t.origin, list(t.notes), budget))
    return out


def _value(dist: BaseDistribution, u: float) -> Any:
    """The point ``u`` in [0, 1) of the unit interval mapped onto ``dist`` (its strata onto its values)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    if isinstance(dist, IntDistribution):
        if dist.log:
            lo, hi = math.log(dist.low - 0.5 + 1e-9), math.log(dist.high + 0.5)
            return min(dist.high, max(dist.low, int(round(math.exp(lo + u * (hi - lo))))))
        count = (dist.high - dist.low) // dist.step + 1
        return dist.low + min(int(u * count), count - 1) * dist.step
    assert isinstance(dist, FloatDistribution)
    if dist.log:
        return float(math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low))))
    if dist.step is not None:
        count = int(round((dist.high - dist.low) / dist.step)) + 1
        return float(dist.low + min(int(u * count), count - 1) * dist.step)
    return float(dist.low + u * (dist.high - dist.low))
