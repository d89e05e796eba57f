"""Every shipped search space and objective recipe loads, compiles and behaves."""

from pathlib import Path

import optuna
import pytest

from autolora.errors import UserError
from autolora.models.layers import unet_candidates_from_config
from autolora.models.loading import resolve_model
from autolora.recipes import builtin_names
from autolora.scoring.objective import SCORERS, load_objective, parse_objective
from autolora.tune.search import load_search_space, parse_search_space

SPACES = builtin_names("autolora.search_spaces")
OBJECTIVES = builtin_names("autolora.objectives")


@pytest.fixture(scope="module")
def candidates() -> dict[str, list[str]]:
    out = {}
    for name in ("builtin:tiny-sd", "builtin:tiny-sdxl"):
        ref = resolve_model(name)
        out[ref.arch] = unet_candidates_from_config(ref.denoiser_config)
    return out


def test_builtins_are_shipped() -> None:
    assert {"quick", "sd15", "sdxl", "diffusers-default", "kohya-like"} <= set(SPACES)
    assert {"balanced", "pareto"} <= set(OBJECTIVES)


@pytest.mark.parametrize("name", SPACES)
def test_every_search_space_compiles_and_samples(name: str, candidates: dict[str, list[str]]) -> None:
    space, text = load_search_space(name)
    assert text.strip()
    archs = space.architectures or ["sd1", "sdxl"]
    for arch in archs:
        if arch not in candidates:
            continue
        compiled = space.compile(candidates[arch], arch)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(5):
            spec = compiled.spec(compiled.suggest(study.ask()))
            assert spec.modules, "a trial must never target nothing"
            cfg = spec.unet_config()
            assert set(cfg.target_modules) == set(spec.modules)
            alpha = cfg.lora_alpha if spec["method"] == "lora" else cfg.alpha  # LoHa/LoKr call it alpha
            assert alpha == pytest.approx(spec["alpha_ratio"] * spec["rank"])


def test_diffusers_default_is_the_diffusers_config(candidates: dict[str, list[str]]) -> None:
    space, _ = load_search_space("diffusers-default")
    compiled = space.compile(candidates["sd1"], "sd1")
    assert compiled.distributions == {}
    cfg = compiled.spec({}).unet_config()
    assert (cfg.r, cfg.lora_alpha) == (4, 4)
    attn = [m for m in candidates["sd1"] if ".attn1." in m or ".attn2." in m]
    assert sorted(cfg.target_modules) == sorted(attn)
    assert all(m.endswith(("to_q", "to_k", "to_v", "to_out.0")) for m in cfg.target_modules)


def test_empty_target_choices_never_reach_a_trial(candidates: dict[str, list[str]]) -> None:
    # tiny-sdxl has no attention in down.0 or up.1: those combinations must be dropped.
    data = {"params": {"target_blocks": {"choices": [["down.0"], ["up.0"], ["up.1"]]}}}
    compiled = parse_search_space(data, "t", "t.yaml").compile(candidates["sdxl"], "sdxl")
    assert compiled.fixed["target"].startswith("up.0|")
    data = {"params": {"target_blocks": {"choices": [["down.0"], ["up.1"]]}}}
    with pytest.raises(UserError, match="selects any module"):
        parse_search_space(data, "t", "t.yaml").compile(candidates["sdxl"], "sdxl")


def test_rank_pattern_per_group(candidates: dict[str, list[str]]) -> None:
    data = {"params": {"rank": 4, "rank_scale_up": 2.0, "target_blocks": ["down", "up"]}}
    compiled = parse_search_space(data, "t", "t.yaml").compile(candidates["sd1"], "sd1")
    cfg = compiled.spec({}).unet_config()
    ups = [m for m in cfg.target_modules if m.startswith("up_blocks")]
    assert ups and all(cfg.rank_pattern[m] == 8 and cfg.alpha_pattern[m] == 8 for m in ups)
    assert not any(m.startswith("down_blocks") for m in cfg.rank_pattern)


