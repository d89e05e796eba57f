"""Exported kohya files against the key names each client maps, on the real SD 1.5 and SDXL layouts.

The layouts are the published model configs, instantiated on the meta device (no weights, no download); the
adapter covers every Linear and Conv2d of the UNet and both text encoders, as a LoRA of everything would. The
expected names are written here from each client's documented conventions, independently of autolora.formats:

- kohya sd-scripts (``networks/lora.py``): ``lora_unet_`` + the UNet module name with dots as underscores (the
  diffusers names for SD 1.x; for SDXL, kohya's own UNet has the SGM names of Stability's ``sgm`` code), and
  ``lora_te_`` (SD 1.x) or ``lora_te1_``/``lora_te2_`` (SDXL) + the CLIP text model's module name.
- ComfyUI (``comfy/lora.py``): the same prefixes; for SDXL it maps ``lora_unet_`` + the SGM name of every
  UNet weight, for SD 1.x the diffusers names through its own diffusers->SGM table.
- A1111 / Forge (``extensions-builtin/Lora``): SD 1.x kohya names are converted to the CompVis module names
  by the regular expressions of ``convert_diffusers_name_to_compvis`` (re-stated below); a key no expression
  matches is silently dropped. For SDXL the SGM names are matched to the model's modules directly.

The SGM/CompVis layout (input_blocks/middle_block/output_blocks) is generated here from the UNet config by the
rule of Stability's ``openaimodel.py``, not by autolora's converter.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from autolora.adapter import KeptAdapter
from autolora.formats.kohya import export_kohya

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}  # fmt: skip
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048, "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}  # fmt: skip
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
CLIP_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20}


def _layers(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Module name -> weight shape of every Linear and Conv2d."""
    return {
        name: tuple(m.weight.shape)
        for name, m in model.named_modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
    }


def _unet(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return _layers(UNet2DConditionModel(**config))


def _text(config: dict[str, Any], projection: bool = False) -> dict[str, tuple[int, ...]]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    with torch.device("meta"):
        layers = _layers(cls(CLIPTextConfig(**config)))
    return {k: v for k, v in layers.items() if k.startswith("text_model.encoder.")}  # what LoRA trainers target


def _adapter(arch: str, comps: dict[str, dict[str, tuple[int, ...]]]) -> KeptAdapter:
    """Rank-1 LoRA tensors (CPU, zeros) for every layer of every component."""
    state_dicts: dict[str, dict[str, torch.Tensor]] = {}
    for comp, layers in comps.items():
        sd = {}
        for name, shape in layers.items():
            out, inp = shape[0], shape[1]
            tail = tuple(shape[2:])
            sd[f"{name}.lora_A.weight"] = torch.zeros((1, inp, *tail))
            sd[f"{name}.lora_B.weight"] = torch.zeros((out, 1, *((1, 1) if tail else ())))
        state_dicts[comp] = sd
    configs = {comp: {"r": 1, "lora_alpha": 1, "target_modules": ["to_q"]} for comp in comps}
    base = {"source": "x", "arch": arch, "layers_per_block": 2, "resolution": 1024 if arch == "sdxl" else 512,
            "prediction_type": "epsilon"}  # fmt: skip
    return KeptAdapter(configs=configs, state_dicts=state_dicts, base=base, info={"study": "s", "trial": 0})


def _exported(adapter: KeptAdapter, path: Path) -> set[str]:
    export_kohya(adapter, path, "all")
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    return {k.split(".")[0] for k in keys}


def _flat(prefix: str, names: Any) -> set[str]:
    return {f"{prefix}_{n.replace('.', '_')}" for n in names}


# -- the SGM / CompVis layout, from the UNet config (Stability's openaimodel.py) ------------------------------


def _sgm_names(config: dict[str, Any]) -> dict[str, str]:
    """diffusers UNet module prefix -> SGM module prefix, block by block."""
    levels, per = len(config["block_out_channels"]), config["layers_per_block"]
    has_attn = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    out = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
           "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}  # fmt: skip
    index = 1
    for level in range(levels):
        for r in range(per):
            out[f"down_blocks.{level}.resnets.{r}"] = f"input_blocks.{index}.0"
            if has_attn[level]:
                out[f"down_blocks.{level}.attentions.{r}"] = f"input_blocks.{index}.1"
            index += 1
        if level < levels - 1:
            out[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
            index += 1
    out["mid_block.resnets.0"], out["mid_block.attentions.0"], out["mid_block.resnets.1"] = (
        "middle_block.0", "middle_block.1", "middle_block.2"
    )  # fmt: skip
    up_attn = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    index = 0
    for level in range(levels):
        for r in range(per + 1):
            out[f"up_blocks.{level}.resnets.{r}"] = f"output_blocks.{index}.0"
            if up_attn[level]:
                out[f"up_blocks.{level}.attentions.{r}"] = f"output_blocks.{index}.1"
            if r == per and level < levels - 1:
                out[f"up_blocks.{level}.upsamplers.0.conv"] = f"output_blocks.{index}.{2 if up_attn[level] else 1}.conv"
            index += 1
    return out


RESNET = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
          "conv_shortcut": "skip_connection", "norm1": "in_layers.0", "norm2": "out_layers.0"}  # fmt: skip


def _to_sgm(name: str, table: dict[str, str]) -> str:
    prefix = max((p for p in table if name == p or name.startswith(p + ".")), key=len)
    rest = name[len(prefix) + 1 :]
    if ".resnets." in prefix or prefix.startswith("mid_block.resnets"):
        rest = RESNET.get(rest, rest)
    return table[prefix] + (f".{rest}" if rest else "")


# -- A1111's conversion of SD 1.x kohya names (extensions-builtin/Lora/networks.py), re-stated ---------------

_A1111 = [
    (r"lora_unet_conv_in(.*)", lambda m: f"diffusion_model_input_blocks_0_0{m[1]}"),
    (r"lora_unet_conv_out(.*)", lambda m: f"diffusion_model_out_2{m[1]}"),
    (r"lora_unet_time_embedding_linear_(\d+)(.*)", lambda m: f"diffusion_model_time_embed_{int(m[1]) * 2 - 2}{m[2]}"),
    (r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)",
     lambda m: f"diffusion_model_input_blocks_{1 + int(m[1]) * 3 + int(m[3])}_{1 if m[2] == 'attentions' else 0}_"
     f"{_a1111_suffix(m[4])}"),
    (r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)",
     lambda m: f"diffusion_model_middle_block_{1 if m[1] == 'attentions' else int(m[2]) * 2}_{_a1111_suffix(m[3])}"),
    (r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)",
     lambda m: f"diffusion_model_output_blocks_{int(m[1]) * 3 + int(m[3])}_{1 if m[2] == 'attentions' else 0}_"
     f"{_a1111_suffix(m[4])}"),
    (r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv",
     lambda m: f"diffusion_model_input_blocks_{3 + int(m[1]) * 3}_0_op"),
    (r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv",
     lambda m: f"diffusion_model_output_blocks_{2 + int(m[1]) * 3}_{2 if int(m[1]) > 0 else 1}_conv"),
    (r"lora_te_text_model_encoder_layers_(\d+)_(.+)", lambda m: f"transformer_text_model_encoder_layers_{m[1]}_{m[2]}"),
]  # fmt: skip
_A1111_SUFFIX = {"conv1": "in_layers_2", "conv2": "out_layers_3", "time_emb_proj": "emb_layers_1",
                 "conv_shortcut": "skip_connection"}  # fmt: skip


