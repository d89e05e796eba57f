"""Exported files, as a user sees them: written into a folder and loaded by a fresh diffusers pipeline.

Every round trip compares images: the pipeline with the adapter attached in memory against a fresh pipeline
that loaded the exported file. lora_B is set to seeded random values (peft initialises it to zero, which would
make every comparison pass trivially), and each test also checks that the adapter visibly changes the image.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import generate as _generate
from conftest import randomize_lora as _randomize
from peft import LoraConfig
from safetensors import safe_open

from autolora.adapter import KeptAdapter, adapter_state_dict, attach, config_to_dict, detach
from autolora.errors import UserError
from autolora.formats.diffusers import DIFFUSERS_FILE
from autolora.formats.export import INFO_FILE, export_all
from autolora.formats.kohya import export_kohya
from autolora.models.builtin import builtin_path

ATTN = ["to_q", "to_k", "to_v", "to_out.0"]
TE = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Build the tiny built-in models once per test session, offline, in a temp cache."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("autolora-cache")
        mp.setenv("AUTOLORA_CACHE", str(root))
        yield root


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy 2-core machine torch's spinning threads make
    these tests several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd_folder(model_cache: Path) -> Path:
    return builtin_path("builtin:tiny-sd")


@pytest.fixture(scope="module")
def sdxl_folder(model_cache: Path) -> Path:
    return builtin_path("builtin:tiny-sdxl")


def _load(folder: Path, arch: str) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd_pipe(sd_folder: Path) -> Any:
    """One SD pipeline reused by the tests; each test detaches its adapter again."""
    return _load(sd_folder, "sd1")


@pytest.fixture(scope="module")
def sdxl_pipe(sdxl_folder: Path) -> Any:
    return _load(sdxl_folder, "sdxl")


@pytest.fixture(scope="module")
def sd_plain(sd_pipe: Any) -> np.ndarray:
    return _generate(sd_pipe)


@pytest.fixture(scope="module")
def sdxl_plain(sdxl_pipe: Any) -> np.ndarray:
    return _generate(sdxl_pipe)


def _base(arch: str, source: str) -> dict[str, Any]:
    pipeline = "StableDiffusionXLPipeline" if arch == "sdxl" else "StableDiffusionPipeline"
    return {
        "source": source,
        "arch": arch,
        "layers_per_block": 2 if arch == "sdxl" else 1,
        "resolution": 32,
        "prediction_type": "epsilon",
        "pipeline_class": pipeline,
    }


def _trained(pipe: Any, configs: dict[str, LoraConfig], arch: str, seed: int) -> tuple[KeptAdapter, np.ndarray]:
    """Attach ``configs`` to the pipeline's components, generate, and keep the adapter; leaves the pipe clean."""
    name = f"test{seed}"
    try:
        for comp, config in configs.items():
            attach(getattr(pipe, comp), config, name)
            _randomize(getattr(pipe, comp), seed)
        image = _generate(pipe)
        adapter = KeptAdapter(
            configs={comp: config_to_dict(cfg) for comp, cfg in configs.items()},
            state_dicts={comp: adapter_state_dict(getattr(pipe, comp), name) for comp in configs},
            base=_base(arch, f"builtin:tiny-{'sdxl' if arch == 'sdxl' else 'sd'}"),
            info={"study": "fox", "trial": seed, "params": {"rank": 4}, "scores": {"style": 0.5}, "values": [0.5]},
        )
    finally:
        for comp in configs:
            detach(getattr(pipe, comp), name)
    return adapter, image


def _reloaded(folder: Path, arch: str, out_dir: Path, weight_name: str) -> np.ndarray:
    pipe = _load(folder, arch)
    pipe.load_lora_weights(str(out_dir), weight_name=weight_name)
    return _generate(pipe)


def _assert_round_trip(
    folder: Path, arch: str, paths: dict[str, Path], expected: np.ndarray, plain: np.ndarray
) -> None:
    assert np.abs(expected - plain).max() > 1e-2, "the adapter does not change the image; the test proves nothing"
    for kind in ("diffusers", "kohya"):
        got = _reloaded(folder, arch, paths[kind].parent, paths[kind].name)
        assert np.allclose(got, expected, atol=1e-5), f"{kind} file: max diff {np.abs(got - expected).max()}"


