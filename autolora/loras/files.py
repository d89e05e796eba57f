"""Cheap checks of a LoRA file from its safetensors header: readable, a LoRA, made for this base model."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from autolora.errors import UserError
from autolora.loras.groups import COMPONENTS

if TYPE_CHECKING:
    from autolora.models.loading import ModelRef

# Any key of a LoRA in the formats diffusers loads: peft (lora_A/B), kohya (lora_down/up), old diffusers (lora.down).
_LORA_KEY = re.compile(r"lora_A|lora_B|lora_down|lora_up|lora\.down|lora\.up|lora_linear_layer")
_LYCORIS_KEY = re.compile(r"hada_w|lokr_w")
_LYCORIS = {"hada_w": "LoHa", "lokr_w": "LoKr"}
_KNOWN_PREFIX = (
    "unet.",
    "transformer.",
    "text_encoder.",
    "text_encoder_2.",
    "lora_unet_",
    "lora_transformer_",
    "lora_te_",
    "lora_te1_",
    "lora_te2_",
)
_WIDTH_ARCH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
# The down (input) matrix of a cross-attention key/value projection, in every spelling: its input width is the
# text-embedding width the LoRA was trained for.
_CROSS_KV_DOWN = re.compile(r"attn2[._](?:processor[._])?to_[kv](?:_lora)?[._](?:lora_A|lora_down|lora[._]down|down)")


def lora_target(model: ModelRef) -> tuple[int, list[str]]:
    """What ``check_lora_file`` checks a file against, from the base model's JSON: its cross-attention width (0 for
    a transformer model) and its LoRA-loadable components."""
    width = int(model.denoiser_config.get("cross_attention_dim", 0)) if model.denoiser == "unet" else 0
    second = ["text_encoder_2"] if model.arch in ("sdxl", "sd3", "flux") else []
    return width, [model.denoiser, "text_encoder", *second]


def check_lora_file(path: Path, cross_attention_dim: int, components: Iterable[str] = COMPONENTS) -> str:
    """Check a LoRA file from its header alone (no tensor is read).

    Args:
        path: The file.
        cross_attention_dim: The base model's text-embedding width (``unet.config.cross_attention_dim``; 0 for
            a transformer model, whose LoRAs have no cross-attention to check: diffusers refuses a misfit).
        components: The pipeline's LoRA-loadable components present (``unet``, ``text_encoder``...).

    Returns:
        ``lora``, or ``lycoris`` for a LyCORIS LoHa/LoKr file (UNet models only: ``autolora.loras.lycoris`` reads
        it as an exact LoRA, matched by kohya names, which SD3 and Flux files do not share).

    Raises:
        UserError: one line naming the file and what was expected.
    """
    from safetensors import safe_open

    if not path.is_file():
        raise UserError(f"LoRA file {path}: not found (expected a .safetensors LoRA file)")
    if path.suffix != ".safetensors":
        raise UserError(f"LoRA file {path}: expected a .safetensors file (pickle files can run code)")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            widths = {f.get_slice(k).get_shape()[1] for k in keys if _CROSS_KV_DOWN.search(k)}
    except Exception as e:  # safetensors raises several types for a damaged header
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"LoRA file {path}: not a readable safetensors file ({reason})") from None
    lora_keys = [k for k in keys if _LORA_KEY.search(k)]
    found_lycoris = sorted({_LYCORIS[m[0]] for k in keys if (m := _LYCORIS_KEY.search(k))})
    if found_lycoris and not lora_keys:
        if not cross_attention_dim:
            raise UserError(
                f"LoRA file {path}: a LyCORIS {'/'.join(found_lycoris)} file for a transformer model; LyCORIS files "
                "are read for SD 1.x/2.x/SDXL (UNet) models"
            )
        _check_known_prefix(path, keys)
        return "lycoris"
    if not lora_keys or not any(k.startswith(_KNOWN_PREFIX) for k in lora_keys):
        raise UserError(
            f"LoRA file {path}: no LoRA weights (expected diffusers keys unet.*/transformer.*/text_encoder*.* or "
            "kohya keys lora_unet_*/lora_te*)"
        )
    _check_width(path, widths, cross_attention_dim)
    has_te2 = any(k.startswith(("text_encoder_2.", "lora_te2_")) for k in lora_keys)
    if has_te2 and "text_encoder_2" not in components:
        raise UserError(f"LoRA file {path}: has text_encoder_2 weights (an SDXL LoRA) but the base model has none")
    return "lora"


def _check_known_prefix(path: Path, keys: list[str]) -> None:
    if not any(k.startswith(_KNOWN_PREFIX) for k in keys):
        raise UserError(f"LoRA file {path}: a LyCORIS file without kohya keys (expected lora_unet_*/lora_te*)")


def _check_width(path: Path, widths: set[int], cross_attention_dim: int) -> None:
    def arch(width: int) -> str:
        return _WIDTH_ARCH.get(width, "an unknown model")

    if len(widths) > 1:
        raise UserError(f"LoRA file {path}: cross-attention widths {sorted(widths)} disagree (a damaged LoRA)")
    for width in widths:
        if cross_attention_dim == 0:
            raise UserError(
                f"LoRA file {path}: made for {arch(width)} (a UNet's cross-attention width {width}), but the base "
                "model is a transformer (SD3 or Flux)"
            )
        if width != cross_attention_dim:
            raise UserError(
                f"LoRA file {path}: made for {arch(width)} (cross-attention width {width}), but the base model "
                f"is {arch(cross_attention_dim)} (width {cross_attention_dim})"
            )
