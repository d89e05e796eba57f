"""The trial table as a training oracle: a configuration's values at every rung, read instead of trained.

The replay is **tabular**: a trial's configuration is the table's configuration nearest to what the sampler
proposed (``StyleLookup.snap``), and the trial gets that configuration's recorded values at each rung its step
budget reaches. It is not a surrogate because none could stand in for training on this table (``docs/replay.md``:
held-out Spearman +0.5 against a seed-noise ceiling of +0.87); what the replay reports is then the real trained
outcome of the configuration each arm would export, never a model's guess of it.

What snapping does to a sampler: it sees the objective as a step function over the Voronoi cells of the design
(every proposal in a cell gets its configuration's values). Random search then draws configurations with the
cells' volumes as weights, and a model-based sampler can only tell cells apart, so its advantage from fine moves
inside a cell is lost. Distance is Gower's (mean over the dimensions either side reads: a number's difference on
its scale, log where the space searches it in logs, over the range; a category 0 or 1); ``steps`` is not a
dimension, it picks the rung (every configuration was trained to the space's largest budget and read at every
rung). Ties go to the lower configuration number.

Values per (configuration, rung) come from the table judge's re-scored trials (``<table>-trials.jsonl``: today's
recipe on the search seeds' 8 samples and the confirmation seeds' 24), so the replay ranks by the objective users
get, its content constraints included.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autolora.scoring.objective import Objective
    from autolora.tune.search import CompiledSpace

USABLE_PROGRESS = 1 / 3
"""Usable (the table's figures): the pixel style a third of the way to the references ..."""
KEPT_POINTS = 0.05
"""... with the subject's pixel content within 5 points of the base model's."""


@dataclass(frozen=True)
class Reading:
    """One configuration at one rung on one seed set: the objective's value, its constraints' excess (0: feasible)
    and the pixel truth."""

    value: float
    excess: float
    progress: float
    loss: float

    @property
    def feasible(self) -> bool:
        return self.excess <= 0

    @property
    def kept(self) -> bool:
        return self.loss <= KEPT_POINTS + 1e-9

    @property
    def usable(self) -> bool:
        return self.kept and self.progress >= USABLE_PROGRESS


@dataclass
class StyleLookup:
    """One style of a table: its configurations' params and every (configuration, rung) reading."""

    style: str
    compiled: CompiledSpace
    params: dict[int, dict[str, Any]]
    origins: dict[int, str]
    budgets: dict[int, int | None]
    search: dict[tuple[int, int], Reading]
    confirm: dict[tuple[int, int], Reading]
    rungs: list[int]
    eval_every: int
    _scales: dict[str, tuple[float, float, bool]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from optuna.distributions import CategoricalDistribution

        for name, d in self.compiled.distributions.items():
            if name == "steps" or isinstance(d, CategoricalDistribution):
                continue
            log = bool(getattr(d, "log", False))
            lo, hi = float(d.low), float(d.high)  # type: ignore[attr-defined]
            self._scales[name] = (math.log(lo) if log else lo, math.log(hi) if log else hi, log)

    @property
    def configs(self) -> list[int]:
        return sorted(self.params)

    def distance(self, a: dict[str, Any], b: dict[str, Any]) -> float:
        """Gower's distance between two params dicts over the dimensions either reads (``steps`` left out)."""
        total, n = 0.0, 0
        for name in self.compiled.distributions:
            if name == "steps":
                continue
            ra, rb = self.compiled.reads(name, a) and name in a, self.compiled.reads(name, b) and name in b
            if not ra and not rb:
                continue
            n += 1
            if ra != rb:
                total += 1.0
            elif name in self._scales:
                lo, hi, log = self._scales[name]
                x, y = (math.log(float(v)) if log else float(v) for v in (a[name], b[name]))
                total += abs(x - y) / (hi - lo) if hi > lo else 0.0
            else:
                total += float(a[name] != b[name])
        return total / n if n else 0.0

    def snap(self, params: dict[str, Any]) -> tuple[int, float]:
        """The table's configuration nearest to ``params`` (ties: the lower number), and its distance."""
        return min(((c, self.distance(params, self.params[c])) for c in self.configs), key=lambda cd: (cd[1], cd[0]))

    def rung(self, steps: int) -> int:
        """The table's rung for a step budget: the nearest (the lower on a tie)."""
        return min(self.rungs, key=lambda r: (abs(r - steps), r))

    def reports(self, steps: int, every: int | None = None) -> list[int]:
        """The steps a trial of ``steps`` reports at, as ``tune`` does (every ``eval_every``, or ``every``, and at
        its end), each mapped onto the table's rungs."""
        every = every or self.eval_every
        at = sorted({*range(every, steps + 1, every), steps})
        return sorted({self.rung(s) for s in at})


def compile_space(space_text: str, base_model: str) -> CompiledSpace:
    """The table's space compiled as ``tune`` compiles it for the table's base model (its module names from the
    denoiser's config; no weights are loaded)."""
    import yaml

    from autolora.models.layers import candidates_from_config
    from autolora.models.loading import resolve_model
    from autolora.tune.search import parse_search_space

    ref = resolve_model(base_model)
    space = parse_search_space(yaml.safe_load(space_text), "table", "meta.json")
    return space.compile(candidates_from_config(ref.denoiser_config), ref.arch)


def _reading(entry: dict[str, Any], recipe: Objective) -> Reading:
    metrics = {k: float(v) for k, v in entry.items() if isinstance(v, int | float) and v is not None}
    excess = sum(max(0.0, v) for v in recipe.violations(metrics).values())
    return Reading(float(entry["objective"]), excess, float(entry["progress"]), float(entry["loss"]))


def load_lookups(table: Path, trials: Path, styles: list[str] | None = None) -> dict[str, StyleLookup]:
    """Every style of the packed table ``table`` (params, space) with the judge's re-scored ``trials`` (values)."""
    from autolora.scoring.objective import load_objective
    from autolora.tune.plan import _aligned_eval_every
    from benchmarks.table.judge import RECIPE
    from benchmarks.table.store import load_table

    recipe, _ = load_objective(RECIPE)
    by_style: dict[str, list[dict[str, Any]]] = {}
    for line in trials.read_text().splitlines():
        if line.strip():
            t = json.loads(line)
            by_style.setdefault(t["style"], []).append(t)
    tables = load_table(table, styles, images=False)
    out: dict[str, StyleLookup] = {}
    compiled: dict[str, CompiledSpace] = {}
    for name, st in tables.items():
        if name not in by_style:
            continue
        space = st.meta["space"]
        if space not in compiled:
            compiled[space] = compile_space(space, st.meta["world"]["base_model"])
        rows = st.complete()
        search, confirm = {}, {}
        for t in by_style[name]:
            if t["objective"] is None or math.isnan(float(t["objective"])):
                continue
            (search if t["part"] == "search" else confirm)[(int(t["config"]), int(t["step"]))] = _reading(t, recipe)
        done = {int(r["config"]) for r in rows}
        out[name] = StyleLookup(
            style=name,
            compiled=compiled[space],
            params={int(r["config"]): dict(r["params"]) for r in rows},
            origins={int(r["config"]): str(r["origin"]) for r in rows},
            budgets={int(r["config"]): r.get("budget") for r in rows},
            search={k: v for k, v in search.items() if k[0] in done},
            confirm={k: v for k, v in confirm.items() if k[0] in done},
            rungs=[int(s) for s in st.meta["rungs"]],
            eval_every=_aligned_eval_every(compiled[space]),
        )
    return out
