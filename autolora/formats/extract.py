"""A DreamBooth trial's files: the whole fine-tuned denoiser, and a LoRA extracted from its difference.

The fine-tuned denoiser is the base model's (loaded again from the source the adapter records) with the
trial's weights in place, written with diffusers' ``save_pretrained`` (``diffusion_pytorch_model.safetensors``
+ ``config.json``: ``UNet2DConditionModel.from_pretrained(folder)``, then ``pipe.unet = ...``).

The LoRA is what kohya's ``extract_lora_from_models.py`` gives users who want a small file: per module the
truncated SVD of the weight difference ``W_tuned - W_base`` (a conv flattened to ``out x in*k*k``) at rank r,
``lora_B = U_r S_r`` and ``lora_A = V_r^T``, alpha = r (scale 1), exported as every LoRA is. Its relative
Frobenius error over all modules is printed and recorded; a LoRA carries no bias, so bias updates are dropped
(their share of the update is printed too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.adapter import config_to_dict
from autolora.atomic import readable, replace_folder
from autolora.models.family import denoiser
from autolora.models.loading import load_pipeline, resolve_model

if TYPE_CHECKING:
    import torch

    from autolora.adapter import KeptAdapter

DEFAULT_RANK = 16


@dataclass
class Extracted:
    adapter: KeptAdapter
    """The extracted LoRA, ready for ``autolora.formats.export.export_all``."""
    error: float
    """||update - LoRA||_F / ||update||_F over the weights of all modules."""
    worst: tuple[str, float]
    bias_share: float
    """The biases' share of the update's Frobenius norm (not in the LoRA)."""


def extract_lora(adapter: KeptAdapter, base: dict[str, torch.Tensor], rank: int) -> Extracted:
    """Truncated SVD of each fine-tuned weight's difference from ``base`` (the same keys, the base's values)."""
    import torch

    comp, tuned = next(iter(adapter.state_dicts.items()))
    state: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    err2 = total2 = bias2 = 0.0
    worst = ("", 0.0)
    for key in sorted(tuned):
        delta = tuned[key].float() - base[key].float()
        if not key.endswith(".weight"):
            bias2 += float(delta.pow(2).sum())
            continue
        module = key.removesuffix(".weight")
        flat = delta.reshape(delta.shape[0], -1)
        r = min(rank, *flat.shape)
        u, s, vh = torch.linalg.svd(flat, full_matrices=False)
        up, down = u[:, :r] * s[:r], vh[:r]
        left = float(s[r:].pow(2).sum())
        err2, total2 = err2 + left, total2 + float(s.pow(2).sum())
        rel = math.sqrt(left / max(float(s.pow(2).sum()), 1e-30))
        worst = max(worst, (module, rel), key=lambda w: w[1])
        if delta.dim() == 4:
            down = down.reshape(r, *delta.shape[1:])
            up = up.reshape(delta.shape[0], r, 1, 1)
        state[f"{module}.lora_A.weight"] = down.contiguous()
        state[f"{module}.lora_B.weight"] = up.contiguous()
        if r != rank:
            ranks[module] = r
    from peft import LoraConfig

    modules = sorted({k.removesuffix(".lora_A.weight") for k in state if k.endswith(".lora_A.weight")})
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=modules,
        rank_pattern=ranks,
        alpha_pattern={m: r for m, r in ranks.items()},
    )
    error = math.sqrt(err2 / max(total2, 1e-30))
    info = {**adapter.info, "extracted_from": "dreambooth", "extraction": {"rank": rank, "error": error}}
    lora = replace(adapter, configs={comp: config_to_dict(config)}, state_dicts={comp: state}, info=info)
    bias_share = math.sqrt(bias2 / max(bias2 + total2, 1e-30))
    return Extracted(lora, error, worst, bias_share)


def load_base_denoiser(adapter: KeptAdapter) -> Any:
    """The base model's denoiser, loaded from the source the adapter records (on the CPU, fp32)."""
    import torch

    pipe = load_pipeline(resolve_model(str(adapter.base["source"])), "cpu", torch.float32)
    return denoiser(pipe)


def save_tuned(model: Any, tuned: dict[str, torch.Tensor], folder: Path) -> None:
    """The base ``model`` with the fine-tuned weights in place, as a diffusers folder (replaced whole)."""
    import torch

    with torch.no_grad():
        for key, value in tuned.items():
            param = model.get_parameter(key)
            param.copy_(value.to(param.dtype))
    with replace_folder(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for path in tmp.iterdir():
            readable(path)
