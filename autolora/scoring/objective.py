"""Objective recipes: which CLIP judge, which metrics, what weights, scalar or Pareto.

A recipe (``objectives/*.yaml``)::

    clip: {model: auto, pretrained: null}     # auto: the built-in judge for built-in models, else ViT-L-14/openai
    objectives:                               # one entry: scalar (prunable); several: Pareto front
      - {name: score, direction: maximize, terms: {style_gain: 1.0, content_text_delta: 1.0}}
    constraints:                              # optional: a trial outside them is infeasible, never best
      - {name: content, metric: content_text_ratio, min: 0.95}

Each objective value is the weighted sum of its terms. A constraint bounds one metric (``min``, ``max`` or both)
at the trial's last evaluation; it is recorded with ``Trial.set_constraint`` (see ``autolora.core.feasible``).
``scorer: fusion`` marks a recipe for ``autolora fuse``, whose terms are ``autolora.scoring.styles.MultiStyleScorer``
metrics (``style_gain_min``...); the default, ``style-content``, is ``tune``'s ``ClipStyleContentScorer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autolora.errors import UserError, closest
from autolora.models.builtin import judge_for
from autolora.recipes import builtin_names, read_recipe
from autolora.scoring.clip import ClipStyleContentScorer
from autolora.scoring.styles import MultiStyleScorer

REAL_DEFAULT_CLIP = ("ViT-L-14", "openai")
SCORERS = {"style-content": ClipStyleContentScorer.metrics, "fusion": MultiStyleScorer.metrics}
"""Recipe ``scorer`` -> the metrics its terms may name."""
_COMMAND = {"style-content": "autolora tune", "fusion": "autolora fuse"}


@dataclass(frozen=True)
class Target:
    """One optimisation direction: a weighted sum of metrics."""

    name: str
    direction: str
    terms: dict[str, float]

    def value(self, metrics: dict[str, float]) -> float:
        return sum(w * metrics[m] for m, w in self.terms.items())


@dataclass(frozen=True)
class Constraint:
    """A floor and/or ceiling on one metric: a trial outside it is infeasible and can never be best."""

    name: str
    metric: str
    min: float | None = None
    max: float | None = None

    def violation(self, metrics: dict[str, float]) -> float:
        """Optuna's constraint value: <= 0 feasible, else how far outside the bound the metric is."""
        v = metrics[self.metric]
        parts = [b - v for b in (self.min,) if b is not None] + [v - b for b in (self.max,) if b is not None]
        return max(parts)

    def broken(self, metrics: dict[str, float]) -> str | None:
        """The violation in words (``content_text_ratio 0.912 < 0.95``), None when the metric is within bounds."""
        v = metrics[self.metric]
        if self.min is not None and v < self.min:
            return f"{self.metric} {v:.4f} < {self.min:g}"
        if self.max is not None and v > self.max:
            return f"{self.metric} {v:.4f} > {self.max:g}"
        return None

    def describe(self) -> str:
        lo = f"{self.min:g} <= " if self.min is not None else ""
        hi = f" <= {self.max:g}" if self.max is not None else ""
        return f"{lo}{self.metric}{hi}"


@dataclass(frozen=True)
class Objective:
    name: str
    source: str
    clip_model: str
    clip_pretrained: str | None
    targets: tuple[Target, ...]
    description: str = ""
    scorer: str = "style-content"
    """Which scorer's metrics the terms name (see ``SCORERS``)."""
    constraints: tuple[Constraint, ...] = ()
    style: str | None = None
    """What the recipe's ``style`` term is: ``auto`` (``style_auto``: the terms the judge's self-check passes,
    chosen per study) or a fixed term; None for a recipe of another scorer."""

    @property
    def directions(self) -> list[str]:
        return [t.direction for t in self.targets]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    @property
    def is_scalar(self) -> bool:
        return len(self.targets) == 1

    def values(self, metrics: dict[str, float]) -> list[float]:
        return [t.value(metrics) for t in self.targets]

    def violations(self, metrics: dict[str, float]) -> dict[str, float]:
        """Constraint name -> optuna constraint value (<= 0 feasible)."""
        return {c.name: c.violation(metrics) for c in self.constraints}

    def broken(self, metrics: dict[str, float]) -> list[str]:
        """The constraints ``metrics`` break, in words; empty when feasible."""
        return [b for c in self.constraints if (b := c.broken(metrics))]

    def resolve_clip(self, base_model: str, model: str | None, pretrained: str | None) -> tuple[str, str | None]:
        """The judge to load: config overrides, else the recipe, with ``auto`` resolved.

        ``auto`` is the built-in judge that goes with a built-in base model (``builtin:miniworld`` ->
        ``builtin:miniworld-clip``), else OpenAI's ViT-L/14, the CLIP that SD 1.x was trained with.
        """

        m = model or self.clip_model
        p = pretrained if model or pretrained else self.clip_pretrained
        if m == "auto":
            judge = judge_for(base_model)
            return (judge, None) if judge else REAL_DEFAULT_CLIP
        return m, p