def _kohya(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        return {k: f.get_tensor(k) for k in keys}, dict(f.metadata())


def _expected_alpha(config: LoraConfig, module: str) -> float:
    """The kohya alpha that reproduces peft's scale, from the config alone (independent of export.py)."""

    def pick(patterns: dict[str, Any] | None, default: Any) -> Any:
        return next((v for k, v in (patterns or {}).items() if module == k or module.endswith(f".{k}")), default)

    rank = pick(config.rank_pattern, config.r)
    alpha = pick(config.alpha_pattern, config.lora_alpha)
    scale = alpha / (math.sqrt(rank) if config.use_rslora else rank)
    return scale * rank


KOHYA_PREFIX = {
    "sd1": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sdxl": {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
}


def _assert_kohya_modules(
    tensors: dict[str, torch.Tensor], adapter: KeptAdapter, configs: dict[str, LoraConfig]
) -> None:
    """Every module is in the file with its true alpha (SDXL UNet names are checked separately)."""
    arch = adapter.base["arch"]
    for comp, config in configs.items():
        sd = adapter.state_dicts[comp]
        modules = [k.removesuffix(".lora_A.weight") for k in sd if k.endswith(".lora_A.weight")]
        prefix = KOHYA_PREFIX[arch][comp]
        got = sorted(v.item() for k, v in tensors.items() if k.startswith(f"{prefix}_") and k.endswith(".alpha"))
        assert got == pytest.approx(sorted(_expected_alpha(config, m) for m in modules))
        if comp == "unet" and arch == "sdxl":
            continue
        for module in modules:
            name = module if comp == "unet" else f"text_model.{module.removeprefix('text_model.')}"
            key = f"{prefix}_{name.replace('.', '_')}"
            assert tensors[f"{key}.alpha"].item() == pytest.approx(_expected_alpha(config, module)), key
            assert torch.equal(tensors[f"{key}.lora_down.weight"], sd[f"{module}.lora_A.weight"])
            assert torch.equal(tensors[f"{key}.lora_up.weight"], sd[f"{module}.lora_B.weight"])


def _assert_key_format(tensors: dict[str, torch.Tensor], prefixes: set[str]) -> None:
    assert {k.split("_")[0] + "_" + k.split("_")[1] for k in tensors} == prefixes
    for key in tensors:
        assert key.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")), key
        assert "lora_A" not in key and "lora_B" not in key and key.count(".") in (1, 2), key
        if key.endswith(".alpha"):
            assert tensors[key].dim() == 0, key
        else:
            assert tensors[key].dim() >= 2, key


def test_sd1_unet_rank_and_alpha_patterns_round_trip(
    tmp_path: Path, sd_folder: Path, sd_pipe: Any, sd_plain: np.ndarray
) -> None:
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=[*ATTN, "conv1"], rank_pattern={"attn2.to_k": 2}, alpha_pattern={"conv1": 2}
    )
    adapter, expected = _trained(sd_pipe, {"unet": config}, "sd1", seed=1)

    paths = export_all(adapter, tmp_path / "out", "fox-style_v1.0")

    assert paths == {
        "diffusers": tmp_path / "out" / DIFFUSERS_FILE,
        "kohya": tmp_path / "out" / "fox-style_v1.0.safetensors",
        "info": tmp_path / "out" / INFO_FILE,
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())
    _assert_round_trip(sd_folder, "sd1", paths, expected, sd_plain)

    tensors, meta = _kohya(paths["kohya"])
    _assert_key_format(tensors, {"lora_unet"})
    _assert_kohya_modules(tensors, adapter, {"unet": config})
    # kohya's SD1 convention: diffusers module names with '_'.
    to_k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    assert tensors[f"{to_k}.lora_down.weight"].shape[0] == 2 and tensors[f"{to_k}.alpha"].item() == 8.0
    conv1 = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert tensors[f"{conv1}.lora_down.weight"].dim() == 4 and tensors[f"{conv1}.alpha"].item() == 2.0
    assert tensors["lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.alpha"].item() == 8.0

    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], float(meta["ss_network_alpha"])) == ("4", 8.0)
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["ss_output_name"] == "fox-style_v1.0" and meta["ss_resolution"] == "(32, 32)"
    args = json.loads(meta["ss_network_args"])
    assert args["module_dims"][to_k] == 2 and args["module_alphas"][conv1] == 2.0
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.implementation"] == "https://github.com/huggingface/diffusers"
    assert meta["modelspec.title"] == "fox-style_v1.0" and meta["modelspec.resolution"] == "32x32"
    assert meta["modelspec.prediction_type"] == "epsilon"
    datetime.fromisoformat(meta["modelspec.date"])

    info = json.loads(paths["info"].read_text())
    assert (info["study"], info["trial"], info["params"], info["scores"], info["values"]) == (
        "fox",
        1,
        {"rank": 4},
        {"style": 0.5},
        [0.5],
    )
    assert info["base"]["arch"] == "sd1" and info["base"]["source"] == "builtin:tiny-sd"
    assert info["files"] == {"diffusers": DIFFUSERS_FILE, "kohya": "fox-style_v1.0.safetensors"}
    assert set(info["versions"]) >= {"autolora", "torch", "diffusers", "peft", "transformers", "optuna"}
    assert info["versions"]["diffusers"]


