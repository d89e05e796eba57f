"""Adapter methods (LoRA, LoHa, LoKr): attach/train/detach with the base bit-identical, a searched ``method``
dimension, and exports that the clients' own conventions read back to the update peft trained.

The LyCORIS reader below is written from ComfyUI's ``comfy/weight_adapter/{loha,lokr}.py`` and A1111's
``extensions-builtin/Lora/network_{hada,lokr}.py``, independently of ``autolora.methods``: LoHa's update is
``(w1_a @ w1_b) * (w2_a @ w2_b) * alpha / w1_b.shape[0]``; LoKr's ``kron(w1, w2)`` (each factor full or ``_a @ _b``)
times ``alpha / dim`` where a factor is a product (dim = its inner size) and times 1 where both are full.
"""

from __future__ import annotations

import json
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
from autolora.errors import UserError
from autolora.export import export_all
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
    load_into(tiny_sd.unet, config_to_dict(spec.unet_config()), trained, "back")
    try:
        assert all(torch.equal(v, adapter_state_dict(tiny_sd.unet, "back")[k]) for k, v in trained.items())
    finally:
        detach(tiny_sd.unet, "back")
    assert weights_hash(tiny_sd.unet) == before


def test_a_setting_no_method_of_the_space_reads_is_refused() -> None:
    with pytest.raises(
        UserError, match=r"t.yaml: params.use_dora: read by method lora only; this space's method is loha"
    ):
        parse_search_space({"params": {"method": "loha", "use_dora": True}}, "t", "t.yaml")
    with pytest.raises(UserError, match=r"params.lokr_factor: read by method lokr only"):
        parse_search_space({"params": {"method": {"choices": ["lora", "loha"]}, "lokr_factor": 4}}, "t", "t.yaml")
    with pytest.raises(UserError, match=r"params.method: expected one of lora, loha, lokr, got 'lycoris'"):
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


def test_fuse_names_a_lycoris_file_it_cannot_blend(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from autolora.fuse.files import check_lora_file

    path = tmp_path / "loha.safetensors"
    save_file({"lora_unet_x.hada_w1_a": torch.zeros(2, 2), "lora_unet_x.alpha": torch.tensor(1.0)}, str(path))
    with pytest.raises(UserError, match=r"loha.safetensors: a LyCORIS LoHa file; fuse .* reads LoRA files only"):
        check_lora_file(path, 32)


def test_a_preset_projected_onto_a_loha_space_says_so(tiny_sd: Any) -> None:
    from autolora.tune.presets import preset_trials

    space = parse_search_space({"params": {"method": "loha", "rank": {"low": 2, "high": 8}}}, "t", "t.yaml")
    first = preset_trials("auto", space.compile(lora_candidates(tiny_sd.unet), "sd1"), "sd1")
    assert first and all(t.notes[0] == "method lora -> loha (fixed by the search space)" for t in first)
