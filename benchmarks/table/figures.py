"""What the table shows, from the table alone (no training): docs/table.md.

A *configuration* is a design point at a step budget the space allows (every rung from the space's fewest steps
on): what a study could train and export. Each is read on the confirmation seeds (24 samples; the search seeds'
8 only for the test-retest), against the base model's samples of the same prompts and seeds:

- **progress**: how far the style's pixel presence moved from the base's towards the references' (0: the base,
  1: the references as drawn); ``progress_vae`` against the references' VAE round trip instead (the most a sample
  can show);
- **content**: the share of samples whose pixels read the prompt's shape and colour; **kept** when within 5
  points of the base's;
- **usable**: progress at least 1/3 and content kept.

Printed per style: the share of usable configurations, the best usable one and the best preset (at its own step
budget); which dimensions matter (optuna's fANOVA on progress and on content, PED-ANOVA on usability); the
usable share per level of each dimension; the validity of each style term (Spearman against the pixel presence,
over every configuration) and of the content constraint (false-feasible / false-infeasible rates against "kept");
the test-retest of the search value (search seeds against confirmation seeds).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.table.store import StyleTable, load_table

USABLE_PROGRESS = 1 / 3
"""A third of the way from the base's pixel style to the references'."""
CONTENT_POINTS = 0.05
"""Content within 5 points of the base's."""
STYLE_TERMS = ("style_gain", "style_direction", "style_gram", "style_fidelity")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _right(truth: dict[str, list[Any]]) -> float:
    return _mean([float(a and b) for a, b in zip(truth["shape"], truth["colour"], strict=True)])


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def fewest_steps(table: StyleTable) -> int:
    """The space's fewest steps (its ``steps.low``), else the first rung."""
    import yaml

    steps = (yaml.safe_load(table.meta["space"]).get("params") or {}).get("steps")
    if isinstance(steps, dict) and "low" in steps:
        return int(steps["low"])
    return int(steps) if isinstance(steps, int) else int(table.meta["rungs"][0])


def configurations(table: StyleTable) -> list[dict[str, Any]]:
    """Every (design point, step budget) of the table, read on the confirmation seeds (see the module doc)."""
    base = table.meta["base"]["confirm"]["truth"]
    refs = table.meta.get("references") or {}
    has_truth = bool(base)
    base_presence = _mean(base["presence"]) if has_truth else float("nan")
    base_content = _right(base) if has_truth else float("nan")
    low = fewest_steps(table)
    out = []
    for row in table.complete():
        for rung in row["rungs"]:
            if rung["step"] < low:
                continue
            conf, search = rung["confirm"], rung["search"]
            item: dict[str, Any] = {
                "config": row["config"],
                "origin": row["origin"],
                "budget": row.get("budget"),
                "steps": rung["step"],
                "params": row["params"],
                "spec": row["spec"],
                "objective": conf["values"][0],
                "search_objective": search["values"][0],
                "feasible": all(v <= 0 for v in conf["violations"].values()),
                **{t: _mean(conf["metrics"][t]) for t in STYLE_TERMS if t in conf["metrics"]},
                "content_text_ratio": _mean(conf["metrics"]["content_text_ratio"]),
            }
            if has_truth:
                presence = _mean(conf["truth"]["presence"])
                item["presence"] = presence
                item["progress"] = (presence - base_presence) / (refs["presence"] - base_presence)
                item["progress_vae"] = (presence - base_presence) / (refs["presence_vae"] - base_presence)
                item["content"] = _right(conf["truth"])
                item["kept"] = item["content"] >= base_content - CONTENT_POINTS - 1e-9
                item["usable"] = item["kept"] and item["progress"] >= USABLE_PROGRESS
                item["usable_vae"] = item["kept"] and item["progress_vae"] >= USABLE_PROGRESS
                # The reader's own ceiling: a sample that drew the style perfectly reads no better than the style's
                # pictures through the VAE (meta.references.content_vae); kept against the lower of the two.
                floor = min(base_content, refs.get("content_vae", base_content)) - CONTENT_POINTS - 1e-9
                item["usable_reader"] = item["content"] >= floor and item["progress"] >= USABLE_PROGRESS
            out.append(item)
    return out