def test_fingerprint_changes_with_the_space(candidates: dict[str, list[str]]) -> None:
    a = parse_search_space({"params": {"rank": {"low": 2, "high": 8}}}, "a", "a").compile(candidates["sd1"], "sd1")
    b = parse_search_space({"params": {"rank": {"low": 2, "high": 16}}}, "b", "b").compile(candidates["sd1"], "sd1")
    a2 = parse_search_space({"params": {"rank": {"low": 2, "high": 8}}}, "a", "a").compile(candidates["sd1"], "sd1")
    assert a.fingerprint() == a2.fingerprint() != b.fingerprint()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rank": {"low": 16, "high": 4}}, "low (16) is greater than high (4)"),
        ({"rnak": 4}, "unknown parameter 'rnak' (did you mean 'rank'?)"),
        ({"rank": 0}, "params.rank: expected an integer >= 1, got 0"),
        ({"init": "pissa"}, "survives delete_adapters"),
        ({"target_layers": ["attention"]}, "items from self_attn, cross_attn, ff, proj, conv, attn, context_attn"),
        ({"target_blocks": ["left"]}, "down, mid, up, down.N, up.N (UNet) or double, joint, single"),
        ({"target_blocks": ["double.5-2"]}, "single.N-M (SD3, Flux)"),
        ({"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True, "step": 1e-5}}, "log and step"),
        ({"use_dora": {"low": 0, "high": 1}}, "not a range"),
    ],
)
def test_bad_search_spaces(params: dict, message: str) -> None:
    with pytest.raises(UserError) as e:
        parse_search_space({"params": params}, "bad", "bad.yaml")
    assert message in str(e.value) and "bad.yaml" in str(e.value)


def test_unknown_builtin_suggests() -> None:
    with pytest.raises(UserError, match="did you mean 'quick'"):
        load_search_space("quik")
    with pytest.raises(UserError, match="did you mean 'balanced'"):
        load_objective("balance")


def test_wrong_architecture(candidates: dict[str, list[str]]) -> None:
    space, _ = load_search_space("sdxl")
    with pytest.raises(UserError, match="made for sdxl models; the base model is sd1"):
        space.compile(candidates["sd1"], "sd1")


@pytest.mark.parametrize("name", OBJECTIVES)
def test_every_objective_loads(name: str) -> None:
    obj, _ = load_objective(name, scorer=None)
    metrics = dict.fromkeys(SCORERS[obj.scorer], 0.1)
    assert len(obj.values(metrics)) == len(obj.directions) >= 1


def test_recipes_are_refused_by_the_other_command() -> None:
    with pytest.raises(UserError, match="a recipe for autolora fuse .*autolora tune takes balanced"):
        load_objective("fuse-balanced")
    with pytest.raises(UserError, match="autolora fuse takes fuse-balanced, fuse-pareto"):
        load_objective("pareto", scorer="fusion")


def test_objective_weights_and_errors(tmp_path: Path) -> None:
    obj = parse_objective(
        {"objectives": [{"name": "s", "terms": {"style_gain": 2.0, "content_base": -1.0}}]}, "o", "o.yaml"
    )
    assert obj.values({"style_gain": 0.5, "content_base": 0.25}) == [0.75]
    assert obj.is_scalar and obj.resolve_clip("builtin:tiny-sd", None, None) == ("builtin:tiny-clip", None)
    assert obj.resolve_clip("builtin:miniworld", None, None) == ("builtin:miniworld-clip", None)
    assert obj.resolve_clip("/models/sd15", None, None) == ("ViT-L-14", "openai")
    assert obj.resolve_clip("builtin:miniworld", "builtin:tiny-clip", None) == ("builtin:tiny-clip", None)
    with pytest.raises(UserError, match="unknown metric 'stlye'"):
        parse_objective({"objectives": [{"terms": {"stlye": 1}}]}, "o", "o.yaml")
    # ``style`` in the terms is the recipe's style term: auto (the self-check's terms) unless the recipe fixes one.
    auto = parse_objective({"objectives": [{"terms": {"style": 1}}]}, "o", "o.yaml")
    assert auto.targets[0].terms == {"style_auto": 1.0} and auto.style == "auto"
    fixed = parse_objective({"style": "style_gram", "objectives": [{"terms": {"style": 1}}]}, "o", "o.yaml")
    assert fixed.targets[0].terms == {"style_gram": 1.0}
    with pytest.raises(UserError, match="style: expected auto or one of style_fidelity, style_gain, .*'style_gran'"):
        parse_objective({"style": "style_gran", "objectives": [{"terms": {"style": 1}}]}, "o", "o.yaml")
    with pytest.raises(UserError, match="maximize or minimize"):
        parse_objective({"objectives": [{"direction": "up", "terms": {"style_gain": 1}}]}, "o", "o.yaml")
