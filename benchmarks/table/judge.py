"""The judge checked against the table's pixel truth, without training: the stored samples scored again by today's
scorer (so a new content check or style term is validated on trials already trained), then each content check's
false-feasible and false-infeasible rates per floor, and the floor that lets no trial through that lost more than
10 points of pixel content.

A *trial* here is one (configuration, rung, seed set) whose samples the table kept: on the search seeds (8 samples,
what the search's constraint sees) and the confirmation seeds (24, what decides the export). Its pixel *loss* is
the base's share of samples read right (shape and colour) minus its own, in points.

- **false-feasible**: feasible by the check, yet more than ``LOST`` points lost (the issue's aim: none, per style);
- **false-infeasible**: refused by the check, yet within ``KEPT`` points of the base (the price of the aim).

A check's floor is chosen on the table's styles together (the loosest with no false-feasible trial) and, to see
whether it carries to a style it was not chosen on, again leaving each style out (``held_out``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks.table.store import StyleTable, load_table

LOST = 0.10
KEPT = 0.05
CHECKS: dict[str, int] = {
    "content_text_ratio": 1,
    "content_text_delta": 1,
    "content_base": 1,
    "content_choice": 1,
    "content_choice_delta": 1,
    "content_choice_kept": 1,
    "content_text_kept": 1,
    "content_structure": 1,
    "content_leak": -1,
}
"""Candidate content metrics and their sense (1: higher keeps more; -1: lower keeps more)."""


def _right(truth: dict[str, list[Any]]) -> float:
    pairs = list(zip(truth["shape"], truth["colour"], strict=True))
    return sum(float(a and b) for a, b in pairs) / len(pairs)


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def _pipeline(meta: dict[str, Any], cache: dict[str, Any] = {}) -> Any:  # noqa: B006 (one load per process)
    """The table's base model (loaded once)."""
    source = meta["world"]["base_model"]
    if source not in cache:
        import torch

        from autolora.models.loading import load_pipeline, resolve_model

        cache[source] = load_pipeline(resolve_model(source), "cpu", torch.float32)
    return cache[source]


def _anchors(table_folder: Path, meta: dict[str, Any], captions: list[str]) -> list[Any] | None:
    """The base model's renderings of the references' captions: as the build's study cached them, else drawn again
    as it drew them (a packed table keeps no cache; sampling is deterministic per prompt and seed); None without
    captions on every reference (the scorer then takes the base samples as the references' counterpart)."""
    from autolora.sampling import load_images, sample

    found = sorted((table_folder / "run" / "cache").glob("anchors-*.safetensors"))
    if found:
        return load_images(found[0])
    if not captions or not all(captions):
        return None
    ev = meta["eval"]
    return sample(_pipeline(meta), captions, meta["seeds"][:1], steps=ev["inference_steps"],
                  guidance_scale=ev["guidance_scale"], resolution=int(meta["resolution"]))  # fmt: skip


