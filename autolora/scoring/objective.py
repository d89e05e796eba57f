"""Objective recipes: which CLIP judge, which metrics, what weights, scalar or Pareto.

A recipe (``objectives/*.yaml``)::

    clip: {model: auto, pretrained: null}     # auto: the built-in judge for built-in models, else ViT-L-14/openai
    objectives:                               # one entry: scalar (prunable); several: Pareto front
      - {name: score, direction: maximize, terms: {style_gain: 1.0, content_text_delta: 1.0}}

Each objective value is the weighted sum of its terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autolora.errors import UserError, closest
from autolora.scoring.clip import ClipStyleContentScorer

REAL_DEFAULT_CLIP = ("ViT-L-14", "openai")


@dataclass(frozen=True)
class Target:
    """One optimisation direction: a weighted sum of metrics."""

    name: str
    direction: str
    terms: dict[str, float]

    def value(self, metrics: dict[str, float]) -> float:
        return sum(w * metrics[m] for m, w in self.terms.items())


@dataclass(frozen=True)
class Objective:
    name: str
    source: str
    clip_model: str
    clip_pretrained: str | None
    targets: tuple[Target, ...]
    description: str = ""

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

    def resolve_clip(self, base_is_builtin: bool, model: str | None, pretrained: str | None) -> tuple[str, str | None]:
        """The judge to load: config overrides, else the recipe, with ``auto`` resolved."""
        from autolora.models.builtin import DEFAULT_CLIP

        m = model or self.clip_model
        p = pretrained if model or pretrained else self.clip_pretrained
        if m == "auto":
            return (DEFAULT_CLIP, None) if base_is_builtin else REAL_DEFAULT_CLIP
        return m, p


def parse_objective(data: Any, name: str, source: str) -> Objective:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with 'objectives'")
    allowed = ("description", "clip", "objectives")
    for key in data:
        if key not in allowed:
            raise UserError(f"{source}: unknown key '{key}'{closest(str(key), allowed)}")
    clip = data.get("clip") or {}
    if not isinstance(clip, dict) or set(clip) - {"model", "pretrained"}:
        raise UserError(f"{source}: clip: expected {{model: NAME, pretrained: TAG_OR_FILE}}, got {clip!r}")
    entries = data.get("objectives")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{source}: objectives: expected a non-empty list of {{name, direction, terms}}")
    targets = []
    metrics = ClipStyleContentScorer.metrics
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
    return Objective(
        name=name,
        source=source,
        clip_model=str(clip.get("model", "auto")),
        clip_pretrained=clip.get("pretrained"),
        targets=tuple(targets),
        description=str(data.get("description", "")),
    )


def load_objective(name_or_file: str) -> tuple[Objective, str]:
    """A built-in recipe by name or a YAML file; returns the recipe and its text."""
    from autolora.search import read_recipe

    data, name, source, text = read_recipe(name_or_file, "autolora.objectives", "objective")
    return parse_objective(data, name, source), text
