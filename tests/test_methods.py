"""Adapter methods (LoRA, LoHa, LoKr): attach/train/detach with the base bit-identical, a searched ``method``
dimension, and exports that the clients' own conventions read back to the update peft trained.

The LyCORIS reader below is written from ComfyUI's ``comfy/weight_adapter/{loha,lokr}.py`` and A1111's
``extensions-builtin/Lora/network_{hada,lokr}.py``, independently of ``autolora.methods``: LoHa's update is
``(w1_a @ w1_b) * (w2_a @ w2_b) * alpha / w1_b.shape[0]``; LoKr's ``kron(w1, w2)`` (each factor full or ``_a @ _b``)
times ``alpha / dim`` where a factor is a product (dim = its inner size) and times 1 where both are full.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from conftest import FAST
from safetensors import safe_open
from test_train import weights_hash

from autolora.adapter import KeptAdapter, adapter_state_dict, attach, config_to_dict, detach
from autolora.cli import main
from autolora.core.rundir import adapter_dir
from autolora.errors import UserError
from autolora.formats.export import export_all
from autolora.models.layers import lora_candidates
from autolora.tune.search import parse_search_space

ARGS = {"rank": 4, "steps": 4, "learning_rate": 1e-3, "alpha_ratio": 2.0}
CASES = {
    "loha": {"method": "loha"},
    "lokr": {"method": "lokr"},
    "lokr-both": {"method": "lokr", "lokr_decompose_both": True, "lokr_factor": 4},
    "lokr-full": {"method": "lokr", "rank": 64},  # factors smaller than 2 r: both full, the scale baked into w1
}


def _spec(pipe: Any, **params: Any) -> Any:
    space = parse_search_space({"params": {**ARGS, **params}}, "t", "t.yaml")
    return space.compile(lora_candidates(pipe.unet), "sd1").spec({})


def _attached(pipe: Any, spec: Any, name: str, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Attach ``spec``'s adapter to the UNet and text encoder with seeded non-zero weights; return peft's update of
    every adapted module (``get_delta_weight``)."""
    torch.manual_seed(seed)
    attach(pipe.unet, spec.unet_config(), name)
    attach(pipe.text_encoder, spec.text_encoder_config(), name)
    gen = torch.Generator().manual_seed(seed)
    deltas: dict[str, dict[str, torch.Tensor]] = {}
    for comp in ("unet", "text_encoder"):
        model = getattr(pipe, comp)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        deltas[comp] = {
            n: m.get_delta_weight(name).detach().clone()
            for n, m in model.named_modules()
            if hasattr(m, "get_delta_weight")
        }
    return deltas


def _kept(pipe: Any, spec: Any, name: str) -> KeptAdapter:
    return KeptAdapter(
        configs={
            "unet": config_to_dict(spec.unet_config()),
            "text_encoder": config_to_dict(spec.text_encoder_config()),
        },
        state_dicts={c: adapter_state_dict(getattr(pipe, c), name) for c in ("unet", "text_encoder")},
        base={"source": "builtin:tiny-sd", "arch": "sd1", "layers_per_block": 1, "resolution": 32},
        info={"study": "s", "trial": 0},
    )


def _lycoris_update(t: dict[str, torch.Tensor], name: str, shape: torch.Size) -> torch.Tensor:
    alpha = float(t[f"{name}.alpha"]) if f"{name}.alpha" in t else None
    if f"{name}.hada_w1_a" in t:
        w1b = t[f"{name}.hada_w1_b"]
        diff = (t[f"{name}.hada_w1_a"] @ w1b) * (t[f"{name}.hada_w2_a"] @ t[f"{name}.hada_w2_b"])
        return (diff * (alpha / w1b.shape[0] if alpha is not None else 1.0)).reshape(shape)
    dim = None
    factors = []
    for w in ("w1", "w2"):
        if f"{name}.lokr_{w}" in t:
            factors.append(t[f"{name}.lokr_{w}"])
        else:
            dim = t[f"{name}.lokr_{w}_b"].shape[0]
            factors.append(t[f"{name}.lokr_{w}_a"] @ t[f"{name}.lokr_{w}_b"])
    w1, w2 = factors
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    scale = alpha / dim if alpha is not None and dim is not None else 1.0
    return (torch.kron(w1, w2) * scale).reshape(shape)