def rescore(
    table: StyleTable, references: Path, anchors: list[Any] | None = None, echo: Any = print
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every kept trial of ``table`` scored again by today's scorer, with its pixel content and style (see the
    module doc); and the judge's self-check of each style term on this style."""
    from dataclasses import asdict

    from PIL import Image

    from autolora.data import load_style_set
    from autolora.models.features import DenoiserFeatures
    from autolora.scoring.clip import ClipJudge, ClipStyleContentScorer
    from autolora.scoring.objective import load_objective, parse_objective
    from autolora.scoring.selfcheck import TERMS, auto_terms

    meta = table.meta
    import yaml

    objective = parse_objective(yaml.safe_load(meta["objective"]), "table", "meta.json")
    judge = ClipJudge(*objective.resolve_clip(meta["world"]["base_model"], None, None))
    recipe, _ = load_objective(RECIPE)  # today's default, whatever the table was built under
    style = load_style_set(references)
    assert table.images is not None

    def images(where: list[int]) -> list[Any]:
        assert table.images is not None
        return [Image.fromarray(a) for a in table.images[where[0] : where[0] + where[1]]]

    out = []
    checks: list[dict[str, Any]] = []
    for part in ("search", "confirm"):
        base = meta["base"][part]
        seeds = meta["seeds" if part == "search" else "confirm_seeds"]
        if base.get("images") is None:
            continue
        intro = DenoiserFeatures(_pipeline(meta), "cpu", int(meta["resolution"]))
        scorer = ClipStyleContentScorer(judge, {"style_intro": intro})
        scorer.prepare(style.images, meta["prompts"], len(seeds), images(base["images"]), anchors, style.captions)
        checks = [{**asdict(c), "passed": c.passed} for c in scorer.checks]
        every = auto_terms(scorer.checks, TERMS)
        base_content = _right(base["truth"])
        base_presence = _mean(base["truth"]["presence"])
        span = meta["references"]["presence"] - base_presence
        for row in table.complete():
            for rung in row["rungs"]:
                where = rung[part].get("images")
                if where is None:
                    continue
                metrics = scorer.score_each(images(where))
                means = {k: _mean(v) for k, v in metrics.items()}
                # The auto rule with every term that passed, the base model's own (style_intro) included: why
                # ``selfcheck.AUTO_TERMS`` leaves it out.
                means["style_auto_all"] = _mean(
                    [sum(means[c.term] / c.scale for c in every) / len(every)] if every else [math.nan]
                )
                content = _right(rung[part]["truth"])
                halves = {}
                if part == "confirm":  # disjoint seed sets of k seeds each (samples are prompt-major over seeds)
                    n = len(seeds)
                    for k in range(1, n // 2 + 1):
                        pick = [[i for i in range(len(metrics["style_auto"])) if (i % n in range(a, a + k))]
                                for a in (0, n - k)]  # fmt: skip
                        halves[k] = [
                            recipe.values({m: _mean([v[i] for i in idx]) for m, v in metrics.items()})[0]
                            for idx in pick
                        ]
                out.append(
                    {
                        "config": row["config"],
                        "origin": row["origin"],
                        "step": rung["step"],
                        "part": part,
                        "content": content,
                        "loss": base_content - content,
                        "presence": _mean(rung[part]["truth"]["presence"]),
                        "progress": (_mean(rung[part]["truth"]["presence"]) - base_presence) / span,
                        **{k: v for k, v in means.items() if k.startswith(("content_", "style_"))},
                        "objective": recipe.values(means)[0],
                        "halves": halves,
                    }
                )
        echo(f"{table.style} {part}: {sum(1 for r in out if r['part'] == part)} trials scored")
    return out, checks


def rates(trials: list[dict[str, Any]], check: str, floor: float) -> dict[str, float]:
    """False-feasible and false-infeasible shares of ``trials`` under ``check >= floor`` (or <= for a -1 sense);
    ``refused_usable``: the share of the usable trials (kept, and a third of the way to the references' style)
    refused: what a check that mistakes style for lost content costs."""
    sense = CHECKS[check]
    feasible = [t for t in trials if sense * t[check] >= sense * floor - 1e-12]
    kept = [t for t in trials if t["loss"] <= KEPT + 1e-9]
    lost = [t for t in feasible if t["loss"] > LOST + 1e-9]
    usable = [t for t in kept if t["progress"] >= 1 / 3]
    return {
        "refused_usable": sum(1 for t in usable if t not in feasible) / len(usable) if usable else float("nan"),
        "usable": len(usable),
        "feasible": len(feasible),
        "false_feasible": len(lost) / len(feasible) if feasible else 0.0,
        "false_feasible_n": len(lost),
        "worst_feasible_loss": max((t["loss"] for t in feasible), default=float("nan")),
        "false_infeasible": sum(1 for t in kept if t not in feasible) / len(kept) if kept else float("nan"),
    }


def safe_floor(trials: list[dict[str, Any]], check: str) -> float:
    """The loosest floor under which no trial that lost more than ``LOST`` is feasible."""
    sense = CHECKS[check]
    if not trials:
        return float("nan")
    lost = [sense * t[check] for t in trials if t["loss"] > LOST + 1e-9 and not math.isnan(t[check])]
    if not lost:
        return min((t[check] for t in trials), key=lambda v: sense * v)
    edge = max(lost)  # the best-looking lost trial: the floor must sit just above it
    above = [sense * t[check] for t in trials if sense * t[check] > edge]
    return sense * (min(above) + edge) / 2 if above else sense * (edge + 1e-6)


def check_figures(by_style: dict[str, list[dict[str, Any]]], part: str) -> dict[str, Any]:
    """Per check: the pooled safe floor and its rates per style; each style's rates under the floor chosen on the
    others (held out); the Spearman of the check against the pixel content per style."""
    from scipy.stats import spearmanr

    trials = {s: [t for t in ts if t["part"] == part and not math.isnan(t.get("content", math.nan))]
              for s, ts in by_style.items()}  # fmt: skip
    out: dict[str, Any] = {}
    for check in CHECKS:
        if any(math.isnan(t[check]) for ts in trials.values() for t in ts):
            continue
        pooled = [t for ts in trials.values() for t in ts]
        floor = safe_floor(pooled, check)
        entry: dict[str, Any] = {"floor": floor, "styles": {}}
        for style, ts in trials.items():
            others = [t for s, o in trials.items() if s != style for t in o]
            held = safe_floor(others, check)
            rho = spearmanr([t[check] for t in ts], [-t["loss"] for t in ts]).statistic if len(ts) > 2 else math.nan
            entry["styles"][style] = {
                **rates(ts, check, floor),
                "spearman": float(rho) * CHECKS[check],
                "held_out_floor": held,
                "held_out": rates(ts, check, held),
            }
        pooled_rates = rates(pooled, check, floor)
        entry.update(false_infeasible=pooled_rates["false_infeasible"], feasible=pooled_rates["feasible"])
        out[check] = entry
    return out


STYLE_TERMS = (
    "style_gain",
    "style_direction",
    "style_gram",
    "style_probe",
    "style_intro",
    "style_auto",
    "style_auto_all",
    "objective",
)
RECIPE = "balanced"
PREVIOUS = {"content_text_ratio": 0.95}
"""The content constraint of the default recipe before the judge checked itself."""


def test_retest(by_style: dict[str, list[dict[str, Any]]], top: float = 0.25) -> dict[str, Any]:
    """Per style: Spearman of the default objective (``objective``) on the search seeds (8 samples) against the
    confirmation seeds (24) over every trial, and over the top quarter (by the mean of the two: where a study's
    choice is made), beside the previous objective (``style_gain + content_text_delta``)."""
    from scipy.stats import spearmanr

    values = {
        "default": lambda t: t["objective"],
        "previous": lambda t: t["style_gain"] + t["content_text_delta"],
    }
    out: dict[str, Any] = {}
    for name, value in values.items():
        per = {}
        for style, trials in by_style.items():
            search = {(t["config"], t["step"]): value(t) for t in trials if t["part"] == "search"}
            confirm = {(t["config"], t["step"]): value(t) for t in trials if t["part"] == "confirm"}
            keys = sorted(set(search) & set(confirm), key=lambda k: -(search[k] + confirm[k]))
            best = keys[: max(3, round(top * len(keys)))]
            per[style] = {
                "all": float(spearmanr([search[k] for k in keys], [confirm[k] for k in keys]).statistic),
                "top": float(spearmanr([search[k] for k in best], [confirm[k] for k in best]).statistic),
            }
        out[name] = per
    out["by_samples"] = _by_samples(by_style, top)
    return out


def _by_samples(by_style: dict[str, list[dict[str, Any]]], top: float) -> dict[str, Any]:
    """The seed lever: per number of seeds k, the Spearman of the default objective on k seeds against k other
    seeds (the confirmation's 6 split in two; 4 prompts, so 4k samples a value), over all trials and over the top
    quarter, per style; and by Spearman-Brown, how many samples the top quarter would need to reach 0.8."""
    from scipy.stats import spearmanr

    ks = sorted({int(k) for ts in by_style.values() for t in ts for k in t.get("halves", {})})
    out: dict[str, Any] = {}
    for k in ks:
        per = {}
        for style, trials in by_style.items():
            pairs = [t["halves"][k] for t in trials if t["part"] == "confirm" and k in t.get("halves", {})]
            pairs.sort(key=lambda p: -(p[0] + p[1]))
            best = pairs[: max(3, round(top * len(pairs)))]
            rho = {
                name: float(spearmanr([p[0] for p in ps], [p[1] for p in ps]).statistic)
                for name, ps in (("all", pairs), ("top", best))
            }
            per[style] = rho
        top_r = [v["top"] for v in per.values() if not math.isnan(v["top"])]
        r = _mean(top_r)
        # Spearman-Brown: m times the samples lifts a reliability r to m r / (1 + (m - 1) r); solved for 0.8.
        need = 4 * k * (0.8 * (1 - r)) / (r * 0.2) if 0 < r < 0.8 else (4 * k if r >= 0.8 else math.inf)
        out[str(k)] = {"samples": 4 * k, "styles": per, "top_mean": r, "samples_for_0.8_top": need}
    return out


def recipe_rates(by_style: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per style, on the confirmation seeds: the default recipe's content constraints (together) beside the previous
    one: feasible trials, false-feasible share (> ``LOST`` points lost), the worst loss let through,
    false-infeasible share (within ``KEPT``), and usable trials refused."""
    from autolora.scoring.objective import load_objective

    recipe, _ = load_objective(RECIPE)
    rules = {
        "default": {c.metric: c.min for c in recipe.constraints if c.min is not None},
        "previous": PREVIOUS,
    }
    out: dict[str, Any] = {"rules": rules}
    for name, rule in rules.items():
        per = {}
        for style, trials in by_style.items():
            ts = [t for t in trials if t["part"] == "confirm"]

            def ok(t: dict[str, Any], rule: dict[str, float] = rule) -> bool:
                return all(t[m] >= f for m, f in rule.items())

            feasible = [t for t in ts if ok(t)]
            kept = [t for t in ts if t["loss"] <= KEPT + 1e-9]
            usable = [t for t in kept if t["progress"] >= 1 / 3]
            per[style] = {
                "trials": len(ts),
                "feasible": len(feasible),
                "false_feasible": sum(t["loss"] > LOST + 1e-9 for t in feasible) / max(1, len(feasible)),
                "worst_feasible_loss": max((t["loss"] for t in feasible), default=float("nan")),
                "false_infeasible": sum(not ok(t) for t in kept) / max(1, len(kept)),
                "usable_refused": sum(not ok(t) for t in usable),
                "usable": len(usable),
            }
        out[name] = per
    return out


def style_validity(
    by_style: dict[str, list[dict[str, Any]]], checks: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Per style term: its Spearman with the pixel presence over each style's trials on the confirmation seeds, the
    mean and the worst over styles; and whether the self-check's AUC predicts that validity (Spearman over every
    style x term)."""
    from scipy.stats import spearmanr

    terms: dict[str, Any] = {}
    for term in STYLE_TERMS:
        styles = {}
        for style, trials in by_style.items():
            ts = [t for t in trials if t["part"] == "confirm" and not math.isnan(t.get(term, math.nan))]
            if len(ts) < 3:
                continue
            rho = float(spearmanr([t[term] for t in ts], [t["presence"] for t in ts]).statistic)
            auc = next((c["auc"] for c in checks[style] if c["term"] == term), math.nan)
            styles[style] = {"spearman": rho, "auc": auc}
        rhos = [v["spearman"] for v in styles.values()]
        terms[term] = {"styles": styles, "mean": _mean(rhos), "min": min(rhos, default=math.nan)}
    pairs = [
        (v["auc"], v["spearman"]) for t in terms.values() for v in t["styles"].values() if not math.isnan(v["auc"])
    ]
    predicts = float(spearmanr(*zip(*pairs, strict=True)).statistic) if len(pairs) > 2 else math.nan
    return {"terms": terms, "auc_predicts": predicts}


def scatter(style: dict[str, Any], path: Path) -> None:
    """The self-check's AUC against the term's validity, one point per style x term (does a high AUC mean a valid
    term?)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for term, f in style["terms"].items():
        points = [(v["auc"], v["spearman"]) for v in f["styles"].values() if not math.isnan(v["auc"])]
        if points:
            ax.scatter(*zip(*points, strict=True), label=term)
    ax.set_xlabel("self-check AUC (references vs the base model's renderings)")
    ax.set_ylabel("validity (Spearman with the pixel style)")
    ax.set_title(f"Spearman(AUC, validity) = {style['auc_predicts']:+.2f}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _trials_jsonl(by_style: dict[str, list[dict[str, Any]]]) -> str:
    """One line a re-scored trial (style, configuration, rung, seed set, pixel truth, every metric and the default
    objective), numbers rounded to 5 decimals."""

    def rounded(v: Any) -> Any:
        if isinstance(v, float):
            return None if math.isnan(v) else round(v, 5)
        if isinstance(v, dict):
            return {str(k): rounded(x) for k, x in v.items()}
        if isinstance(v, list):
            return [rounded(x) for x in v]
        return v

    return "".join(json.dumps({"style": s, **rounded(t)}) + "\n" for s, ts in by_style.items() for t in ts)


def report(folder: Path, styles_dir: Path | None, json_out: Path | None, styles: list[str] | None) -> int:
    import tempfile

    from autolora.data import load_style_set
    from benchmarks.table.build import style_folder

    tables = load_table(folder, styles)
    scratch = tempfile.TemporaryDirectory()  # a packed table has no styles/: drawn here, not into the repository
    work = styles_dir or (folder if (folder / "styles").is_dir() else Path(scratch.name))
    by_style, checks = {}, {}
    for name, table in tables.items():
        refs = style_folder(name, work) if table.meta.get("truth") else None
        if refs is None:
            print(f"{name}: no pixel truth; skipped")
            continue
        captions = load_style_set(refs).captions
        by_style[name], checks[name] = rescore(table, refs, _anchors(folder / name, table.meta, captions))
    scratch.cleanup()
    figures: dict[str, Any] = {part: check_figures(by_style, part) for part in ("search", "confirm")}
    figures["style"] = style_validity(by_style, checks)
    figures["recipe"] = recipe_rates(by_style)
    figures["test_retest"] = test_retest(by_style)
    for part in ("search", "confirm"):
        rated = figures[part]
        print(f"\n{part} seeds: check, safe floor (pooled), false-infeasible; per style FF% / FI% / rho / held-out FF%")
        for check, f in rated.items():
            cells = "  ".join(
                f"{s}: {r['false_feasible']:.0%}/{r['false_infeasible']:.0%}/{r['spearman']:+.2f}/"
                f"{r['held_out']['false_feasible']:.0%}"
                for s, r in f["styles"].items()
            )
            print(f"  {check:<22} {f['floor']:+.4f} FI {f['false_infeasible']:.0%}  {cells}")
    print("\nstyle terms: Spearman with the pixel presence over each style's trials (confirmation seeds); "
          "the self-check's AUC")  # fmt: skip
    for term, f in figures["style"]["terms"].items():
        cells = "  ".join(f"{s}: {v['spearman']:+.2f} (AUC {v['auc']:.2f})" for s, v in f["styles"].items())
        print(f"  {term:<16} mean {f['mean']:+.2f} min {f['min']:+.2f}  {cells}")
    print(f"  self-check AUC vs validity over styles x terms: Spearman {figures['style']['auc_predicts']:+.2f}")
    print("\nthe content constraints on the confirmation seeds: FF% (worst loss let through) / FI% / usable refused")
    for name in ("default", "previous"):
        rule = " and ".join(f"{m} >= {f:g}" for m, f in figures["recipe"]["rules"][name].items())
        print(f"  {name} ({rule}):")
        for style, r in figures["recipe"][name].items():
            print(f"    {style:<8} {r['false_feasible']:4.0%} ({r['worst_feasible_loss']:.2f}) / "
                  f"{r['false_infeasible']:4.0%} / {r['usable_refused']} of {r['usable']}")  # fmt: skip
    print("\ntest-retest of the search value (8 samples vs the confirmation's 24), all trials / the top quarter:")
    for name, per in figures["test_retest"].items():
        if name == "by_samples":
            continue
        cells = "  ".join(f"{style}: {r['all']:+.2f} / {r['top']:+.2f}" for style, r in per.items())
        print(f"  {name:<9} {cells}")
    print("\nthe seed lever: test-retest of the default value on k seeds vs k other seeds (confirmation samples)")
    for f in figures["test_retest"]["by_samples"].values():
        cells = "  ".join(f"{s}: {r['all']:+.2f} / {r['top']:+.2f}" for s, r in f["styles"].items())
        print(f"  {f['samples']:>2} samples: top quarter mean {f['top_mean']:+.2f} "
              f"(0.8 needs ~{f['samples_for_0.8_top']:.0f} samples)  {cells}")  # fmt: skip
    if json_out:
        scatter(figures["style"], json_out.with_name(json_out.stem + "-auc-validity.png"))
        out = {"checks": checks, "figures": figures}
        json_out.write_text(json.dumps(out, indent=1, default=float) + "\n")
        print(f"wrote {json_out}")
        trials_out = json_out.with_name(json_out.stem + "-trials.jsonl")
        trials_out.write_text(_trials_jsonl(by_style))
        print(f"wrote {trials_out} (each trial re-scored by today's judge: what a replay of the search reads)")
    return 0
