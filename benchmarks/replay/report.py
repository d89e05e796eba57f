"""The replay's figures from its per-(style, seed) results: the JSON, docs/replay.md's markdown, the plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.replay.figures import best_preset, cell, curve_on, pooled, steps_ratio
from benchmarks.replay.lookup import StyleLookup

DEFAULT = "default"
RANDOM = "random"
TARGET_BUDGET = 30
"""The issue's first aim: the steps the default needs to reach random search's 30-trial result (<= 1/3)."""
PRESET_BUDGETS = (10, 20)
"""The issue's second aim: the default's pick beats the best preset by the pixel truth (>= 0.9)."""
COMPARISONS = (
    ("default", "random"),
    ("default", "random+median"),
    ("default", "quarter start"),
    ("presets+random+median", "quarter start"),
    ("tpe start 10", "quarter start"),
    ("tpe start 1", "quarter start"),
    ("presets+random+median", "random+median"),
    ("default", "optuna-tpe"),
    ("default", "auto no presets"),
    ("default", "auto no pruner"),
    ("auto rungs 200", "default"),
    ("auto+halving", "default"),
    ("auto+hyperband", "default"),
    ("gp+median", "default"),
    ("gp no pruner", "tpe no pruner"),
    ("portfolio+auto", "default"),
    ("portfolio+presets+auto", "default"),
)
"""Paired differences (same style and replay seed) that choose the defaults: sampler, startup, opening, pruner."""
KEYS = ("value", "usable", "progress", "steps")


def figures(
    results: list[dict[str, Any]], lookups: dict[str, StyleLookup], arms: list[str], budgets: tuple[int, ...]
) -> dict[str, Any]:
    by_style: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_style.setdefault(r["style"], []).append(r)
    cells: dict[str, Any] = {}
    presets: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    snapping: dict[str, Any] = {}
    for style, rs in by_style.items():
        preset = best_preset(lookups[style])
        presets[style] = preset
        cells[style] = {
            arm: {str(b): cell([r["arms"][arm]["budgets"][b] for r in _of(rs, arm)], preset) for b in budgets}
            for arm in arms
        }
        curves[style] = {arm: [[(s, v) for s, v, _ in r["arms"][arm]["curve"]] for r in _of(rs, arm)] for arm in arms}
        curves[style + ":progress"] = {
            arm: [[(s, p) for s, _, p in r["arms"][arm]["curve"]] for r in _of(rs, arm)] for arm in arms
        }
        for arm in arms:
            d = snapping.setdefault(arm, {"distance": [], "configs": []})
            d["distance"] += [x for r in _of(rs, arm) for x in r["arms"][arm]["distance"]]
            d["configs"] += [r["arms"][arm]["configs"] for r in _of(rs, arm)]
    out: dict[str, Any] = {
        "budgets": list(budgets),
        "arms": arms,
        "cells": cells,
        "pooled": pooled(cells),
        "best_preset": presets,
        "snapping": {
            arm: {"mean_distance": statistics.mean(d["distance"]), "distinct_configs": statistics.mean(d["configs"])}
            for arm, d in snapping.items()
        },
    }
    top = max(
        s
        for style in by_style
        for arm in arms
        for r in _of(by_style[style], arm)
        for s, _, _ in r["arms"][arm]["curve"]
    )
    grid = [top * i / 40 for i in range(41)]
    out["anytime"] = {
        "steps": grid,
        "value": {a: _pool([curve_on(curves[s][a], grid) for s in by_style]) for a in arms},
        "progress": {a: _pool([curve_on(curves[s + ":progress"][a], grid) for s in by_style]) for a in arms},
    }
    confirm = [r for r in results if "confirm_k" in r["arms"].get(DEFAULT, {})]
    if confirm:
        ks = sorted({int(k) for r in confirm for k in r["arms"][DEFAULT]["confirm_k"][budgets[0]]})
        out["confirm_top_k"] = {
            str(b): {
                str(k): {
                    key: statistics.mean(r["arms"][DEFAULT]["confirm_k"][b][k][key] for r in confirm)
                    for key in ("value", "usable", "progress", "kept")
                }
                for k in ks
            }
            for b in budgets
        }
    out["paired"] = {
        f"{a} - {b}": {str(n): paired(results, a, b, n) for n in budgets}
        for a, b in COMPARISONS
        if a in arms and b in arms
    }
    if DEFAULT in arms and RANDOM in arms:
        ratios = {}
        for style in by_style:
            target = cells[style][RANDOM][str(TARGET_BUDGET)]
            ratios[style] = steps_ratio(curves[style][DEFAULT], target["value"], target["steps"])
        out["aims"] = {
            "steps_ratio": ratios,
            "beats_preset": {
                str(b): {s: cells[s][DEFAULT][str(b)].get("beats_preset") for s in by_style} for b in PRESET_BUDGETS
            },
            "not_worse_than_preset": {
                str(b): {s: cells[s][DEFAULT][str(b)].get("not_worse_than_preset") for s in by_style}
                for b in PRESET_BUDGETS
            },
        }
    return out


def paired(results: list[dict[str, Any]], a: str, b: str, budget: int) -> dict[str, Any]:
    """Arm ``a`` less arm ``b`` on the same (style, seed), per outcome: the mean over styles of each style's mean
    difference, its standard error (within styles: the styles are the table's, not a sample of them) and how many
    styles favour ``a``."""
    by_style: dict[str, list[dict[str, float]]] = {}
    for r in results:
        if a in r["arms"] and b in r["arms"]:
            x, y = r["arms"][a]["budgets"][budget], r["arms"][b]["budgets"][budget]
            by_style.setdefault(r["style"], []).append({k: x[k] - y[k] for k in KEYS})
    out: dict[str, Any] = {}
    for k in KEYS:
        means, variances = [], []
        for ds in by_style.values():
            xs = [d[k] for d in ds]
            means.append(statistics.mean(xs))
            variances.append((statistics.variance(xs) if len(xs) > 1 else 0.0) / len(xs))
        n = len(means)
        out[k] = {
            "mean": statistics.mean(means),
            "se": (sum(variances) ** 0.5) / n,
            "styles_favouring": sum(m > 0 for m in means),
            "styles": n,
        }
    return out


def _of(results: list[dict[str, Any]], arm: str) -> list[dict[str, Any]]:
    """The results that replayed ``arm`` (an arm may run on fewer seeds: ``Arm.seeds``)."""
    return [r for r in results if arm in r["arms"]]


def _pool(curves: list[list[float]]) -> list[float]:
    return [statistics.mean(xs) for xs in zip(*curves, strict=True)]


def markdown(payload: dict[str, Any]) -> str:
    """docs/replay.md's table: arm x budget, pooled over styles (sd over styles in brackets), then the aims."""
    lines = [
        "| arm | trials | seeds | usable export | any export | confirmed value | pixel style | steps "
        "| beats best preset |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm in payload["arms"]:
        for b, e in payload["pooled"][arm].items():
            lines.append(
                f"| {arm} | {b} | {e['n']:.0f} | {e['usable']:.2f} | {e['exported']:.2f} | {e['value']:+.3f} "
                f"({e['value_sd_styles']:.3f}) | {e['progress']:+.2f} ({e['progress_sd_styles']:.2f}) | "
                f"{e['steps']:.0f} | {e.get('beats_preset', float('nan')):.2f} |"
            )
    aims = payload.get("aims")
    if aims:
        r = aims["steps_ratio"]
        reached = [x for x in r.values() if x is not None]
        lines.append("")
        lines.append(
            "Steps the default needs to reach random search's 30-trial confirmed value (aim <= 0.33): "
            + ", ".join(f"{s} {'never' if x is None else f'{x:.2f}'}" for s, x in r.items())
            + (f"; mean over the styles that reach it {statistics.mean(reached):.2f}" if reached else "")
        )
        for b, per in aims["beats_preset"].items():
            vals = [v for v in per.values() if v is not None]
            lines.append(
                f"P(the default's pick beats the best preset by the pixel truth) at {b} trials (aim >= 0.9): "
                + ", ".join(f"{s} {v:.2f}" for s, v in per.items() if v is not None)
                + (f"; mean {statistics.mean(vals):.2f}" if vals else "")
            )
            ties = [v for v in aims["not_worse_than_preset"][b].values() if v is not None]
            if ties:
                lines.append(f"  ... at least as good as the best preset: mean {statistics.mean(ties):.2f}")
    if payload.get("paired"):
        lines += ["", "| paired (same style and seed) | trials | confirmed value | usable | pixel style | steps |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for name, per in payload["paired"].items():
            for b, d in per.items():
                cells = [f"{d[k]['mean']:+.3f} ± {1.96 * d[k]['se']:.3f} ({d[k]['styles_favouring']}/{d[k]['styles']})"
                         for k in ("value", "usable", "progress")]  # fmt: skip
                lines.append(f"| {name} | {b} | " + " | ".join(cells) + f" | {d['steps']['mean']:+.0f} |")
    if payload.get("confirm_top_k"):
        lines.append("")
        lines.append("The default's export when the confirmation stage takes the top K (value / usable / pixel style):")
        for b, per in payload["confirm_top_k"].items():
            cells = [f"K={k} {d['value']:+.3f} / {d['usable']:.3f} / {d['progress']:+.3f}" for k, d in per.items()]
            lines.append(f"  {b} trials: " + ", ".join(cells))
    snap = payload["snapping"]
    lines.append("")
    lines.append(
        "Snapping (mean Gower distance from a proposal to its configuration; distinct configurations in the largest "
        "budget's study): "
        + ", ".join(f"{a} {d['mean_distance']:.2f}/{d['distinct_configs']:.0f}" for a, d in snap.items())
    )
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: Path) -> None:
    """Anytime curves: the would-be export's confirmed value and pixel style against training steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = payload["anytime"]["steps"]
    for ax, key, label in (
        (axes[0], "value", "export's confirmed value"),
        (axes[1], "progress", "export's pixel style (progress)"),
    ):
        colours = plt.get_cmap("tab20")
        for i, (arm, ys) in enumerate(payload["anytime"][key].items()):
            by_budget = payload["pooled"][arm]
            end = by_budget[str(max(payload["budgets"]))]["steps"]  # where its largest studies end
            if end == by_budget[str(min(payload["budgets"]))]["steps"]:  # a fixed few trials (the presets alone)
                ax.plot([end], [by_budget[str(max(payload["budgets"]))][key]], "o", color=colours(i), label=arm)
                continue
            shown = [(x, y) for x, y in zip(steps, ys, strict=True) if x <= end]
            ax.plot(*zip(*shown, strict=True), label=arm, color=colours(i), lw=2.6 if arm in (DEFAULT, RANDOM) else 1.0,
                    ls="-" if arm in (DEFAULT, RANDOM) else "--")  # fmt: skip
        ax.set_xlabel("training steps spent")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    n = len(payload["cells"])
    fig.suptitle(f"{payload['table']}: the would-be export by training steps (mean of {n} styles x {payload['seeds']} "
                 "seeds; a curve ends at its 40-trial mean)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