@pytest.mark.parametrize("case", list(CASES))
def test_method_detaches_bit_identically_and_exports_what_it_trained(tiny_sd: Any, tmp_path: Path, case: str) -> None:
    before = weights_hash(tiny_sd.unet, tiny_sd.text_encoder)
    types = [type(m) for m in tiny_sd.unet.modules()]
    spec = _spec(tiny_sd, text_encoder=True, target_layers=["self_attn", "cross_attn", "conv"], **CASES[case])
    name = f"m-{case}"
    try:
        deltas = _attached(tiny_sd, spec, name, seed=3)
        kept = _kept(tiny_sd, spec, name)
        shapes = {c: {n: m.get_base_layer().weight.shape for n, m in getattr(tiny_sd, c).named_modules()
                      if hasattr(m, "get_delta_weight")} for c in deltas}  # fmt: skip
    finally:
        detach(tiny_sd.unet, name)
        detach(tiny_sd.text_encoder, name)
    assert weights_hash(tiny_sd.unet, tiny_sd.text_encoder) == before
    assert [type(m) for m in tiny_sd.unet.modules()] == types
    assert any(d.dim() == 4 and d.shape[-1] == 3 for d in deltas["unet"].values())  # a 3x3 conv is among them

    paths = export_all(kept, tmp_path / "out", "style")
    assert set(paths) == {"peft", "kohya", "info"}  # diffusers' load_lora_weights reads LoRA only
    with safe_open(str(paths["kohya"]), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = f.metadata()
    assert json.loads(meta["ss_network_args"])["algo"] == spec["method"]
    assert meta["ss_network_module"] == "lycoris.kohya"
    assert ("alpha" in "".join(tensors)) == (case != "lokr-full")
    prefix = {"unet": "lora_unet_", "text_encoder": "lora_te_text_model_"}
    for comp, by_module in deltas.items():
        for module, delta in by_module.items():
            got = _lycoris_update(tensors, prefix[comp] + module.replace(".", "_"), shapes[comp][module])
            torch.testing.assert_close(got, delta, rtol=1e-4, atol=1e-6, msg=f"{comp} {module}")

    # peft's own folder: PeftModel.from_pretrained on a fresh copy of the base gives the same updates.
    from diffusers import UNet2DConditionModel
    from peft import PeftModel

    fresh = UNet2DConditionModel.from_config(tiny_sd.unet.config)
    fresh.load_state_dict(tiny_sd.unet.state_dict())
    loaded = PeftModel.from_pretrained(fresh, str(paths["peft"] / "unet"))
    got = {n.removeprefix("base_model.model."): m.get_delta_weight("default")
           for n, m in loaded.named_modules() if hasattr(m, "get_delta_weight")}  # fmt: skip
    assert set(got) == set(deltas["unet"])
    for module, delta in deltas["unet"].items():
        torch.testing.assert_close(got[module], delta, msg=module)
    assert oct((paths["peft"] / "unet" / "adapter_config.json").stat().st_mode & 0o777) == "0o644"


def test_loha_trains_and_kept_adapter_reloads(tiny_sd: Any) -> None:
    from autolora.adapter import load_into
    from autolora.data import builtin_style_folder, load_style_set
    from autolora.tune.train import TrainData, TrainSettings, train_lora

    data = TrainData.build(tiny_sd, load_style_set(builtin_style_folder()), "in sks style", 32, "cpu")
    spec = _spec(tiny_sd, method="loha")
    before = weights_hash(tiny_sd.unet)
    torch.manual_seed(0)
    attach(tiny_sd.unet, spec.unet_config(), "tr")
    try:
        start = adapter_state_dict(tiny_sd.unet, "tr")
        losses = train_lora(tiny_sd, spec, data, TrainSettings(seed=0), "cpu")
        trained = adapter_state_dict(tiny_sd.unet, "tr")
    finally:
        detach(tiny_sd.unet, "tr")
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(start[k], trained[k]) for k in trained)
    load_into(tiny_sd.unet, spec.unet_config(), trained, "back")
    try:
        assert all(torch.equal(v, adapter_state_dict(tiny_sd.unet, "back")[k]) for k, v in trained.items())
    finally:
        detach(tiny_sd.unet, "back")
    assert weights_hash(tiny_sd.unet) == before


