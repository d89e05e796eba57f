"""The base model's own style reader (IntroStyle, ``autolora.models.features``): one statistic per picture on every
model family, always read from the base model (a trial's adapter switched off for the read), and the scorer's
``style_intro`` term, self-checked like every other style term."""

from __future__ import annotations

import random
from typing import Any

import pytest


def _pictures() -> list[Any]:
    from PIL import Image, ImageDraw

    red = Image.new("RGB", (32, 32), (200, 30, 30))
    checker = Image.new("RGB", (32, 32), (240, 240, 240))
    draw = ImageDraw.Draw(checker)
    for i in range(0, 32, 4):
        for j in range(0, 32, 4):
            if (i + j) // 4 % 2:
                draw.rectangle([i, j, i + 3, j + 3], fill=(20, 20, 20))
    return [red, checker, red.copy()]


@pytest.mark.parametrize("model", ["builtin:tiny-sdxl", "builtin:tiny-sd3", "builtin:tiny-flux"])
def test_every_family_gives_one_statistic_per_picture(quiet: None, model: str) -> None:
    import torch

    from autolora.models.features import DenoiserFeatures
    from autolora.models.loading import load_pipeline, resolve_model

    pipe = load_pipeline(resolve_model(model), "cpu", torch.float32)
    (stats,) = DenoiserFeatures(pipe, "cpu", 32)(_pictures())
    assert stats.shape[0] == 3 and stats.shape[1] % 2 == 0 and torch.isfinite(stats).all()
    assert torch.allclose(stats[0], stats[2])  # the same picture reads the same (one fixed noise)
    assert not torch.allclose(stats[0], stats[1])  # different pictures do not
    assert (stats[:, stats.shape[1] // 2 :] >= 0).all()  # the second half are standard deviations


def test_the_reader_sees_the_base_model_whatever_adapter_is_on(tiny_sd: Any) -> None:
    """A LoRA on the UNet changes what a plain read sees; through ``base_view`` the read is the base model's, and
    the LoRA is on (and as trainable) again afterwards. DreamBooth's fine-tuned weights likewise."""
    import torch
    from conftest import randomize_lora
    from peft import LoraConfig

    from autolora.adapter import attach, detach
    from autolora.methods import base_view
    from autolora.methods.dreambooth import DreamBooth
    from autolora.models.features import DenoiserFeatures

    pictures = _pictures()
    reader = DenoiserFeatures(tiny_sd, "cpu", 32, base_view=lambda: base_view(tiny_sd))
    plain = DenoiserFeatures(tiny_sd, "cpu", 32)
    (before,) = reader(pictures)
    unet = tiny_sd.unet
    attach(unet, LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1"]), "t")
    try:
        randomize_lora(unet, 0)
        for p in (p for n, p in unet.named_parameters() if "lora_" in n):
            p.requires_grad_(True)
        (with_lora,) = plain(pictures)
        assert not torch.allclose(with_lora, before, atol=1e-5)
        (seen,) = reader(pictures)
        torch.testing.assert_close(seen, before)
        torch.testing.assert_close(plain(pictures)[0], with_lora)  # the LoRA is back on
        assert all(p.requires_grad for n, p in unet.named_parameters() if "lora_" in n)
    finally:
        detach(unet, "t")

    method = DreamBooth()
    key = "up_blocks.1.resnets.0.conv1.weight"
    method._save(unet, "db", [key])
    try:
        with torch.no_grad():
            unet.get_parameter(key).add_(0.5)
        trained = unet.get_parameter(key).detach().clone()
        assert not torch.allclose(plain(pictures)[0], before, atol=1e-5)
        torch.testing.assert_close(reader(pictures)[0], before)
        torch.testing.assert_close(unet.get_parameter(key), trained)  # the fine-tuned weights are back
    finally:
        method.unload(tiny_sd, "unet", "db")
    torch.testing.assert_close(plain(pictures)[0], before)


@pytest.fixture(scope="module")
def miniworld(quiet: None) -> Any:
    import torch

    from autolora.models.loading import load_pipeline, resolve_model

    return load_pipeline(resolve_model("builtin:miniworld"), "cpu", torch.float32)


def _scorer(miniworld: Any, refs_style: str, intro: bool = True) -> Any:
    from autolora.miniworld.battery import any_items, draw_any
    from autolora.models.features import DenoiserFeatures
    from autolora.scoring.clip import ClipJudge, ClipStyleContentScorer

    items = any_items(refs_style, 16, seed=3)
    refs = [im for im, _, _ in items]
    captions = [f"a {colour} {shape}" for _, shape, colour in items]
    anchors = [draw_any("plain", s, c, random.Random(100 + i)) for i, (_, s, c) in enumerate(items)]
    prompts = ["a purple star", "a orange triangle"]
    base = [draw_any("plain", p.split()[2], p.split()[1], random.Random(s)) for p in prompts for s in range(3)]
    readers = {"style_intro": DenoiserFeatures(miniworld, "cpu", 32)} if intro else {}
    scorer = ClipStyleContentScorer(ClipJudge("builtin:miniworld-clip", None), readers)
    scorer.prepare(refs, prompts, 3, base, anchors, captions)
    return scorer, prompts, base


def test_style_intro_is_self_checked_and_scores_a_restyled_sample(miniworld: Any) -> None:
    """References on a navy ground against plain renderings of their captions: the base model's own features tell
    them apart (the term passes its self-check), a sample drawn in that style closes most of its base sample's
    distance to the references, the base sample itself none. Without the reader the term has no reading."""
    from autolora.miniworld.battery import draw_any

    scorer, prompts, base = _scorer(miniworld, "navy")
    check = next(c for c in scorer.checks if c.term == "style_intro")
    assert check.passed and check.auc > 0.9, check
    navy = [draw_any("navy", p.split()[2], p.split()[1], random.Random(s)) for p in prompts for s in range(3)]
    styled, same = scorer.score(navy), scorer.score(base)
    assert abs(same["style_intro"]) < 1e-6
    assert styled["style_intro"] > 0.5, styled["style_intro"]

    without, _, _ = _scorer(miniworld, "navy", intro=False)
    check = next(c for c in without.checks if c.term == "style_intro")
    assert (
        not check.passed
        and check.line(True) == "style_intro has no reading: the base model's reader is off (eval.intro_style)"
    )
    assert without.score(base)["style_intro"] != without.score(base)["style_intro"]  # NaN


def test_a_recipe_that_scores_a_reader_term_needs_its_reader(tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    """``style: style_intro`` with ``eval.intro_style`` off would score nothing: one line, exit 2, nothing made."""
    from autolora.cli import main

    recipe = tmp_path / "intro.yaml"
    recipe.write_text("style: style_intro\nobjectives:\n  - {name: score, direction: maximize, terms: {style: 1}}\n")
    args = ["tune", "--objective", str(recipe), "--out", str(tmp_path / "run"), "--set", "eval.intro_style=false"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "style_intro, which needs eval.intro_style" in err, err
    assert not (tmp_path / "run").exists()


def test_setup_lines_say_auto_leaves_the_unvalidated_terms_out() -> None:
    """A passing ``style_intro`` is named as left out of ``auto``; when it is the only term that passes, an auto
    objective still warns that its scores would be noise, and says how to use the one that sees the style."""
    from autolora.diagnostics import judge_findings
    from autolora.scoring.selfcheck import TermCheck

    intro = TermCheck("style_intro", 0.95, 0.85, 1.0, 0.4)
    blind = [TermCheck(t, 0.55, 0.35, 0.75, 0.01) for t in ("style_gain", "style_direction", "style_gram")]
    lines = judge_findings([*blind, intro], True, {"style_auto"})
    assert "style: auto leaves it out" in lines[3].line and not lines[3].warning
    (warning,) = [f for f in lines if f.warning]
    assert "no style term tells" in warning.line and "style: style_intro names it" in warning.line, warning.line
    fixed = judge_findings([*blind, intro], True, {"style_intro"})
    assert not any(f.warning for f in fixed)  # a recipe that names it: no noise warning
