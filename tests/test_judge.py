"""The judge checks itself: content checks that a style cannot fake, the self-check of the style terms, style: auto.

Drawn miniworld pictures hold the truth exactly (which shape and colour, which style), so each check is tested on
what a user would call a lost subject (another colour, another shape, the references' subject) against the same
subject restyled, under styles that add structure (rings, a comic outline) as well as texture and ground."""

from __future__ import annotations

import random
from typing import Any

import pytest

from autolora.scoring.content import alternatives


@pytest.fixture(scope="module")
def judge(quiet: None) -> Any:
    from autolora.scoring.clip import ClipJudge

    return ClipJudge("builtin:miniworld-clip", None)


def test_alternatives_swap_one_word_and_add_the_other_prompts_and_the_captions() -> None:
    (star, circle) = alternatives(["a yellow star", "a red circle"], ["a blue square", "a yellow star"])
    assert star[0] == "a yellow star" and "a yellow star" not in star[1:]
    for rival in ("a red star", "a blue star", "a yellow circle", "a yellow square", "a red circle", "a blue square"):
        assert rival in star, rival
    assert circle[0] == "a red circle" and "a yellow circle" in circle and "a red star" in circle
    assert len(set(star)) == len(star)
    (long,) = alternatives(["a castle on a hill at dusk"], ["a dog"], limit=3)
    assert long == ["a castle on a hill at dusk", "a dog"]  # nothing to swap with: the captions still compete


@pytest.mark.parametrize("style", ["rings", "comic", "dotted", "navy"])
def test_the_recipe_passes_a_restyled_subject_and_refuses_a_changed_one(judge: Any, style: str) -> None:
    """The default recipe's content floors on drawn pictures: every sample restyled passes; a quarter of them in
    another colour, another shape, or the references' subject instead, is refused (``benchmarks/content_check``)."""
    from autolora.scoring.objective import load_objective
    from benchmarks.content_check import style_trials

    objective, _ = load_objective("balanced")
    trials = style_trials(style, judge)
    restyled = [t for t in trials if t["share"] == 0]
    changed = [t for t in trials if t["share"] > 0]
    assert restyled and all(not objective.broken(t) for t in restyled), [objective.broken(t) for t in restyled]
    refused = [bool(objective.broken(t)) for t in changed]
    assert all(refused), [(t["change"], t["share"]) for t, r in zip(changed, refused, strict=True) if not r]


def _scorer(judge: Any, style: str, anchors_style: str = "plain") -> Any:
    from autolora.miniworld.battery import any_items, draw_any
    from autolora.scoring.clip import ClipStyleContentScorer

    items = any_items(style, 16, seed=3)
    refs = [im for im, _, _ in items]
    captions = [f"a {colour} {shape}" for _, shape, colour in items]
    anchors = [draw_any(anchors_style, s, c, random.Random(100 + i)) for i, (_, s, c) in enumerate(items)]
    prompts = ["a purple star", "a orange triangle"]
    base = [draw_any("plain", p.split()[2], p.split()[1], random.Random(s)) for p in prompts for s in range(3)]
    scorer = ClipStyleContentScorer(judge)
    scorer.prepare(refs, prompts, 3, base, anchors, captions)
    return scorer


def test_self_check_sees_a_style_and_not_its_absence(judge: Any) -> None:
    """Dotted references against plain renderings of their captions: the terms that see dots pass at a high AUC.
    Plain references against other plain renderings: no term can tell them apart, none passes, and the setup
    lines warn that the style scores would be noise."""
    from autolora.diagnostics import judge_findings

    dotted = _scorer(judge, "dotted")
    passed = {c.term for c in dotted.checks if c.passed}
    assert {"style_direction", "style_probe"} <= passed, dotted.checks
    assert all(c.auc > 0.9 for c in dotted.checks if c.term in ("style_direction", "style_probe"))
    assert {c.term for c in dotted.auto} == passed and all(c.scale > 0 for c in dotted.auto)
    lines = judge_findings(dotted.checks, True, {"style_auto"}, dotted.style_cost)
    assert not any(f.warning for f in lines)
    assert any(f.line.startswith("style: auto averages style_") for f in lines)

    plain = _scorer(judge, "plain")
    assert not any(c.passed for c in plain.checks), plain.checks
    warned = [f.line for f in judge_findings(plain.checks, True, {"style_gain"}, plain.style_cost) if f.warning]
    assert any(w.startswith("no style term tells your pictures from the base model's") for w in warned)


def test_style_auto_is_one_for_the_references_own_look_and_zero_for_the_base(judge: Any) -> None:
    """style_auto measures how far a sample moved towards the references, in units of their own distance from the
    base model: the base samples read 0, the prompts drawn in the references' style read about 1."""
    from autolora.miniworld.battery import draw_any

    scorer = _scorer(judge, "dotted")
    prompts = [("star", "purple"), ("triangle", "orange")]
    base = [draw_any("plain", s, c, random.Random(seed)) for s, c in prompts for seed in range(3)]
    styled = [draw_any("dotted", s, c, random.Random(seed)) for s, c in prompts for seed in range(3)]
    assert scorer.score(base)["style_auto"] == pytest.approx(0.0, abs=1e-6)
    assert 0.5 < scorer.score(styled)["style_auto"] < 1.6


def test_content_check_says_when_the_judge_cannot_read_the_subject(judge: Any) -> None:
    """Under halftone the embedded judge cannot read shape or colour (it picks the right caption under half the
    time): the setup line warns that the content check is blind there; under dots it reads them."""
    from autolora.diagnostics import content_finding

    blind = content_finding(_scorer(judge, "halftone").style_cost)
    assert blind.warning and "cannot read the subjects of your pictures" in blind.line
    seen = content_finding(_scorer(judge, "dotted").style_cost)
    assert not seen.warning and "reads the subjects of your pictures at" in seen.line