def test_a_setting_no_method_of_the_space_reads_is_refused() -> None:
    with pytest.raises(
        UserError, match=r"t.yaml: params.use_dora: read by lora, pivotal only; this space's method is loha"
    ):
        parse_search_space({"params": {"method": "loha", "use_dora": True}}, "t", "t.yaml")
    with pytest.raises(UserError, match=r"params.lokr_factor: read by lokr only"):
        parse_search_space({"params": {"method": {"choices": ["lora", "loha"]}, "lokr_factor": 4}}, "t", "t.yaml")
    with pytest.raises(
        UserError,
        match=r"params.method: expected one of lora, loha, lokr, textual_inversion, pivotal, dreambooth, got 'lycoris'",
    ):
        parse_search_space({"params": {"method": "lycoris"}}, "t", "t.yaml")
    parse_search_space(
        {"params": {"method": {"choices": ["lora", "lokr"]}, "lokr_factor": 4, "use_dora": True}}, "t", "t"
    )


def test_conditional_settings_are_sampled_only_in_their_methods_trials(tiny_sd: Any) -> None:
    space = parse_search_space(
        {"params": {"method": {"choices": ["lora", "loha", "lokr"]}, "lokr_factor": {"choices": [-1, 2, 4]},
                    "use_dora": {"choices": [False, True]}}}, "t", "t.yaml",
    )  # fmt: skip
    compiled = space.compile(lora_candidates(tiny_sd.unet), "sd1")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(24):
        trial = study.ask()
        params = compiled.suggest(trial)
        method = params["method"]
        seen.add(method)
        assert ("lokr_factor" in params) == (method == "lokr") and ("use_dora" in params) == (method == "lora")
        spec = compiled.spec(params)
        assert (
            type(spec.unet_config()).__name__
            == {"lora": "LoraConfig", "loha": "LoHaConfig", "lokr": "LoKrConfig"}[method]
        )
        study.tell(trial, 0.0)
    assert seen == {"lora", "loha", "lokr"}


