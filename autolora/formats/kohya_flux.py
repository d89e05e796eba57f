"""Flux.1 LoRAs in the kohya sd-scripts format that ComfyUI, Forge and diffusers' kohya loader read.

Those tools name Flux's modules as Black Forest Labs' reference code does, where diffusers' separate
projections are fused: a double block's ``img_attn.qkv`` is diffusers' ``attn.to_q/to_k/to_v``, its
``txt_attn.qkv`` the ``add_q/k/v_proj``, and a single block's ``linear1`` holds ``to_q``, ``to_k``, ``to_v``
and ``proj_mlp`` stacked on the output axis. A LoRA trained on the separate projections becomes one LoRA on
the fused layer whose down weight stacks the parts' down weights and whose up weight is block-diagonal
(each part's up weight times its peft scale; parts the adapter did not train are zero). The file's alpha is
then the fused rank, a scale of 1, so ComfyUI's ``up @ down * alpha / rank`` and diffusers'
``_convert_kohya_flux_lora_to_diffusers`` (which recognises the block-diagonal layout and splits it again)
both give back exactly what peft trained. Written by hand because neither diffusers nor peft writes this
format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autolora.errors import UserError

if TYPE_CHECKING:
    import torch

_DOUBLE = {
    "attn.to_out.0": "img_attn.proj",
    "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0",
    "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0",
    "ff_context.net.2": "txt_mlp.2",
    "norm1.linear": "img_mod.lin",
    "norm1_context.linear": "txt_mod.lin",
}
_DOUBLE_FUSED = {
    "attn.to_q": ("img_attn.qkv", 0),
    "attn.to_k": ("img_attn.qkv", 1),
    "attn.to_v": ("img_attn.qkv", 2),
    "attn.add_q_proj": ("txt_attn.qkv", 0),
    "attn.add_k_proj": ("txt_attn.qkv", 1),
    "attn.add_v_proj": ("txt_attn.qkv", 2),
}
_SINGLE = {"proj_out": "linear2", "norm.linear": "modulation.lin"}
_SINGLE_FUSED = {
    "attn.to_q": ("linear1", 0),
    "attn.to_k": ("linear1", 1),
    "attn.to_v": ("linear1", 2),
    "proj_mlp": ("linear1", 3),
}
_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")
MLP_RATIO = 4  # FluxSingleTransformerBlock's proj_mlp width, fixed in diffusers and in BFL's code


@dataclass(frozen=True)
class FluxKohyaModule:
    """One module of the kohya file: its BFL name (dots), down and up weights, alpha."""

    name: str
    down: torch.Tensor
    up: torch.Tensor
    alpha: float


def bfl_name(module: str) -> tuple[str, int | None]:
    """A diffusers Flux module -> (BFL module name, part index in a fused layer or None)."""
    m = _BLOCK.match(module)
    if not m:
        raise UserError(f"cannot write the Flux kohya file: no BFL name is known for transformer module {module!r}")
    double, index, rest = m.group(1) == "transformer_blocks", int(m.group(2)), m.group(3)
    prefix = f"{'double_blocks' if double else 'single_blocks'}.{index}"
    plain, fused = (_DOUBLE, _DOUBLE_FUSED) if double else (_SINGLE, _SINGLE_FUSED)
    if rest in plain:
        return f"{prefix}.{plain[rest]}", None
    if rest in fused:
        name, part = fused[rest]
        return f"{prefix}.{name}", part
    raise UserError(f"cannot write the Flux kohya file: no BFL name is known for transformer module {module!r}")


def _part_widths(fused: str, inner: int) -> list[int]:
    """Output widths of a fused layer's parts: q, k, v (and the MLP input of a single block's linear1)."""
    return [inner, inner, inner, MLP_RATIO * inner] if fused.endswith("linear1") else [inner, inner, inner]


def flux_modules(
    state_dict: Mapping[str, torch.Tensor], scale_of: Callable[[str, int], float]
) -> list[FluxKohyaModule]:
    """The kohya modules of a Flux transformer adapter (peft keys ``<module>.lora_A.weight`` / ``lora_B``).

    ``scale_of(module, rank)`` is the factor peft multiplies the module's ``B @ A`` by.
    """
    import torch

    out: list[FluxKohyaModule] = []
    fused: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor, float]]] = {}
    for key in sorted(k for k in state_dict if k.endswith(".lora_A.weight")):
        module = key.removesuffix(".lora_A.weight")
        down, up = state_dict[key], state_dict[f"{module}.lora_B.weight"]
        scale = scale_of(module, int(down.shape[0]))
        name, part = bfl_name(module)
        if part is None:
            out.append(FluxKohyaModule(name, down, up, scale * int(down.shape[0])))
        else:
            fused.setdefault(name, {})[part] = (down, up, scale)
    for name, parts in sorted(fused.items()):
        any_down = next(iter(parts.values()))[0]
        inner = int(any_down.shape[1])  # every part reads the block's hidden state
        widths = _part_widths(name, inner)
        rank = max(int(d.shape[0]) for d, _, _ in parts.values())
        n = len(widths)
        down = torch.zeros(n * rank, inner, dtype=any_down.dtype)
        up = torch.zeros(sum(widths), n * rank, dtype=any_down.dtype)
        row = 0
        for j, width in enumerate(widths):
            if j in parts:
                a, b, scale = parts[j]
                if int(b.shape[0]) != width:
                    raise UserError(
                        f"cannot write the Flux kohya file: {name} part {j} is {int(b.shape[0])} wide, expected {width}"
                    )
                r = int(a.shape[0])
                down[j * rank : j * rank + r] = a
                up[row : row + width, j * rank : j * rank + r] = b * scale
            row += width
        out.append(FluxKohyaModule(name, down, up, float(n * rank)))
    return sorted(out, key=lambda m: m.name)
