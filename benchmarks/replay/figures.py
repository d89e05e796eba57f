"""What the replays say: per arm and budget, the would-be export's pixel truth and confirmed value, the steps spent,
and the issue's two aims (steps to reach random search's 30-trial result; the pick beating the best preset)."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.replay.lookup import Reading, StyleLookup

Outcome = dict[str, float]
"""One replayed study at one budget: ``value`` (confirmed; 0 = nothing exported, the base model), ``usable``,
``progress``, ``kept``, ``exported``, ``steps``."""


def outcome(export: Any) -> Outcome:
    c: Reading | None = export.confirmed
    if c is None:  # nothing exported: the base model, subject kept and no style
        return {
            "value": 0.0,
            "usable": 0.0,
            "progress": 0.0,
            "kept": 1.0,
            "exported": 0.0,
            "steps": float(export.steps),
        }
    return _of_reading(c, export.steps)


def _of_reading(r: Reading, steps: float) -> Outcome:
    return {
        "value": r.value,
        "usable": float(r.usable),
        "progress": r.progress,
        "kept": float(r.kept),
        "exported": 1.0,
        "steps": float(steps),
    }


def pixel_key(o: Outcome) -> tuple[float, float, float]:
    """How a user ranks an adapter by its pictures: usable first, then the subject kept, then the style's strength
    (nothing exported: the base model, subject kept and no style)."""
    return (o["usable"], o["kept"], o["progress"])


def best_preset(lookup: StyleLookup) -> Outcome | None:
    """The best preset by the pixel truth (at its own step budget, whatever the judge says): the most a user gets
    from the presets by hand, choosing among them by eye."""
    found = []
    for c, origin in lookup.origins.items():
        if not origin.startswith("preset"):
            continue
        budget = lookup.budgets.get(c) or max(lookup.rungs)
        r = lookup.confirm.get((c, lookup.rung(int(budget))))
        if r is not None:
            found.append(_of_reading(r, budget))
    return max(found, key=pixel_key) if found else None


def mean_sd(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def cell(outcomes: list[Outcome], preset: Outcome | None) -> dict[str, float]:
    """Means (and sds over replay seeds) of one arm at one budget on one style."""
    value, value_sd = mean_sd([o["value"] for o in outcomes])
    progress, progress_sd = mean_sd([o["progress"] for o in outcomes])
    out = {
        "n": len(outcomes),
        "usable": statistics.mean(o["usable"] for o in outcomes),
        "exported": statistics.mean(o["exported"] for o in outcomes),
        "kept": statistics.mean(o["kept"] for o in outcomes),
        "value": value,
        "value_sd": value_sd,
        "progress": progress,
        "progress_sd": progress_sd,
        "steps": statistics.mean(o["steps"] for o in outcomes),
    }
    if preset is not None:
        out["beats_preset"] = statistics.mean(float(pixel_key(o) > pixel_key(preset)) for o in outcomes)
        out["not_worse_than_preset"] = statistics.mean(float(pixel_key(o) >= pixel_key(preset)) for o in outcomes)
    return out


def pooled(cells: dict[str, dict[str, dict[str, dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per arm and budget: the mean over styles of each style's mean, and its sd over styles."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    styles = list(cells)
    for arm in cells[styles[0]]:
        for budget in cells[styles[0]][arm]:
            entry: dict[str, float] = {}
            for key in ("n", "usable", "exported", "kept", "value", "progress", "steps", "beats_preset"):
                xs = [cells[s][arm][budget][key] for s in styles if key in cells[s][arm][budget]]
                if xs:
                    entry[key], entry[key + "_sd_styles"] = mean_sd(xs)
            out.setdefault(arm, {})[budget] = entry
    return out


def curve_on(points: list[list[tuple[float, float]]], grid: list[float]) -> list[float]:
    """The mean over studies of a step function (value of the export after the last trial within ``x`` steps;
    0 before the first export) on ``grid``."""
    out = []
    for x in grid:
        vals = []
        for pts in points:
            v = 0.0
            for s, y in pts:
                if s > x:
                    break
                v = y
            vals.append(v)
        out.append(statistics.mean(vals))
    return out


def steps_ratio(default_curve: list[list[tuple[float, float]]], target: float, target_steps: float) -> float | None:
    """The steps the default's mean anytime curve needs to reach ``target`` (random search's mean 30-trial
    confirmed value), over the steps random search spent (None: never reached within the default's budget)."""
    xs = sorted({s for pts in default_curve for s, _ in pts})
    for x, y in zip(xs, curve_on(default_curve, xs), strict=True):
        if y >= target - 1e-12:
            return x / target_steps
    return None