def parse_objective(data: Any, name: str, source: str) -> Objective:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with 'objectives'")
    allowed = ("description", "clip", "objectives", "scorer", "constraints", "style")
    for key in data:
        if key not in allowed:
            raise UserError(f"{source}: unknown key '{key}'{closest(str(key), allowed)}")
    clip = data.get("clip") or {}
    if not isinstance(clip, dict) or set(clip) - {"model", "pretrained"}:
        raise UserError(f"{source}: clip: expected {{model: NAME, pretrained: TAG_OR_FILE}}, got {clip!r}")
    entries = data.get("objectives")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{source}: objectives: expected a non-empty list of {{name, direction, terms}}")
    scorer = data.get("scorer", "style-content")
    if scorer not in SCORERS:
        raise UserError(f"{source}: scorer: expected {' or '.join(SCORERS)}, got {scorer!r}")
    targets = []
    metrics = SCORERS[scorer]
    style = _style_metric(data.get("style", "auto"), metrics, source) if scorer == "style-content" else None
    for i, e in enumerate(entries):
        where = f"{source}: objectives[{i}]"
        if not isinstance(e, dict):
            raise UserError(f"{where}: expected a mapping with name, direction, terms")
        for key in e:
            if key not in ("name", "direction", "terms"):
                raise UserError(f"{where}: unknown key '{key}'{closest(str(key), ('name', 'direction', 'terms'))}")
        direction = e.get("direction", "maximize")
        if direction not in ("maximize", "minimize"):
            raise UserError(f"{where}.direction: expected maximize or minimize, got {direction!r}")
        terms = e.get("terms")
        if not isinstance(terms, dict) or not terms:
            raise UserError(f"{where}.terms: expected a mapping metric -> weight, got {terms!r}")
        if style is not None and "style" in terms:  # the recipe's style term, as its ``style`` key chose
            terms = {(style if m == "style" else m): w for m, w in terms.items()}
        for m, w in terms.items():
            if m not in metrics:
                raise UserError(
                    f"{where}.terms: unknown metric '{m}'{closest(str(m), metrics)}; metrics: {', '.join(metrics)}"
                )
            if not isinstance(w, (int, float)) or isinstance(w, bool):
                raise UserError(f"{where}.terms.{m}: expected a number, got {w!r}")
        targets.append(Target(str(e.get("name", f"objective_{i}")), direction, {m: float(w) for m, w in terms.items()}))
    if len({t.name for t in targets}) != len(targets):
        raise UserError(f"{source}: objectives: names must be distinct")
    constraints = _parse_constraints(data.get("constraints"), metrics, scorer, source)
    return Objective(
        name=name,
        source=source,
        clip_model=str(clip.get("model", "auto")),
        clip_pretrained=clip.get("pretrained"),
        targets=tuple(targets),
        description=str(data.get("description", "")),
        scorer=scorer,
        constraints=constraints,
        style=str(data.get("style", "auto")) if style is not None else None,
    )


def _style_metric(value: Any, metrics: tuple[str, ...], source: str) -> str:
    """The metric a recipe's ``style`` key names: ``auto`` (``style_auto``, the terms the judge's self-check passes)
    or one style term."""
    terms = [m for m in metrics if m.startswith("style_") and m not in ("style_base", "style_auto")]
    if value == "auto":
        return "style_auto"
    if value not in terms:
        raise UserError(f"{source}: style: expected auto or one of {', '.join(terms)}, got {value!r}"
                        f"{closest(str(value), terms)}")  # fmt: skip
    return str(value)


def _parse_constraints(entries: Any, metrics: tuple[str, ...], scorer: str, source: str) -> tuple[Constraint, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise UserError(f"{source}: constraints: expected a list of {{name, metric, min, max}}, got {entries!r}")
    keys = ("name", "metric", "min", "max")
    out = []
    for i, e in enumerate(entries):
        where = f"{source}: constraints[{i}]"
        if not isinstance(e, dict):
            raise UserError(f"{where}: expected a mapping with name, metric and min and/or max, got {e!r}")
        for key in e:
            if key not in keys:
                raise UserError(f"{where}: unknown key '{key}'{closest(str(key), keys)}")
        metric = e.get("metric")
        if metric not in metrics:
            raise UserError(f"{where}.metric: unknown metric {metric!r}{closest(str(metric), metrics)}")
        bounds = {}
        for key in ("min", "max"):
            b = e.get(key)
            if b is not None and (not isinstance(b, (int, float)) or isinstance(b, bool)):
                raise UserError(f"{where}.{key}: expected a number, got {b!r}")
            bounds[key] = None if b is None else float(b)
        if bounds["min"] is None and bounds["max"] is None:
            raise UserError(f"{where}: expected min, max or both")
        if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
            raise UserError(f"{where}: min {bounds['min']:g} is above max {bounds['max']:g}")
        out.append(Constraint(str(e.get("name", metric)), str(metric), bounds["min"], bounds["max"]))
    if len({c.name for c in out}) != len(out):
        raise UserError(f"{source}: constraints: names must be distinct")
    return tuple(out)


def load_objective(name_or_file: str, scorer: str | None = "style-content") -> tuple[Objective, str]:
    """A built-in recipe by name or a YAML file; returns the recipe and its text.

    Args:
        name_or_file: Built-in name (``objectives/``) or YAML file.
        scorer: The scorer the caller runs; a recipe for another one is refused. None accepts any.
    """

    data, name, source, text = read_recipe(name_or_file, "autolora.objectives", "objective")
    objective = parse_objective(data, name, source)
    if scorer is not None and objective.scorer != scorer:
        fitting = [n for n in builtin_names("autolora.objectives") if _scorer_of(n) == scorer]
        raise UserError(
            f"{source}: a recipe for {_COMMAND[objective.scorer]} (scorer {objective.scorer}); "
            f"{_COMMAND[scorer]} takes {', '.join(fitting)} or a file with scorer: {scorer}"
        )
    return objective, text


def _scorer_of(builtin: str) -> str:
    data = read_recipe(builtin, "autolora.objectives", "objective")[0]
    return str(data.get("scorer", "style-content")) if isinstance(data, dict) else "style-content"
