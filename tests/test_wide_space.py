"""The widened space's dimensions: the learning rate scaled by alpha/r, caption handling, the prior's pictures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from conftest import FAST

from autolora.cli import main
from autolora.data import builtin_style_folder, load_style_set
from autolora.errors import UserError
from autolora.models.layers import lora_candidates
from autolora.tune.search import load_search_space, parse_search_space
from autolora.tune.train import TrainData

pytestmark = pytest.mark.usefixtures("one_thread")


def compiled(pipe: Any, **params: Any) -> Any:
    return parse_search_space({"params": params}, "t", "t.yaml").compile(lora_candidates(pipe.unet), "sd1")


def test_the_scaled_learning_rate_is_the_step_of_the_update(tiny_sd: Any) -> None:
    """learning_rate = scaled_learning_rate / (alpha/r): a sampler that moves alpha keeps the update's step."""
    space = compiled(tiny_sd, rank=8, alpha_ratio=0.5, scaled_learning_rate=2e-3)
    spec = space.spec({})
    assert spec["learning_rate"] == pytest.approx(4e-3) and "lr=0.004 (x a/r=0.002)" in spec.summary()
    rs = compiled(tiny_sd, rank=16, alpha_ratio=2.0, scaled_learning_rate=2e-3, use_rslora=True).spec({})
    assert rs["learning_rate"] == pytest.approx(2e-3 / (2.0 * math.sqrt(16)))  # rsLoRA's scale alpha/sqrt(r)
    plain = compiled(tiny_sd, rank=8, learning_rate=3e-4).spec({})
    assert plain["learning_rate"] == 3e-4 and "x a/r" not in plain.summary()
    with pytest.raises(UserError, match=r"params.learning_rate and params.scaled_learning_rate: set one"):
        parse_search_space({"params": {"learning_rate": 1e-3, "scaled_learning_rate": 1e-3}}, "t", "t.yaml")
    with pytest.raises(UserError, match=r"params.scaled_learning_rate: read by lora, loha, lokr, pivotal only"):
        parse_search_space({"params": {"method": "dreambooth", "scaled_learning_rate": 1e-3}}, "t", "t.yaml")


def test_presets_keep_their_update_step_in_a_scaled_space(tiny_sd: Any) -> None:
    from autolora.tune.presets import preset_trials

    space = load_search_space("wide")[0].compile(lora_candidates(tiny_sd.unet), "sd1")
    diffusers, kohya = preset_trials("auto", space, "sd1")
    assert diffusers.params["scaled_learning_rate"] == pytest.approx(1e-4)  # lr 1e-4 x alpha/r 1
    assert "learning_rate 0.0001 = scaled_learning_rate 0.0001" in diffusers.notes
    # kohya-like: lr 1e-4 x alpha/r 0.5 = 5e-5, under the space's 1e-4: clipped, and both said.
    assert kohya.params["scaled_learning_rate"] == pytest.approx(1e-4)
    assert kohya.notes[:2] == [
        "learning_rate 0.0001 = scaled_learning_rate 5e-05",
        "scaled_learning_rate 5e-05 -> 0.0001",
    ]
    assert kohya.params["prior_weight"] == 0.0 and "prior_prompts" in kohya.params  # every searched name is given


def test_the_prior_pictures_settings_are_sampled_only_with_a_prior(tiny_sd: Any) -> None:
    space = compiled(
        tiny_sd,
        rank=4,
        prior_weight={"choices": [0.0, 1.0]},
        prior_prompts={"choices": ["class", "captions"]},
        prior_images={"choices": [2, 4]},
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(12):
        trial = study.ask()
        params = space.suggest(trial)
        study.tell(trial, 0.0)
        seen.append(params)
        assert ("prior_prompts" in params) == (params["prior_weight"] > 0), params
        assert ("prior_images" in params) == (params["prior_weight"] > 0), params
    assert {p["prior_weight"] for p in seen} == {0.0, 1.0}


def test_caption_rows_pick_the_trigger_or_the_empty_caption(tiny_sd: Any) -> None:
    data = TrainData.build(tiny_sd, load_style_set(builtin_style_folder()), "in sks style", 32, "cpu")
    n = len(data.captions) - 2
    assert data.captions[data.trigger_row] == "in sks style" and data.captions[data.empty_row] == ""
    index = torch.arange(8) % n
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert torch.equal(data.caption_rows(index, "content", 0.0, gen), index)
    assert torch.equal(gen.get_state(), state)  # nothing drawn: a trial without the settings trains as before
    assert set(data.caption_rows(index, "trigger", 0.0, gen).tolist()) == {data.trigger_row}
    dropped = data.caption_rows(torch.arange(400) % n, "content", 0.3, gen)
    share = float((dropped == data.empty_row).float().mean())
    assert 0.2 < share < 0.4
    kept = dropped != data.empty_row
    assert torch.equal(dropped[kept], (torch.arange(400) % n)[kept])


def test_caption_settings_change_what_trains(tiny_sd: Any) -> None:
    from autolora.tune.train import TrainSettings, train_lora

    data = TrainData.build(tiny_sd, load_style_set(builtin_style_folder()), "in sks style", 32, "cpu")
    losses = {}
    for name, extra in {
        "content": {},
        "trigger": {"caption_mode": "trigger"},
        "drop": {"caption_dropout": 0.5},
    }.items():
        spec = compiled(tiny_sd, rank=4, steps=4, learning_rate=1e-3, init="gaussian", **extra).spec({})
        attached: list[str] = []
        torch.manual_seed(0)
        spec.method.attach(tiny_sd, spec, "t", attached)
        try:
            losses[name] = train_lora(tiny_sd, spec, data, TrainSettings(seed=0), "cpu", attached=attached)
        finally:
            spec.method.detach(tiny_sd, "t", attached)
    assert losses["content"] != losses["trigger"] and losses["content"] != losses["drop"]


def test_a_study_draws_the_prior_from_the_captions_and_refuses_uncaptioned_pictures(
    tmp_path: Path, capsys: Any
) -> None:
    space = tmp_path / "prior.yaml"
    space.write_text(
        "params:\n  rank: 2\n  steps: 4\n  learning_rate: 1.0e-3\n  prior_weight: 1.0\n  prior_prompts: captions\n"
        "  prior_images: 3\n  caption_mode: trigger\n  caption_dropout: 0.2\n"
    )
    args = [a if a != str(FAST[1]) else str(space) for a in FAST]
    assert main(["tune", "--trials", "1", "--out", "run", "--study-name", "p", *args]) == 0
    out = capsys.readouterr().out
    trial = next(ln for ln in out.splitlines() if ln.startswith("trial "))
    assert "prior=1:captionsx3 captions=trigger caption_dropout=0.2 r=2" in trial, trial
    assert len(list((tmp_path / "run" / "cache").glob("prior-*.safetensors"))) == 1
    bare = tmp_path / "bare"
    bare.mkdir()
    for image in sorted(builtin_style_folder().glob("*.png"))[:2]:
        (bare / image.name).write_bytes(image.read_bytes())
    code = main(["tune", "--trials", "1", "--out", "run2", "--style-images", str(bare), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "params.prior_prompts: captions" in err[0] and "2 of 2" in err[0], err
    assert not (tmp_path / "run2").exists()