def test_sd1_unet_and_text_encoder_round_trip(
    tmp_path: Path, sd_folder: Path, sd_pipe: Any, sd_plain: np.ndarray
) -> None:
    configs = {
        "unet": LoraConfig(r=4, lora_alpha=8, target_modules=[*ATTN, "proj_in", "ff.net.2"]),
        "text_encoder": LoraConfig(r=2, lora_alpha=1, target_modules=TE),
    }
    adapter, expected = _trained(sd_pipe, configs, "sd1", seed=2)

    paths = export_all(adapter, tmp_path, "fox")

    _assert_round_trip(sd_folder, "sd1", paths, expected, sd_plain)
    tensors, meta = _kohya(paths["kohya"])
    _assert_key_format(tensors, {"lora_unet", "lora_te"})
    _assert_kohya_modules(tensors, adapter, configs)
    assert tensors["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"].item() == 1.0
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2.lora_up.weight" in tensors
    assert meta["ss_network_train_unet_only"] == "False"


def test_sd1_rslora_round_trip(tmp_path: Path, sd_folder: Path, sd_pipe: Any, sd_plain: np.ndarray) -> None:
    # peft scale with rsLoRA is lora_alpha / sqrt(r) = 2, so the kohya alpha must be 2 * 4 = 8 (not 4).
    config = LoraConfig(r=4, lora_alpha=4, use_rslora=True, target_modules=[*ATTN, "conv1", "conv2"])
    adapter, expected = _trained(sd_pipe, {"unet": config}, "sd1", seed=3)

    paths = export_all(adapter, tmp_path, "fox")

    _assert_round_trip(sd_folder, "sd1", paths, expected, sd_plain)
    tensors, meta = _kohya(paths["kohya"])
    alphas = {k: v.item() for k, v in tensors.items() if k.endswith(".alpha")}
    assert set(alphas.values()) == {8.0}
    assert float(meta["ss_network_alpha"]) == 8.0
    assert json.loads(meta["ss_network_args"])["use_rslora"] is True


def test_sdxl_unet_and_both_text_encoders_round_trip(
    tmp_path: Path, sdxl_folder: Path, sdxl_pipe: Any, sdxl_plain: np.ndarray
) -> None:
    configs = {
        "unet": LoraConfig(r=4, lora_alpha=8, target_modules=[*ATTN, "conv1", "proj_out"]),
        "text_encoder": LoraConfig(r=4, lora_alpha=4, target_modules=TE),
        "text_encoder_2": LoraConfig(r=2, lora_alpha=4, target_modules=TE),
    }
    adapter, expected = _trained(sdxl_pipe, configs, "sdxl", seed=4)

    paths = export_all(adapter, tmp_path, "fox-xl")

    _assert_round_trip(sdxl_folder, "sdxl", paths, expected, sdxl_plain)
    tensors, meta = _kohya(paths["kohya"])
    _assert_key_format(tensors, {"lora_unet", "lora_te1", "lora_te2"})
    _assert_kohya_modules(tensors, adapter, configs)
    # SGM names, as kohya sd-scripts and A1111 write them for SDXL (layers_per_block = 2).
    for name in (
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",  # down_blocks.1.attentions.0
        "lora_unet_input_blocks_5_1_transformer_blocks_1_attn2_to_out_0",  # down_blocks.1.attentions.1
        "lora_unet_input_blocks_1_0_in_layers_2",  # down_blocks.0.resnets.0.conv1
        "lora_unet_middle_block_1_proj_out",
        "lora_unet_middle_block_2_in_layers_2",  # mid_block.resnets.1.conv1
        "lora_unet_output_blocks_2_1_transformer_blocks_0_attn2_to_v",  # up_blocks.0.attentions.2
        "lora_unet_output_blocks_5_0_in_layers_2",  # up_blocks.1.resnets.2.conv1
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_te2_text_model_encoder_layers_1_mlp_fc2",
    ):
        assert f"{name}.lora_down.weight" in tensors, name
    assert not any("down_blocks" in k or "up_blocks" in k or "mid_block" in k for k in tensors)
    assert tensors["lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight"].dim() == 4
    assert tensors["lora_unet_input_blocks_1_0_in_layers_2.alpha"].item() == 8.0
    assert tensors["lora_te2_text_model_encoder_layers_0_self_attn_k_proj.alpha"].item() == 4.0
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"


