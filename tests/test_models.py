"""Built-in models, the offline tokenizer and model validation."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from autolora.errors import UserError
from autolora.models.builtin import builtin_path
from autolora.models.layers import lora_candidates, select_modules
from autolora.models.loading import resolve_device, resolve_dtype, resolve_model


def test_offline_tokenizer_matches_open_clip() -> None:
    import open_clip
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(builtin_path("builtin:tiny-sd") / "tokenizer")
    text = "a watercolour fox, in sks style"
    ours = tok(text).input_ids
    theirs = open_clip.get_tokenizer("ViT-B-32")([text])[0].tolist()
    assert len(tok) == 49408
    assert ours == theirs[: len(ours)]


def test_builtin_loads_like_a_user_model(tiny_sd: object) -> None:
    ref = resolve_model("builtin:tiny-sd")
    assert ref.arch == "sd1" and (ref.folder / "model_index.json").is_file()
    assert not list(ref.folder.rglob("*.bin"))  # safetensors only
    assert type(tiny_sd).__name__ == "StableDiffusionPipeline"
    assert resolve_model("builtin:tiny-sdxl").arch == "sdxl"


def test_layer_groups(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    cands = lora_candidates(tiny_sd.unet)
    up_cross_k = select_modules(cands, ["up"], ["cross_attn"], ["k"])
    assert up_cross_k and all(m.startswith("up_blocks.") and m.endswith("attn2.to_k") for m in up_cross_k)
    convs = select_modules(cands, ["mid"], ["conv"])
    assert convs and all(m.startswith("mid_block.resnets.") for m in convs)


def test_pickle_weights_refused(tmp_path: Path) -> None:
    src = builtin_path("builtin:tiny-sd")
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    for f in (dst / "unet").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(UserError, match=r"unet/ has only pickle weights .*allow_pickle"):
        resolve_model(str(dst))
    assert resolve_model(str(dst), allow_pickle=True).arch == "sd1"


def test_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a diffusers model folder"):
        resolve_model(str(tmp_path))
    with pytest.raises(UserError, match="no such folder"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="a KandinskyV22Pipeline; autolora supports .*FluxPipeline"):
        resolve_model(str(tmp_path))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(UserError, match="transformer/config.json: cannot be read"):
        resolve_model(str(tmp_path))
    with pytest.raises(UserError, match="no such built-in model"):
        resolve_model("builtin:tiny-clip")


def test_hub_id_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="not in the local Hugging Face cache"):
        resolve_model("someone/some-model")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda() -> None:
    with pytest.raises(UserError, match="CUDA was requested"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="needs a CUDA device"):
        resolve_dtype("fp16", "cpu")
    assert resolve_device("auto") == "cpu"