def test_tune_show_export_a_lokr_study(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "lokr.yaml"
    space.write_text("params:\n  method: lokr\n  rank: 4\n  lokr_factor: {choices: [-1, 4]}\n  steps: 4\n"
                     "  learning_rate: 1.0e-3\n  target_layers: [self_attn, cross_attn]\n")  # fmt: skip
    args = [a if a != str(FAST[1]) else str(space) for a in FAST]
    assert main(["tune", "--trials", "2", "--out", "run", "--study-name", "k", *args]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("trial ")]
    assert len(lines) == 2 and all("| lokr factor=" in ln for ln in lines), lines
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{tmp_path}/run/optuna.db")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done and all(t.user_attrs["method"] == "lokr" and t.user_attrs["trainable_params"] > 0 for t in done)
    assert main(["show", "run"]) == 0
    shown = capsys.readouterr().out
    assert " params, " in shown and " KB" in shown, shown
    assert main(["export", "run", "--out", "exp", "--name", "s"]) == 0
    printed = capsys.readouterr().out
    assert "diffusers skipped" in printed
    assert (tmp_path / "exp" / "s.safetensors").is_file() and (tmp_path / "exp" / "peft" / "unet").is_dir()
    assert not (tmp_path / "exp" / "pytorch_lora_weights.safetensors").exists()
    info = json.loads((tmp_path / "exp" / "autolora.json").read_text())
    assert info["lora"]["unet"]["peft_type"] == "LOKR" and info["params"]["method"] == "lokr"


def test_a_lycoris_file_is_told_apart_and_refused_for_a_transformer_model(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from autolora.loras.files import check_lora_file

    path = tmp_path / "loha.safetensors"
    save_file({"lora_unet_x.hada_w1_a": torch.zeros(2, 2), "lora_unet_x.alpha": torch.tensor(1.0)}, str(path))
    assert check_lora_file(path, 32) == "lycoris"  # read as its exact LoRA by autolora.loras.lycoris
    with pytest.raises(UserError, match=r"loha.safetensors: a LyCORIS LoHa file for a transformer model; .*UNet"):
        check_lora_file(path, 0)


def test_presets_start_a_study_that_can_train_a_lora_and_say_what_projection_changed(tiny_sd: Any) -> None:
    from autolora.tune.presets import preset_trials

    space = parse_search_space({"params": {"method": "loha", "rank": {"low": 2, "high": 8}}}, "t", "t.yaml")
    compiled = space.compile(lora_candidates(tiny_sd.unet), "sd1")
    assert preset_trials("auto", compiled, "sd1") == []  # the community presets are LoRAs
    first = preset_trials("diffusers-default,kohya-like", compiled, "sd1")
    assert len(first) == 2 and all(t.notes[0] == "method lora -> loha (fixed by the search space)" for t in first)
    searched = parse_search_space({"params": {"method": {"choices": ["loha", "lora"]}}}, "t", "t.yaml")
    first = preset_trials("auto", searched.compile(lora_candidates(tiny_sd.unet), "sd1"), "sd1")
    assert len(first) == 2 and all(t.params["method"] == "lora" for t in first)


# -- textual inversion and pivotal tuning ----------------------------------------------------------------------


def _train(pipe: Any, spec: Any, name: str, steps: int = 3) -> tuple[list[str], dict[str, dict[str, torch.Tensor]]]:
    from autolora.data import builtin_style_folder, load_style_set
    from autolora.tune.train import TrainData, TrainSettings, train_lora

    data = TrainData.build(pipe, load_style_set(builtin_style_folder()), "in sks style", 32, "cpu")
    method = spec.method
    attached: list[str] = []
    try:
        method.attach(pipe, spec, name, attached)
        start = method.weights(pipe, name, attached)
        prompt = (lambda c: method.prompt(c, "in sks style", "sks")) if method.learns_tokens else None
        losses = train_lora(pipe, spec, data, TrainSettings(seed=0), "cpu", attached=attached, prompt=prompt)
        assert len(losses) == steps and all(torch.isfinite(torch.tensor(losses)))
        trained = method.weights(pipe, name, attached)
    finally:
        method.detach(pipe, name, attached)
    for comp in trained:
        assert any(not torch.equal(start[comp][k], v) for k, v in trained[comp].items()), comp
    return attached, trained


def test_textual_inversion_trains_only_its_tokens_and_detaches_bit_identically(tiny_sdxl: Any, tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    from autolora.methods import load_kept

    pipe = tiny_sdxl
    comps = ("unet", "text_encoder", "text_encoder_2")
    before = weights_hash(*(getattr(pipe, c) for c in comps))
    sizes = (len(pipe.tokenizer), len(pipe.tokenizer_2))
    space = parse_search_space({"params": {"method": "textual_inversion", "ti_vectors": 3, "steps": 3,
                                           "ti_learning_rate": 0.05}}, "t", "t.yaml")  # fmt: skip
    spec = space.compile(lora_candidates(pipe.unet), "sdxl").spec({})
    assert spec.summary() == "textual_inversion vectors=3 init=style ti_lr=0.05 steps=3"
    attached, trained = _train(pipe, spec, "ti")
    assert attached == ["text_encoder", "text_encoder_2"]
    assert weights_hash(*(getattr(pipe, c) for c in comps)) == before  # every old embedding row untouched
    assert (len(pipe.tokenizer), len(pipe.tokenizer_2)) == sizes
    assert not any(p.requires_grad for c in comps for p in getattr(pipe, c).parameters())
    assert {c: tuple(t["emb_params"].shape) for c, t in trained.items()} == {
        "text_encoder": (3, pipe.text_encoder.config.hidden_size),
        "text_encoder_2": (3, pipe.text_encoder_2.config.hidden_size),
    }

    kept = KeptAdapter(
        configs=spec.method.kept_configs(spec, attached),
        state_dicts=trained,
        base={"source": "builtin:tiny-sdxl", "arch": "sdxl", "layers_per_block": 1, "resolution": 32},
    )
    paths = export_all(kept, tmp_path, "my-style")
    assert set(paths) == {"embedding", "info"} and paths["embedding"].name == "my-style.safetensors"
    with safe_open(str(paths["embedding"]), "pt") as f:
        assert sorted(f.keys()) == ["clip_g", "clip_l"]  # the SDXL layout A1111 and ComfyUI read

    # What the trial scored (its tokens attached) against the file loaded the way diffusers documents it.
    prompt = "a red square, <autolora>"
    attached = load_kept(pipe, kept.configs, kept.state_dicts, "back")
    try:
        ours = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)[0]
    finally:
        spec.method.detach(pipe, "back", attached)
    from safetensors.torch import load_file

    fresh = StableDiffusionXLPipeline(**pipe.components)
    state = load_file(str(paths["embedding"]))
    fresh.load_textual_inversion(state["clip_l"], token="<autolora>", text_encoder=pipe.text_encoder,
                                 tokenizer=pipe.tokenizer)  # fmt: skip
    fresh.load_textual_inversion(state["clip_g"], token="<autolora>", text_encoder=pipe.text_encoder_2,
                                 tokenizer=pipe.tokenizer_2)  # fmt: skip
    try:
        theirs = fresh.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)[0]
    finally:
        fresh.unload_textual_inversion(
            ["<autolora>", "<autolora>_1", "<autolora>_2"], pipe.tokenizer, pipe.text_encoder
        )
        fresh.unload_textual_inversion(["<autolora>", "<autolora>_1", "<autolora>_2"], pipe.tokenizer_2,
                                       pipe.text_encoder_2)  # fmt: skip
    torch.testing.assert_close(theirs, ours)
    assert weights_hash(*(getattr(pipe, c) for c in comps)) == before


@pytest.mark.parametrize("method", ["textual_inversion", "pivotal"])
def test_retraction_keeps_the_tokens_near_the_vocabularys_scale_and_the_base_bit_identical(
    tiny_sd: Any, method: str
) -> None:
    pipe = tiny_sd
    before = weights_hash(pipe.unet, pipe.text_encoder)
    vocab_std = float(pipe.text_encoder.get_input_embeddings().weight.std())
    grown = {}
    for retract in (False, True):
        params = {"method": method, "ti_vectors": 2, "steps": 20, "ti_learning_rate": 0.05, "ti_retract": retract}
        spec = parse_search_space({"params": params}, "t", "t.yaml").compile(lora_candidates(pipe.unet), "sd1").spec({})
        assert ("retract" in spec.summary().split()) is retract
        attached, trained = _train(pipe, spec, f"r{retract}", steps=20)
        assert spec.method.kept_configs(spec, attached)["text_encoder"]["retract"] is retract
        grown[retract] = float(trained["text_encoder"]["emb_params"].std()) / vocab_std
        assert weights_hash(pipe.unet, pipe.text_encoder) == before
    # Plain TI's vectors grow far past the vocabulary's scale at this lr; the retraction holds them back.
    assert grown[False] > 5 and grown[True] < grown[False] / 2, grown


@pytest.mark.parametrize(
    ("trigger", "identifier", "spelled"),
    [
        ("in sks style", "sks", "in <autolora> style"),
        ("in the style of zxq, painting", "zxq", "in the style of <autolora>, painting"),
        ("in sks style", "", "<autolora>"),  # no identifier: the whole trigger
        ("in tasks style", "sks", "<autolora>"),  # not a word of the trigger: the whole trigger
    ],
)
def test_textual_inversion_writes_its_tokens_in_place_of_the_identifier_and_keeps_the_frame(
    trigger: str, identifier: str, spelled: str
) -> None:
    from autolora.methods import get

    for name in ("textual_inversion", "pivotal"):
        method = get(name)
        assert method.spelled_trigger(trigger, identifier) == spelled
        assert method.prompt(f"a red star, {trigger}", trigger, identifier) == f"a red star, {spelled}"
        assert method.prompt("a red star", trigger, identifier) == f"a red star, {spelled}"
    assert get("lora").prompt(f"a red star, {trigger}", trigger, identifier) == f"a red star, {trigger}"


def test_an_identifier_the_trigger_lacks_is_refused_before_anything_is_made(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  identifier: two words\n")
    assert main(["tune", str(bad), "--base-model", "builtin:tiny-sd", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "data.identifier" in err and "two words" in err, err
    # a space that can learn tokens, a trigger without the identifier: one line that says what to set
    space = tmp_path / "ti.yaml"
    space.write_text("params:\n  method: {choices: [lora, textual_inversion]}\n")
    args = ["tune", "--search-space", str(space), "--trigger", "in wtrclr style", "--base-model", "builtin:tiny-sd"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.identifier 'sks': not a word of data.trigger 'in wtrclr style'" in err, err
    assert "--identifier WORD" in err, err
    assert not (tmp_path / "run").exists()
    # with the identifier named, or an empty one (the whole trigger), or a LoRA-only space, the plan is made
    from autolora.config import load_config
    from autolora.tune.plan import make_plan

    base = [("model", "base_model", "builtin:tiny-sd"), ("study", "out", str(tmp_path / "ok")),
            ("data", "trigger", "in wtrclr style")]  # fmt: skip
    searched = [("study", "search_space", str(space))]
    for extra in ([*searched, ("data", "identifier", "wtrclr")], [*searched, ("data", "identifier", "")], []):
        plan = make_plan(load_config(None, [*base, *extra]))
        assert plan.compiled.methods() == (["lora", "textual_inversion"] if extra else ["lora"])


def test_textual_inversion_is_refused_for_a_transformer_model_and_beside_a_text_encoder_lora() -> None:
    space = parse_search_space({"params": {"method": "pivotal"}}, "t", "t.yaml")
    with pytest.raises(UserError, match=r"t.yaml: params.method: pivotal learns token embeddings .* not flux"):
        space.compile(["transformer_blocks.0.attn.to_q"], "flux")
    with pytest.raises(UserError, match=r"params.text_encoder: read by lora, loha, lokr only"):
        parse_search_space({"params": {"method": "textual_inversion", "text_encoder": True}}, "t", "t.yaml")
    with pytest.raises(UserError, match=r"params.ti_init: expected a word \(letters\), got 'two words'"):
        parse_search_space({"params": {"method": "textual_inversion", "ti_init": "two words"}}, "t", "t.yaml")


def test_pivotal_study_exports_a_lora_and_an_embedding_that_diffusers_reloads(
    tiny_sd: Any, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    from safetensors.torch import load_file

    from autolora.methods import kept_method, load_kept

    monkeypatch.chdir(tmp_path)
    space = tmp_path / "pivotal.yaml"
    space.write_text("params:\n  method: pivotal\n  rank: 4\n  steps: 4\n  learning_rate: 1.0e-3\n"
                     "  ti_vectors: {choices: [1, 2]}\n  ti_learning_rate: 0.05\n  init: gaussian\n")  # fmt: skip
    args = [a if a != str(FAST[1]) else str(space) for a in FAST]
    args += ["--set", "study.confirm_top_k=1", "--set", "eval.confirm_seeds=[5, 6]"]
    assert main(["tune", "--trials", "2", "--out", "run", "--study-name", "p", *args]) == 0
    out = capsys.readouterr().out
    assert "confirming the top 1 trials on 2 other seeds" in out, out
    assert all("| pivotal vectors=" in ln for ln in out.splitlines() if ln.startswith("trial ")), out
    assert main(["export", "run", "--out", "exp", "--name", "piv", "--force"]) == 0
    capsys.readouterr()
    exp = tmp_path / "exp"
    for name in ("pytorch_lora_weights.safetensors", "piv.safetensors", "piv_emb.safetensors", "autolora.json"):
        assert (exp / name).is_file(), name
    info = json.loads((exp / "autolora.json").read_text())
    trial = info["trial"]
    kept = KeptAdapter.load(adapter_dir(tmp_path / "run", trial))
    assert kept_method(kept.configs).name == "pivotal"
    # the trials wrote the default trigger "in sks style" with the tokens in place of "sks": the usage says so
    assert info["trigger"] == "in <autolora> style", info
    usage = info["usage"]
    assert "write 'in piv_emb style'" in usage and "'in embedding:piv_emb style'" in usage, usage

    prompt = "a watercolor fox, <autolora>"
    attached = load_kept(tiny_sd, kept.configs, kept.state_dicts, "kept")
    try:
        ours = _image(tiny_sd, prompt)
    finally:
        kept_method(kept.configs).detach(tiny_sd, "kept", attached)
    tiny_sd.load_lora_weights(str(exp / "pytorch_lora_weights.safetensors"), adapter_name="file")
    tiny_sd.load_textual_inversion(load_file(str(exp / "piv_emb.safetensors"))["emb_params"], token="<autolora>")
    try:
        theirs = _image(tiny_sd, prompt)
    finally:
        tiny_sd.unload_textual_inversion()
        detach(tiny_sd.unet, "file")  # diffusers' delete_adapters leaves empty peft wrappers behind
    assert abs(ours - theirs).max() < 1e-4


def _image(pipe: Any, prompt: str) -> Any:
    import numpy as np

    out = pipe(prompt, num_inference_steps=2, height=32, width=32, output_type="np",
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    return np.asarray(out.images)


# -- DreamBooth and prior preservation -------------------------------------------------------------------------


def test_dreambooth_with_prior_preservation_trains_its_modules_in_full_and_restores_the_base(tiny_sd: Any) -> None:
    from autolora.data import StyleSet, builtin_style_folder, load_style_set
    from autolora.tune.train import TrainData, TrainSettings, train_lora

    style = load_style_set(builtin_style_folder())
    data = TrainData.build(tiny_sd, style, "in sks style", 32, "cpu")
    class_set = StyleSet(style.folder, style.images[:2], ["a picture"] * 2, ["a", "b"])
    prior = TrainData.build(tiny_sd, class_set, "", 32, "cpu")
    assert prior.captions[:2] == ["a picture", "a picture"]
    params = {"method": "dreambooth", "target_blocks": ["up"], "prior_weight": 1.0, "learning_rate": 1e-3, "steps": 4}
    spec = parse_search_space({"params": params}, "t", "t.yaml").compile(lora_candidates(tiny_sd.unet), "sd1").spec({})
    assert spec.summary().startswith("dreambooth prior=1:'a picture'x8 lr=0.001 steps=4 modules=")
    before = weights_hash(tiny_sd.unet, tiny_sd.text_encoder)
    method, attached = spec.method, []
    try:
        method.attach(tiny_sd, spec, "db", attached)
        expected = sum(tiny_sd.unet.get_submodule(m).weight.numel() + tiny_sd.unet.get_submodule(m).bias.numel()
                       for m in spec.modules if tiny_sd.unet.get_submodule(m).bias is not None)  # fmt: skip
        expected += sum(tiny_sd.unet.get_submodule(m).weight.numel() for m in spec.modules
                        if tiny_sd.unet.get_submodule(m).bias is None)  # fmt: skip
        assert method.trainable_count(tiny_sd, spec, attached) == expected
        start = method.weights(tiny_sd, "db", attached)["unet"]
        with_prior = train_lora(tiny_sd, spec, data, TrainSettings(seed=0), "cpu", attached=attached, prior=prior,
                                prior_weight=1.0)  # fmt: skip
        tuned = method.weights(tiny_sd, "db", attached)["unet"]
    finally:
        method.detach(tiny_sd, "db", attached)
    assert weights_hash(tiny_sd.unet, tiny_sd.text_encoder) == before
    assert not any(p.requires_grad for p in tiny_sd.unet.parameters())
    assert set(tuned) == set(start) and all(k.startswith(tuple(spec.modules)) for k in tuned)
    assert sum(not torch.equal(start[k], tuned[k]) for k in tuned) == len(tuned)  # every weight and bias moved
    try:
        method.attach(tiny_sd, spec, "db", attached := [])
        alone = train_lora(tiny_sd, spec, data, TrainSettings(seed=0), "cpu", attached=attached)
    finally:
        method.detach(tiny_sd, "db", attached)
    assert with_prior != alone  # the prior term is in the loss


def test_dreambooth_study_exports_the_unet_and_an_extracted_lora(tiny_sd: Any, tmp_path: Path, capsys: Any,
                                                                 monkeypatch: Any) -> None:  # fmt: skip
    from diffusers import UNet2DConditionModel

    monkeypatch.chdir(tmp_path)
    space = tmp_path / "db.yaml"
    space.write_text("params:\n  method: dreambooth\n  steps: 4\n  learning_rate: {low: 1.0e-4, high: 1.0e-3}\n"
                     "  target_blocks: [up]\n  target_layers: [self_attn, cross_attn]\n  prior_weight: 1.0\n"
                     "  class_prompt: a picture\n")  # fmt: skip
    args = [a if a != str(FAST[1]) else str(space) for a in FAST] + ["--set", "train.prior_images=2"]
    assert main(["tune", "--trials", "2", "--out", "run", "--study-name", "db", *args]) == 0
    out = capsys.readouterr().out
    assert all("| dreambooth prior=1:'a picture'x2 lr=" in ln for ln in out.splitlines() if ln.startswith("trial "))
    assert len(list((tmp_path / "run" / "cache").glob("prior-*.safetensors"))) == 1  # drawn once per study
    assert main(["export", "run", "--out", "exp", "--name", "db", "--rank", "1000", "--force"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"extracted LoRA rank 1000: relative error 0\.0000 ", printed), printed
    exp = tmp_path / "exp"
    trial = json.loads((exp / "autolora.json").read_text())["trial"]
    kept = KeptAdapter.load(adapter_dir(tmp_path / "run", trial))
    unet = UNet2DConditionModel.from_pretrained(exp / "db-unet")
    for key, value in kept.state_dicts["unet"].items():
        torch.testing.assert_close(unet.get_parameter(key), value, rtol=0, atol=0)
    # The extracted LoRA at full rank carries the fine-tuned weights' update exactly (biases aside).
    tiny_sd.load_lora_weights(str(exp / "pytorch_lora_weights.safetensors"), adapter_name="ext")
    try:
        for key, value in kept.state_dicts["unet"].items():
            if key.endswith(".weight"):
                layer = tiny_sd.unet.get_submodule(key.removesuffix(".weight"))
                got = layer.get_base_layer().weight + layer.get_delta_weight("ext")
                torch.testing.assert_close(got, value, rtol=1e-4, atol=1e-5, msg=key)
    finally:
        detach(tiny_sd.unet, "ext")
    assert (exp / "db.safetensors").is_file()  # the kohya file of the extracted LoRA
    assert main(["export", "run", "--out", "exp2", "--rank", "1", "--force"]) == 0
    assert re.search(r"extracted LoRA rank 1: relative error 0\.[0-9]*[1-9]", capsys.readouterr().out)