def test_dora_kohya_is_refused_before_writing_and_diffusers_file_round_trips(
    tmp_path: Path, sd_folder: Path, sd_pipe: Any, sd_plain: np.ndarray
) -> None:
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_v", "conv1"], use_dora=True)
    adapter, expected = _trained(sd_pipe, {"unet": config}, "sd1", seed=5)
    out = tmp_path / "out"

    with pytest.raises(UserError, match="DoRA.*diffusers file"):
        export_all(adapter, out, "fox")
    assert not out.exists()
    with pytest.raises(UserError, match="DoRA"):
        export_kohya(adapter, tmp_path / "fox.safetensors", "fox")
    assert list(tmp_path.iterdir()) == []

    paths = export_all(adapter, out, "fox", kohya=False)

    assert set(paths) == {"diffusers", "info"} and sorted(p.name for p in out.iterdir()) == [INFO_FILE, DIFFUSERS_FILE]
    assert np.abs(expected - sd_plain).max() > 1e-2
    got = _reloaded(sd_folder, "sd1", out, DIFFUSERS_FILE)
    assert np.allclose(got, expected, atol=1e-5)


# --- no model needed ----------------------------------------------------------------------------------------


def _synthetic(
    arch: str, modules: dict[str, tuple[int, int]], config: dict[str, Any], comp: str = "unet"
) -> KeptAdapter:
    """An adapter from random tensors: module -> (rank, features); enough for the kohya writer."""
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for module, (rank, features) in modules.items():
        sd[f"{module}.lora_A.weight"] = torch.randn(rank, features, generator=gen)
        sd[f"{module}.lora_B.weight"] = torch.randn(features, rank, generator=gen)
    full = {"r": 4, "lora_alpha": 8, "target_modules": ["to_q"], **config}
    return KeptAdapter(
        configs={comp: full}, state_dicts={comp: sd}, base=_base(arch, "x"), info={"study": "s", "trial": 0}
    )


def test_kohya_alpha_follows_alpha_pattern_and_rslora_per_module(tmp_path: Path) -> None:
    attn = "down_blocks.0.attentions.0.transformer_blocks.0"
    adapter = _synthetic(
        "sd1",
        {f"{attn}.attn1.to_q": (4, 8), f"{attn}.attn1.to_v": (4, 8), f"{attn}.attn2.to_k": (16, 8)},
        {"use_rslora": True, "rank_pattern": {"attn2.to_k": 16}, "alpha_pattern": {"to_v": 3}},
    )
    export_kohya(adapter, tmp_path / "a.safetensors", "a")
    tensors, _ = _kohya(tmp_path / "a.safetensors")
    name = f"lora_unet_{attn.replace('.', '_')}"
    assert tensors[f"{name}_attn1_to_q.alpha"].item() == pytest.approx(8 * 2)  # 8 / sqrt(4) * 4
    assert tensors[f"{name}_attn1_to_v.alpha"].item() == pytest.approx(3 * 2)
    assert tensors[f"{name}_attn2_to_k.alpha"].item() == pytest.approx(8 * 4)  # 8 / sqrt(16) * 16


def test_sgm_names_for_the_real_sdxl_unet_layout(tmp_path: Path) -> None:
    expected = {
        "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2": "input_blocks_8_1_transformer_blocks_9_ff_net_2",
        "down_blocks.1.downsamplers.0.conv": "input_blocks_6_0_op",
        "down_blocks.1.resnets.0.conv_shortcut": "input_blocks_4_0_skip_connection",
        "down_blocks.0.resnets.1.time_emb_proj": "input_blocks_2_0_emb_layers_1",
        "mid_block.resnets.0.conv2": "middle_block_0_out_layers_3",
        "mid_block.attentions.0.transformer_blocks.3.attn1.to_k": "middle_block_1_transformer_blocks_3_attn1_to_k",
        "up_blocks.0.attentions.2.proj_in": "output_blocks_2_1_proj_in",
        "up_blocks.1.upsamplers.0.conv": "output_blocks_5_2_conv",
        "up_blocks.2.resnets.2.conv1": "output_blocks_8_0_in_layers_2",
        "conv_in": "input_blocks_0_0",
        "time_embedding.linear_2": "time_embed_2",
        "add_embedding.linear_1": "label_emb_0_0",
        "conv_out": "out_2",
    }
    adapter = _synthetic("sdxl", {m: (4, 8) for m in expected}, {})
    export_kohya(adapter, tmp_path / "xl.safetensors", "xl")
    tensors, _ = _kohya(tmp_path / "xl.safetensors")
    assert {k.split(".")[0] for k in tensors} == {f"lora_unet_{v}" for v in expected.values()}


