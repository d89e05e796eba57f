"""LoRA fusion on the tiny SD pipeline, with LoRA files written the way a user would have them.

Two different seeded LoRAs (non-zero lora_B) are attached, kept and exported (one as a diffusers file, one as a
kohya file), then detached. Every comparison is between images; the ones that claim equality also check that the
LoRAs visibly change the image, so they can fail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import generate as _generate
from conftest import make_lora
from peft import LoraConfig
from safetensors.torch import save_file

from autolora.errors import UserError
from autolora.formats.export import export_all
from autolora.fuse import FusedAdapters, fused_adapter, load_loras, reduce_rank, unload

ATTN = ["to_q", "to_k", "to_v", "to_out.0"]
TE = ["q_proj", "k_proj", "v_proj", "out_proj"]
GLOBAL_A = {"a": {"all": 1.0}, "b": {"all": 0.0}}
HALF = {"a": {"all": 0.5}, "b": {"all": 0.5}}


pytestmark = pytest.mark.usefixtures("one_thread")


def _load_pipe() -> Any:
    from autolora.models.loading import load_pipeline, resolve_model

    return load_pipeline(resolve_model("builtin:tiny-sd"), "cpu", torch.float32)


@pytest.fixture(scope="module")
def pipe(quiet: None) -> Any:
    return _load_pipe()


def _state_hash(pipe: Any) -> str:
    digest = hashlib.sha256()
    for comp in ("unet", "text_encoder", "vae"):
        for key, value in sorted(getattr(pipe, comp).state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _no_lora(pipe: Any) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    modules = [*pipe.unet.modules(), *pipe.text_encoder.modules()]
    return not any(pipe.get_list_adapters().values()) and not any(isinstance(m, BaseTunerLayer) for m in modules)


@pytest.fixture(scope="module")
def plain(pipe: Any) -> np.ndarray:
    return _generate(pipe)


@pytest.fixture(scope="module")
def loras(pipe: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """LoRA ``a`` (UNet attention + text encoder, diffusers file) and ``b`` (attention + resnet convs, kohya)."""
    root = tmp_path_factory.mktemp("loras")
    kept_a, image_a = make_lora(
        pipe,
        {
            "unet": LoraConfig(r=4, lora_alpha=4, target_modules=ATTN),
            "text_encoder": LoraConfig(r=4, target_modules=TE),
        },
        seed=1,
    )
    kept_b, _ = make_lora(pipe, {"unet": LoraConfig(r=2, lora_alpha=1, target_modules=[*ATTN, "conv1", "conv2"])}, 2)
    file_a = export_all(kept_a, root / "a", "style_a", kohya=False)["diffusers"]
    file_b = export_all(kept_b, root / "b", "style_b", kohya=True)["kohya"]
    return {"files": [file_a, file_b], "image_a": image_a}


@pytest.fixture
def fa(pipe: Any, loras: dict[str, Any]) -> Iterator[FusedAdapters]:
    fused = load_loras(pipe, loras["files"], ["a", "b"])
    yield fused
    unload(fused)


def _block(fa: FusedAdapters, values: dict[str, float], lora: str = "a") -> dict[str, float]:
    return {g: values.get(g, 1.0) for g in fa.lora_group_keys(lora, "block")}


def _assert_close(got: np.ndarray, expected: np.ndarray, atol: float = 1e-5) -> None:
    assert np.allclose(got, expected, atol=atol), f"max diff {np.abs(got - expected).max()}"


def test_global_coefficients_select_and_mix_like_diffusers(
    fa: FusedAdapters, pipe: Any, loras: Any, plain: Any
) -> None:
    fa.set_coefficients(GLOBAL_A)
    alone = _generate(pipe)
    assert np.abs(alone - plain).max() > 1e-2, "LoRA a does not change the image; the test proves nothing"
    _assert_close(alone, loras["image_a"])

    pipe.set_adapters(["a", "b"], [0.5, 0.5])
    theirs = _generate(pipe)
    fa.set_coefficients(HALF)
    ours = _generate(pipe)
    assert np.abs(ours - alone).max() > 1e-2
    _assert_close(ours, theirs, atol=1e-6)


def test_block_coefficients_differ_from_global(fa: FusedAdapters, pipe: Any) -> None:
    assert fa.group_keys("block") == ["down.0", "down.1", "mid", "up.0", "up.1", "text_encoder"]
    assert fa.lora_group_keys("b", "block") == ["down.0", "down.1", "mid", "up.0", "up.1"]
    assert "down.0.attentions.0" in fa.group_keys("layer") and "text_encoder.layers.0" in fa.group_keys("layer")
    fa.set_coefficients(HALF)
    flat = _generate(pipe)
    params = {f"a.{g}": 0.5 for g in fa.lora_group_keys("a", "block")} | {"b.down.0": 0.5, "b.down.1": 0.5}
    params |= {"b.mid": 0.5, "b.up.0": 2.0, "b.up.1": 0.5, "switch_at": 0.3}
    coeffs = fa.coefficients_from_params(params)
    assert set(coeffs) == {"a", "b"} and coeffs["b"]["up.0"] == 2.0
    assert fa.param_names("block") == [k for k in params if k != "switch_at"]
    fa.set_coefficients(coeffs)
    assert np.abs(_generate(pipe) - flat).max() > 1e-3
    with pytest.raises(ValueError, match="lack"):
        fa.set_coefficients({"a": {"all": 1.0}, "b": {"down.0": 1.0}})


def test_two_phase_switch_is_real(fa: FusedAdapters, pipe: Any) -> None:
    fa.set_coefficients(HALF)
    constant = _generate(pipe)
    same = fa.two_phase(HALF, HALF, switch_at=0.5)
    _assert_close(_generate(pipe, callback_on_step_end=same), constant, atol=0)
    late = {"a": {"all": 0.0}, "b": {"all": 2.0}}
    switching = fa.two_phase(HALF, late, switch_at=0.5)
    first = _generate(pipe, callback_on_step_end=switching)
    assert np.abs(first - constant).max() > 1e-3
    # the callback restores the early set after the last step, so a second call repeats the first
    _assert_close(_generate(pipe, callback_on_step_end=switching), first, atol=0)
    assert switching.switch_step(2) == 1


def test_fused_export_reloads_exactly(fa: FusedAdapters, pipe: Any, plain: Any, tmp_path: Path) -> None:
    coeffs = {"a": _block(fa, {"text_encoder": 0.7, "down.0": 1.3, "up.1": 0.2}), "b": {"all": -0.8}}
    fa.set_coefficients(coeffs)
    expected = _generate(pipe)
    assert np.abs(expected - plain).max() > 1e-2
    adapter = fused_adapter(fa, coeffs)
    assert adapter.configs["unet"]["r"] == 6 and adapter.configs["unet"]["rank_pattern"]  # convs: rank 2 only
    paths = export_all(adapter, tmp_path / "fused", "fused", kohya=True)
    fresh = _load_pipe()
    for kind in ("diffusers", "kohya"):
        fresh.load_lora_weights(str(paths[kind]), adapter_name=kind)
        fresh.set_adapters([kind])
        _assert_close(_generate(fresh), expected)
        fresh.delete_adapters([kind])


def test_reduce_rank(fa: FusedAdapters) -> None:
    adapter = fused_adapter(fa, HALF)
    same, error = reduce_rank(adapter, 64)
    assert error == pytest.approx(0.0, abs=1e-12)
    for comp, state in adapter.state_dicts.items():
        scale = 1 / adapter.configs[comp]["r"] * adapter.configs[comp]["lora_alpha"]
        for key in (k for k in state if k.endswith(".lora_A.weight") and ".attn" in k):
            up = key.replace("lora_A", "lora_B")
            delta = state[up] @ state[key] * scale
            again = same.state_dicts[comp][up] @ same.state_dicts[comp][key] * scale
            assert torch.allclose(delta, again, atol=1e-5)
    small, error = reduce_rank(adapter, 1)
    assert error > 0.01 and small.configs["unet"]["r"] == 1
    assert all(v.shape[0] == 1 for k, v in small.state_dicts["unet"].items() if k.endswith("lora_A.weight"))


def _garbage(path: Path) -> Path:
    path.write_bytes(b"garbage" * 9)
    return path


def _not_lora(path: Path) -> Path:
    save_file({"w": torch.zeros(2)}, str(path))
    return path


def _wrong_width(path: Path) -> Path:
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    save_file({f"{key}.lora_A.weight": torch.zeros(4, 768), f"{key}.lora_B.weight": torch.zeros(32, 4)}, str(path))
    return path


def _wrong_shape(path: Path) -> Path:
    """Passes the header checks but fits no module: diffusers itself refuses it while loading."""
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file({f"{key}.lora_A.weight": torch.zeros(4, 999), f"{key}.lora_B.weight": torch.zeros(32, 4)}, str(path))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.safetensors", "not found"),
        (lambda p: _garbage(p / "x.safetensors"), "not a readable safetensors"),
        (lambda p: _garbage(p / "x.ckpt"), "expected a .safetensors file"),
        (lambda p: _wrong_width(p / "sd15.safetensors"), "made for sd1 .cross-attention width 768"),
        (
            lambda p: (p / "empty.safetensors", save_file({"w": torch.zeros(2)}, str(p / "empty.safetensors")))[0],
            "no LoRA",
        ),
        (lambda p: _wrong_shape(p / "shape.safetensors"), "could not load"),
    ],
)
def test_bad_files_leave_nothing_loaded(pipe: Any, loras: Any, tmp_path: Path, make: Any, message: str) -> None:
    bad = make(tmp_path)
    with pytest.raises(UserError, match=message) as info:
        load_loras(pipe, [loras["files"][0], bad], ["a", "bad"])
    assert "\n" not in str(info.value) and str(bad) in str(info.value)
    assert _no_lora(pipe)


def test_a1111_and_diffusers_block_weights(fa: FusedAdapters, pipe: Any) -> None:
    coeffs = {
        "a": _block(fa, {"text_encoder": 0.25, "down.0": 0.5, "down.1": 1.5, "mid": 0.75, "up.1": 0.125}),
        "b": _block(fa, {"down.0": 2.0, "up.1": 0.5}, "b"),
    }
    vector = fa.a1111_block_weights(coeffs, "a").split(",")
    assert len(vector) == 17
    assert vector[:8] == ["0.25", "0.5", "0.5", "1.5", "1.5", "1", "1", "0.75"] and vector[8:11] == ["0.125"] * 3
    with pytest.raises(UserError, match="no slot"):
        fa.a1111_block_weights({"a": coeffs["a"], "b": {**coeffs["b"], "up.0": 0.5}}, "b")
    with pytest.raises(UserError, match="block coefficients"):
        fa.a1111_block_weights({"a": coeffs["a"], "b": {"all": 1.0}}, "b")

    fa.set_coefficients(coeffs)
    ours = _generate(pipe)
    weights = fa.diffusers_set_adapters_weights(coeffs)
    assert weights["a"] == {
        "text_encoder": 0.25,
        "unet": {"down": {"block_0": 0.5, "block_1": 1.5}, "mid": 0.75, "up": {"block_0": 1.0, "block_1": 0.125}},
    }
    pipe.set_adapters(fa.names, [weights[n] for n in fa.names])
    _assert_close(_generate(pipe), ours, atol=1e-6)
    with pytest.raises(UserError, match="cannot scale b module mid_block.resnets"):
        fa.diffusers_set_adapters_weights({"a": coeffs["a"], "b": {**coeffs["b"], "mid": 0.5}})


def test_unload_restores_base_weights_bit_identical(pipe: Any, loras: Any, plain: Any) -> None:
    before = _state_hash(pipe)
    fused = load_loras(pipe, loras["files"], ["a", "b"])
    fused.set_coefficients({"a": {"all": 0.3}, "b": {"all": 1.7}})
    _generate(pipe)
    unload(fused)
    assert _no_lora(pipe)
    assert _state_hash(pipe) == before
    _assert_close(_generate(pipe), plain, atol=0)