def style_figures(table: StyleTable) -> dict[str, Any]:
    """The figures of one style (docs/table.md's rows and lists)."""
    confs = configurations(table)
    base = table.meta["base"]["confirm"]["truth"]
    out: dict[str, Any] = {
        "style": table.style,
        "rows": len(table.rows),
        "failed": sum(1 for r in table.rows if r.get("failed")),
        "configurations": len(confs),
        "seconds": sum(sum(r["seconds"].values()) for r in table.rows),
    }
    if not confs:
        return out
    out["test_retest"] = _spearman([c["search_objective"] for c in confs], [c["objective"] for c in confs])
    if not base:
        return out
    refs = table.meta["references"]
    out.update(
        base_presence=_mean(base["presence"]),
        base_content=_right(base),
        refs_presence=refs["presence"],
        refs_presence_vae=refs["presence_vae"],
        usable=sum(c["usable"] for c in confs) / len(confs),
        usable_vae=sum(c["usable_vae"] for c in confs) / len(confs),
        usable_reader=sum(c["usable_reader"] for c in confs) / len(confs),
        reader_ceiling=refs.get("content_vae"),
        points_with_a_usable_budget=len({c["config"] for c in confs if c["usable"]}),
        points=len({c["config"] for c in confs}),
        kept=sum(c["kept"] for c in confs) / len(confs),
    )
    design = [c for c in confs if not c["origin"].startswith("anchor")]
    for key in ("usable", "usable_vae", "usable_reader", "kept"):  # shares of the design and the presets only
        out[key] = sum(c[key] for c in design) / max(1, len(design))
    out["points_with_a_usable_budget"] = len({c["config"] for c in design if c["usable"]})
    out["points"] = len({c["config"] for c in design})
    best = max(confs, key=lambda c: (c["usable"], c["progress"]))
    out["best"] = _shown(best)
    anchors = [c for c in confs if c["origin"].startswith("anchor")]
    if anchors:
        out["best_anchor"] = _shown(max(anchors, key=lambda c: (c["usable"], c["progress"])))
    out["any_usable"] = any(c["usable"] for c in confs)
    presets = [c for c in confs if c["origin"].startswith("preset") and c["steps"] == (c["budget"] or c["steps"])]
    if presets:
        out["best_preset"] = _shown(max(presets, key=lambda c: (c["usable"], c["progress"])))
    out["validity"] = {
        t: _spearman([c[t] for c in confs], [c["presence"] for c in confs]) for t in (*STYLE_TERMS, "objective")
    }
    out["validity_content_ratio"] = _spearman([c["content_text_ratio"] for c in confs], [c["content"] for c in confs])
    feasible = [c for c in confs if c["feasible"]]
    kept = [c for c in confs if c["kept"]]
    out["constraint"] = {
        "feasible": len(feasible),
        "false_feasible": (sum(not c["kept"] for c in feasible) / len(feasible)) if feasible else float("nan"),
        "worst_feasible_loss": max((out["base_content"] - c["content"] for c in feasible), default=float("nan")),
        "false_infeasible": (sum(not c["feasible"] for c in kept) / len(kept)) if kept else float("nan"),
    }
    out["by_level"] = by_level(design, _ranges(table.meta.get("space")))
    out["importance"] = importances(confs)
    return out


def _shown(c: dict[str, Any]) -> dict[str, Any]:
    keys = ("config", "origin", "steps", "spec", "progress", "progress_vae", "content", "usable", "objective")
    return {k: c[k] for k in keys if k in c}


def _levels(c: dict[str, Any]) -> dict[str, Any]:
    """A configuration's settings by dimension, the targets split into their blocks and layers."""
    out = {k: v for k, v in c["params"].items() if k not in ("steps", "target")}
    if "target" in c["params"]:
        blocks, layers, _ = str(c["params"]["target"]).split("|")
        out.update(blocks=blocks, layers=layers)
    out["steps"] = c["steps"]
    return out


def _ranges(space: Any) -> dict[str, tuple[float, float, bool]]:
    """(low, high, log) of each numeric range of the table's search space (its YAML text as the meta keeps it)."""
    import yaml

    params = (yaml.safe_load(space) or {}).get("params", {}) if isinstance(space, str) else {}
    return {
        name: (float(p["low"]), float(p["high"]), bool(p.get("log", False)))
        for name, p in params.items()
        if isinstance(p, dict) and "low" in p and "high" in p
    }


