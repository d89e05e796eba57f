"""The content checks on drawn pictures, where the truth is exact: does a check let a restyled subject through and
catch a changed one?

For every miniworld and battery style (structure styles among them: rings, a comic outline, a drop shadow, a
mosaic), with the embedded judge: references are 16 pictures in the style with content captions; the base samples
are the evaluation prompts drawn plain (4 prompts x 6 seeds, as the confirmation draws them), the anchors the
references' captions drawn plain. A *trial* is the same
prompts and seeds drawn in the style with a share ``q`` of its samples changed: another colour, another shape, or
the references' subject drawn instead (``q = 0``: the same subject restyled, which a check must pass; ``q >= 1/4``:
a quarter of the subjects lost, 25 points, which it must refuse), under the default recipe's content floors and
the previous default's. ``reads``: how often the judge picks a reference's caption among its alternatives (under
``READABLE`` the setup warns that the content check is blind to this style).

    python -m benchmarks.content_check [--json docs/judge/content-drawn.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

from autolora.scoring.selfcheck import READABLE

PROMPTS = ["a purple star", "a orange triangle", "a red circle", "a blue square"]
SEEDS = 6
SHARES = (0.0, 0.25, 0.5, 1.0)
CHANGES = ("colour", "shape", "references")
REPEATS = 3


def _content(prompt: str) -> tuple[str, str]:
    _, colour, shape = prompt.split()
    return shape, colour


def trial_pictures(style: str, q: float, change: str, refs: list[tuple[str, str]], rng: random.Random) -> list[Any]:
    """The prompts x seeds drawn in ``style``, a share ``q`` of them (chosen at random) with ``change`` made."""
    from autolora.miniworld.battery import draw_any
    from autolora.miniworld.world import COLOURS, SHAPES

    n = len(PROMPTS) * SEEDS
    changed = set(rng.sample(range(n), round(q * n)))
    out = []
    for i in range(n):
        shape, colour = _content(PROMPTS[i // SEEDS])
        if i in changed:
            if change == "colour":
                colour = rng.choice([c for c in COLOURS if c != colour])
            elif change == "shape":
                shape = rng.choice([s for s in SHAPES if s != shape])
            else:
                shape, colour = rng.choice([r for r in refs if r != (shape, colour)])
        out.append(draw_any(style, shape, colour, random.Random(1000 + i % SEEDS)))
    return out


def style_trials(style: str, judge: Any) -> list[dict[str, Any]]:
    from autolora.miniworld.battery import any_items, draw_any
    from autolora.scoring.clip import ClipStyleContentScorer

    items = any_items(style, 16, seed=3)
    refs = [im for im, _, _ in items]
    captions = [f"a {colour} {shape}" for _, shape, colour in items]
    base = [draw_any("plain", *_content(p), random.Random(1000 + s)) for p in PROMPTS for s in range(SEEDS)]
    anchors = [draw_any("plain", shape, colour, random.Random(i)) for i, (_, shape, colour) in enumerate(items)]
    scorer = ClipStyleContentScorer(judge)
    scorer.prepare(refs, PROMPTS, SEEDS, base, anchors, captions)
    rng = random.Random(7)
    out = []
    for q in SHARES:
        for change in CHANGES if q else ("none",):
            for _ in range(REPEATS if q else 1):
                pictures = trial_pictures(style, q, change, [(s, c) for _, s, c in items], rng)
                metrics = scorer.score(pictures)
                reads = scorer.style_cost["reference_choice"]
                out.append({"style": style, "share": q, "change": change, "reference_choice": reads, **metrics})
    return out


def floors() -> dict[str, float]:
    """The content constraints of the default recipe: metric -> floor."""
    from autolora.scoring.objective import load_objective

    objective, _ = load_objective("balanced")
    return {c.metric: c.min for c in objective.constraints if c.min is not None}


PREVIOUS = {"content_text_ratio": 0.95}
"""The default recipe's content constraint before the judge checked itself."""


def summarise(trials: list[dict[str, Any]], rule: dict[str, float]) -> dict[str, Any]:
    """Per style under ``rule`` (metric -> floor, all must hold): the share of restyled trials passed and of changed
    trials refused."""
    out: dict[str, Any] = {}
    for style in sorted({t["style"] for t in trials}):
        ts = [t for t in trials if t["style"] == style]
        ok = [all(t[m] >= f for m, f in rule.items()) for t in ts]
        kept = [o for o, t in zip(ok, ts, strict=True) if t["share"] == 0]
        lost = [o for o, t in zip(ok, ts, strict=True) if t["share"] > 0]
        out[style] = {"passes_restyled": statistics.mean(kept), "catches_changed": 1 - statistics.mean(lost)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.content_check", description=__doc__)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--styles", help="comma-separated (default: every miniworld and battery style but plain)")
    args = parser.parse_args(argv)
    import torch

    from autolora.miniworld.battery import BATTERY
    from autolora.miniworld.world import STYLES
    from autolora.quiet import quiet_libraries
    from autolora.scoring.clip import ClipJudge

    torch.set_num_threads(1)
    quiet_libraries()
    judge = ClipJudge("builtin:miniworld-clip", None)
    styles = args.styles.split(",") if args.styles else [s for s in (*STYLES, *BATTERY) if s != "plain"]
    per_style = {style: style_trials(style, judge) for style in styles}
    trials = [t for ts in per_style.values() for t in ts]
    reading = {style: ts[0]["reference_choice"] for style, ts in per_style.items()}
    rules = {"default": floors(), "previous": PREVIOUS}
    summary = {name: summarise(trials, rule) for name, rule in rules.items()}
    for name, rule in rules.items():
        print(f"{name}: {' and '.join(f'{m} >= {f:g}' for m, f in rule.items())}")
    print(f"{'style':<12} {'reads':>5}  " + "  ".join(f"{n + ': restyled passed / changed caught':<44}" for n in rules))
    for style in summary["default"]:
        cells = "  ".join(
            f"{summary[n][style]['passes_restyled']:>20.0%} / {summary[n][style]['catches_changed']:<21.0%}"
            for n in rules
        )
        print(f"{style:<12} {reading[style]:>5.0%}  {cells}")
    readable = [s for s in styles if reading[s] >= READABLE]
    for name in rules:
        for label, group in (("all styles", styles), ("styles the judge reads", readable)):
            passed = statistics.mean(summary[name][s]["passes_restyled"] for s in group)
            caught = statistics.mean(summary[name][s]["catches_changed"] for s in group)
            print(f"{name}, {label} ({len(group)}): restyled passed {passed:.0%}, changed caught {caught:.0%}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {"rules": rules, "reads": reading, "summary": summary}
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