def _a1111_suffix(rest: str) -> str:
    return _A1111_SUFFIX.get(rest, rest)


def _a1111(key: str) -> str | None:
    for pattern, convert in _A1111:
        m = re.fullmatch(pattern, key)
        if m:
            return convert(m)
    return None


# -- the tests ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd15() -> dict[str, dict[str, tuple[int, ...]]]:
    return {"unet": _unet(SD15_UNET), "text_encoder": _text(CLIP_L)}


@pytest.fixture(scope="module")
def sdxl() -> dict[str, dict[str, tuple[int, ...]]]:
    return {"unet": _unet(SDXL_UNET), "text_encoder": _text(CLIP_L), "text_encoder_2": _text(CLIP_G, True)}


def test_sd15_kohya_and_comfyui_names(tmp_path: Path, sd15: dict[str, Any]) -> None:
    got = _exported(_adapter("sd1", sd15), tmp_path / "sd15.safetensors")
    expected = _flat("lora_unet", sd15["unet"]) | _flat("lora_te", sd15["text_encoder"])
    assert got == expected, (sorted(got - expected)[:5], sorted(expected - got)[:5])


def test_sd15_every_key_converts_for_a1111_to_a_distinct_compvis_module(tmp_path: Path, sd15: dict[str, Any]) -> None:
    got = _exported(_adapter("sd1", sd15), tmp_path / "sd15.safetensors")
    sgm = _sgm_names(SD15_UNET)
    compvis = {"diffusion_model_" + _to_sgm(n, sgm).replace(".", "_") for n in sd15["unet"]}
    compvis |= {"transformer_" + n.replace(".", "_") for n in sd15["text_encoder"]}
    converted = {k: _a1111(k) for k in got}
    dropped = sorted(k for k, v in converted.items() if v is None)
    # A1111's table has no entry for the time embedding's or the conv_norm's neighbours outside blocks:
    # only time_embedding and conv_in/out among them are LoRA layers, and those convert.
    assert dropped == [], dropped[:5]
    assert len(set(converted.values())) == len(got), "two keys convert to one module"
    assert set(converted.values()) <= compvis, sorted(set(converted.values()) - compvis)[:5]  # type: ignore[operator]


def test_sdxl_names_are_the_sgm_names_kohya_comfyui_and_a1111_map(tmp_path: Path, sdxl: dict[str, Any]) -> None:
    got = _exported(_adapter("sdxl", sdxl), tmp_path / "sdxl.safetensors")
    sgm = _sgm_names(SDXL_UNET)
    expected = {"lora_unet_" + _to_sgm(n, sgm).replace(".", "_") for n in sdxl["unet"]}
    expected |= _flat("lora_te1", sdxl["text_encoder"]) | _flat("lora_te2", sdxl["text_encoder_2"])
    assert got == expected, (sorted(got - expected)[:5], sorted(expected - got)[:5])
    assert len(got) == sum(len(layers) for layers in sdxl.values())