def by_level(
    confs: list[dict[str, Any]], ranges: dict[str, tuple[float, float, bool]] | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """Per level of each dimension: how many configurations, the usable share, the median progress (one overshooting
    configuration moves a mean) and the share that kept the content. A range of the space with more than six
    values falls in three equal bins of the range (of its logarithm for a log range), the same bins for every
    style, so levels pool across styles; steps are rungs."""
    import numpy as np

    levels = [_levels(c) for c in confs]
    ranges = ranges or {}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in sorted({k for lv in levels for k in lv}):
        values = [lv.get(name) for lv in levels]
        present = sorted(v for v in values if v is not None)
        cuts: list[float] = []
        if name in ranges and name != "steps" and len(set(present)) > 6:
            low, high, log = ranges[name]
            cuts = list(np.geomspace(low, high, 4) if log else np.linspace(low, high, 4))

        def label(v: Any, cuts: list[float] = cuts) -> str:
            if v is None:
                return "-"
            if not cuts:
                return str(v)
            i = 0 if v < cuts[1] else (1 if v < cuts[2] else 2)
            return f"{cuts[i]:.2g}-{cuts[i + 1]:.2g}"

        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        first: dict[str, Any] = {}
        for c, v in sorted(zip(confs, values, strict=True), key=lambda cv: (cv[1] is not None, cv[1] or 0)):
            groups[label(v)].append(c)
            first.setdefault(label(v), len(first))
        out[name] = {
            k: {
                "n": len(g),
                "usable": round(sum(c["usable"] for c in g) / len(g), 3),
                "progress": round(statistics.median([c["progress"] for c in g]), 3),
                "kept": round(sum(c["kept"] for c in g) / len(g), 3),
            }
            for k, g in sorted(groups.items(), key=lambda kg: first[kg[0]])
        }
    return out


def importances(confs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """optuna's importances over the configurations as trials of a study: fANOVA of the pixel progress and of the
    content, PED-ANOVA of usability (progress less twice the content lost beyond the 5 points: what separates the
    best tenth)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = sorted({k for c in confs for k in c["params"]})
    dists: dict[str, Any] = {}
    for name in names:
        values = [c["params"][name] if name != "steps" else c["steps"] for c in confs if name in c["params"]]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and len(set(values)) > 6:
            low, high = min(values), max(values)
            integer = all(float(v).is_integer() for v in values)
            log = low > 0 and high / low > 20
            dists[name] = (
                IntDistribution(int(low), int(high), log=log) if integer else FloatDistribution(low, high, log=log)
            )
        else:
            dists[name] = CategoricalDistribution(sorted(set(values), key=str))
    base_content = max(c["content"] for c in confs if "content" in c)  # only the spread matters here
    out = {}
    targets = {
        "progress": lambda c: c["progress"],
        "content": lambda c: c["content"],
        "usability": lambda c: c["progress"] - 2 * max(0.0, base_content - CONTENT_POINTS - c["content"]),
    }
    for target, value in targets.items():
        study = optuna.create_study(direction="maximize")
        for c in confs:
            params = {k: (c["steps"] if k == "steps" else c["params"][k]) for k in names if k in c["params"]}
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions={k: dists[k] for k in params}, value=float(value(c))
                )
            )
        evaluator = (
            PedAnovaImportanceEvaluator(target_quantile=0.1)
            if target == "usability"
            # Shallow forests: optuna's default (64 trees of depth 64) took half a minute a target on 250 trials.
            else FanovaImportanceEvaluator(n_trees=32, max_depth=6, seed=0)
        )
        try:
            got = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
        except (RuntimeError, ValueError) as e:  # too few trials, or a dimension never varied
            got = {"(not computed)": float("nan")}
            print(f"  importance of {target}: {e}")
        out[target] = {k: round(float(v), 3) for k, v in got.items()}
    return out


def spread(values: list[float]) -> str:
    vals = [v for v in values if v == v]
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{_mean(vals):+.2f} ± {sd:.2f} (n={len(vals)})"


def report(folder: Path, json_out: Path | None = None, markdown: bool = False) -> int:
    tables = load_table(folder, images=False)
    if not tables:
        print(f"{folder}: no table")
        return 1
    figures = {name: style_figures(t) for name, t in tables.items()}
    print(
        f"{'style':10s} {'rows':>5s} {'usable':>7s} {'(vae)':>6s} {'(rdr)':>6s} {'points':>7s} {'kept':>5s}  "
        "best usable / best"
    )
    for name, f in figures.items():
        if "usable" not in f:
            print(f"{name:10s} {f['rows']:5d}   (no pixel truth)  test-retest {f.get('test_retest', math.nan):+.2f}")
            continue
        best = f["best"]
        print(
            f"{name:10s} {f['rows']:5d} {f['usable']:7.0%} {f['usable_vae']:6.0%} {f['usable_reader']:6.0%} "
            f"{f['points_with_a_usable_budget']:3d}/{f['points']:<3d} {f['kept']:5.0%}  "
            f"progress {best['progress']:+.2f} content {best['content']:.0%} at {best['steps']} steps "
            f"({'usable' if best['usable'] else 'NOT usable'}): {best['spec']}"
        )
        if "best_anchor" in f:
            a = f["best_anchor"]
            print(
                f"{'':10s} best anchor: progress {a['progress']:+.2f} content {a['content']:.0%} at {a['steps']} "
                f"steps ({a['origin']}{', usable' if a['usable'] else ''})"
            )
        if "best_preset" in f:
            p = f["best_preset"]
            print(f"{'':10s} best preset: progress {p['progress']:+.2f} content {p['content']:.0%} ({p['origin']})")
    print("\nvalidity (Spearman against the pixel presence, every configuration; confirmation seeds)")
    terms = (*STYLE_TERMS, "objective")
    print(f"{'style':10s}" + "".join(f"{t:>17s}" for t in terms) + f"{'test-retest':>13s}")
    for name, f in figures.items():
        if "validity" in f:
            cells = "".join(f"{f['validity'][t]:+17.2f}" for t in terms)
            print(f"{name:10s}{cells}{f['test_retest']:+13.2f}")
    print("\ncontent constraint (content_text_ratio >= 0.95 on the confirmation seeds) against 'kept within 5 points'")
    for name, f in figures.items():
        if "constraint" in f:
            c = f["constraint"]
            print(
                f"{name:10s} feasible {c['feasible']:4d}  false-feasible {c['false_feasible']:5.0%}  "
                f"worst feasible loss {c['worst_feasible_loss']:+.0%}  false-infeasible {c['false_infeasible']:5.0%}  "
                f"Spearman(ratio, pixel content) {f['validity_content_ratio']:+.2f}"
            )
    print(
        "\nby level, over the styles with pixel truth (mean over styles): median progress / share that kept the "
        "content (design only)"
    )
    pooled_levels: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for f in figures.values():
        for dim, levels in f.get("by_level", {}).items():
            for level, st in levels.items():
                pooled_levels[dim][level].append((st["progress"], st["kept"]))
    for dim, levels in sorted(pooled_levels.items()):
        cells = "  ".join(
            f"{level}: {_mean([p for p, _ in v]):+.2f}/{_mean([k for _, k in v]):.0%}" for level, v in levels.items()
        )
        print(f"  {dim:20s} {cells}")
    print("\nimportance (fANOVA of progress / of content; PED-ANOVA of usability)")
    for name, f in figures.items():
        for target, imp in f.get("importance", {}).items():
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(imp.items())[:5])
            print(f"{name:10s} {target:10s} {top}")
    with_truth = [f for f in figures.values() if "validity" in f]
    pooled = {
        "validity": {t: spread([f["validity"][t] for f in with_truth]) for t in (*STYLE_TERMS, "objective")},
        "test_retest": spread([f["test_retest"] for f in figures.values() if "test_retest" in f]),
        "styles_with_a_usable_configuration": sum(1 for f in figures.values() if f.get("any_usable")),
    }
    print("\npooled over styles (mean ± sd over styles):")
    for t, text in pooled["validity"].items():
        print(f"  validity of {t:16s} {text}")
    print(f"  test-retest {pooled['test_retest']}")
    count = pooled["styles_with_a_usable_configuration"]
    print(f"  styles with a usable configuration: {count} of {len(with_truth)}")
    if json_out:
        json_out.write_text(json.dumps({"styles": figures, "pooled": pooled}, indent=1, default=float))
    if markdown:
        print("\n" + markdown_table(figures))
    return 0


def markdown_table(figures: dict[str, dict[str, Any]]) -> str:
    """docs/table.md's per-style table."""
    lines = [
        "| style | configurations | usable | kept the subject | best usable (progress, content, steps) | best "
        "anchor | best preset at its budget | base / references (VAE) presence | reader's ceiling |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, f in figures.items():
        if "usable" not in f:
            continue

        def cell(key: str, f: dict[str, Any] = f) -> str:
            c = f.get(key)
            if not c:
                return "-"
            mark = "" if c["usable"] else " (not usable)"
            return f"{c['progress']:+.2f}, {c['content']:.0%}, {c['steps']}{mark}"

        best = cell("best") if f["best"]["usable"] else "none"
        lines.append(
            f"| `{name}` | {f['configurations']} ({f['points']} points) | {f['usable']:.0%} "
            f"({f['points_with_a_usable_budget']} points) | {f['kept']:.0%} | {best} | {cell('best_anchor')} | "
            f"{cell('best_preset')} | {f['base_presence']:.2f} / {f['refs_presence']:.2f} "
            f"({f['refs_presence_vae']:.2f}) | {f['reader_ceiling'] or 0:.0%} |"
        )
    return "\n".join(lines)