@pytest.mark.parametrize("name", ["", "../up", "a/b", "a b", ".hidden", "fox:1", "pytorch_lora_weights", "é"])
def test_unsafe_name_is_refused_and_nothing_written(tmp_path: Path, name: str) -> None:
    adapter = _synthetic("sd1", {"down_blocks.0.attentions.0.proj_in": (4, 8)}, {})
    out = tmp_path / "out"
    with pytest.raises(UserError, match="name"):
        export_all(adapter, out, name)
    assert not out.exists()


@pytest.mark.parametrize(
    ("arch", "comp", "message"),
    [("sd4", "unet", "architecture"), ("sd1", "text_encoder_2", "no component"), ("flux", "unet", "no component")],
)
def test_adapter_that_does_not_fit_its_base_is_refused(tmp_path: Path, arch: str, comp: str, message: str) -> None:
    adapter = _synthetic(arch, {"text_model.encoder.layers.0.self_attn.q_proj": (4, 8)}, {}, comp=comp)
    with pytest.raises(UserError, match=message):
        export_all(adapter, tmp_path / "out", "fox")
    assert not (tmp_path / "out").exists()


def test_unknown_sdxl_unet_module_is_refused_before_writing(tmp_path: Path) -> None:
    adapter = _synthetic("sdxl", {"down_blocks.0.resnets.0.norm1": (4, 8)}, {})
    with pytest.raises(UserError, match="norm1"):
        export_all(adapter, tmp_path / "out", "fox")
    assert not (tmp_path / "out").exists()


def test_info_json_is_json_safe_and_keeps_everything(tmp_path: Path) -> None:
    adapter = _synthetic("sd2", {"down_blocks.0.attentions.0.proj_in": (4, 8)}, {})
    adapter.base["prediction_type"] = "v_prediction"
    adapter.info = {
        "study": "s",
        "trial": 3,
        "params": {"lr": np.float32(0.5), "targets": {"to_q"}, "path": Path("/x")},
        "scores": {"style": float("nan")},
        "values": [float("inf"), 1.0],
        "note": "kept",
    }
    paths = export_all(adapter, tmp_path, "v")
    info = json.loads(paths["info"].read_text())  # strict JSON: no NaN/Infinity tokens
    assert info["params"] == {"lr": 0.5, "targets": ["to_q"], "path": "/x"}
    assert info["scores"] == {"style": None} and info["values"] == [None, 1.0] and info["note"] == "kept"
    assert info["lora"]["unet"]["r"] == 4
    _, meta = _kohya(paths["kohya"])
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert meta["modelspec.prediction_type"] == "v" and meta["ss_v2"] == "True"
    assert meta["ss_base_model_version"] == "sd_v2"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


@pytest.mark.parametrize(
    ("source", "recorded"),
    [
        ("/home/me/models/sd15-art", "sd15-art"),
        ("/home/me/models/sd15-art/", "sd15-art"),
        ("~/models/dreamshaper_8.safetensors", "dreamshaper_8.safetensors"),
        ("./local/sdxl-base", "sdxl-base"),
        (r"C:\Users\me\models\sd15", "sd15"),
        ("stabilityai/stable-diffusion-xl-base-1.0", "stabilityai/stable-diffusion-xl-base-1.0"),
        ("builtin:miniworld", "builtin:miniworld"),
    ],
)
def test_kohya_file_names_the_base_model_without_its_authors_folders(
    tmp_path: Path, source: str, recorded: str
) -> None:
    adapter = _synthetic("sd1", {"down_blocks.0.attentions.0.proj_in": (4, 8)}, {})
    adapter.base["source"] = source
    _, meta = _kohya(export_all(adapter, tmp_path, "art")["kohya"])
    assert meta["ss_sd_model_name"] == recorded
    assert "/home/me" not in json.dumps(meta) and "Users" not in json.dumps(meta)
