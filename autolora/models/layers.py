"""Layer maps: block groups and layer kinds <-> module names, for UNets and DiT transformers.

Diffusers names every UNet module the same way for SD 1.x, 2.x and SDXL
(``down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k``), so one map serves all three.
Search spaces speak in groups (blocks ``down``/``mid``/``up`` or one level ``down.1``; layers
``self_attn``, ``cross_attn``, ``ff``, ``proj``, ``conv``; projections ``q``/``k``/``v``/``out``),
and this module turns a choice of groups into the exact module names peft targets.

The DiT transformers of SD 3.x and Flux.1 have their own map (``autolora.models.dit_layers``): blocks
``double`` (Flux's double-stream blocks; SD3's joint blocks, also spelt ``joint``) and ``single`` (Flux),
whole or by depth (``double.3``, ``single.10-37``); layers ``attn``, ``context_attn``, ``ff``, ``context_ff``,
``norm``. The two maps' module names never overlap, so one set of functions serves both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from autolora.models import dit_layers

if TYPE_CHECKING:
    import torch

BLOCKS = ("down", "mid", "up")
UNET_LAYERS = ("self_attn", "cross_attn", "ff", "proj", "conv")
LAYERS = (*UNET_LAYERS, *(k for k in dit_layers.LAYERS if k not in UNET_LAYERS))
RANK_GROUPS = ("down", "mid", "up", *dit_layers.BLOCKS)
PROJECTIONS = ("q", "k", "v", "out")

_PROJ = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "out"}
_BLOCK_RE = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^(mid_block)\.")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def block_of(name: str) -> tuple[str, int | None] | None:
    """``down_blocks.1.x`` -> ("down", 1); ``mid_block.x`` -> ("mid", None); ``transformer_blocks.3.x`` ->
    ("double", 3); ``single_transformer_blocks.0.x`` -> ("single", 0); other modules -> None."""
    m = _BLOCK_RE.match(name)
    if not m:
        return dit_layers.block_of(name)
    if m.group(3):
        return ("mid", None)
    return ("down" if m.group(1) == "down_blocks" else "up", int(m.group(2)))


def layer_of(name: str) -> tuple[str, str | None] | None:
    """The layer kind of a module name and, for attention projections, which one."""
    if dit_layers.block_of(name):
        return dit_layers.layer_of(name)
    for attn, kind in ((".attn1.", "self_attn"), (".attn2.", "cross_attn")):
        if attn in name:
            tail = name.rsplit(attn, 1)[1]
            return (kind, _PROJ[tail]) if tail in _PROJ else None
    if re.search(r"\.ff\.net\.(0\.proj|2)$", name):
        return ("ff", None)
    if re.search(r"\.attentions\.\d+\.(proj_in|proj_out)$", name):
        return ("proj", None)
    if re.search(r"\.resnets\.\d+\.(conv1|conv2)$", name):
        return ("conv", None)
    return None


def lora_candidates(unet: torch.nn.Module) -> list[str]:
    """Every UNet module a LoRA can target (Linear/Conv2d that a group names), in model order."""
    import torch

    names = []
    for name, module in unet.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and block_of(name) and layer_of(name):
            names.append(name)
    return names


def _block_matches(name: str, blocks: Iterable[str]) -> bool:
    found = block_of(name)
    if found is None:
        return False
    if found[0] in dit_layers.BLOCKS:
        return any(dit_layers.block_matches(found, b) for b in blocks)
    group, level = found
    return any(b == group or (level is not None and b == f"{group}.{level}") for b in blocks)


def select_modules(
    candidates: Iterable[str], blocks: Iterable[str], layers: Iterable[str], projections: Iterable[str] = PROJECTIONS
) -> list[str]:
    """The candidate module names inside ``blocks`` of a kind in ``layers``.

    ``projections`` filters the attention layers (``self_attn``/``cross_attn``) only.
    """
    blocks, layers, projections = list(blocks), set(layers), set(projections)
    out = []
    for name in candidates:
        kind = layer_of(name)
        if kind is None or kind[0] not in layers or not _block_matches(name, blocks):
            continue
        if kind[1] is not None and kind[1] not in projections:
            continue
        out.append(name)
    return out


def check_block_name(block: str) -> bool:
    """``down``, ``mid``, ``up`` or one level such as ``down.0``/``up.2``; for DiT models ``double``, ``joint``,
    ``single``, one block ``double.3`` or a depth range ``single.10-37``."""
    return block in BLOCKS or bool(re.fullmatch(r"(down|up)\.\d+", block)) or dit_layers.check_block_name(block)


def candidates_from_config(config: dict, class_name: str = "UNet2DConditionModel") -> list[str]:
    """Candidate module names of a denoiser (UNet or DiT transformer) built from its config on the meta
    device (no weights)."""
    import diffusers
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = getattr(diffusers, class_name).from_config(config)
    return lora_candidates(model)


def unet_candidates_from_config(config: dict) -> list[str]:
    """Candidate module names of a UNet built from its config on the meta device (no weights)."""
    return candidates_from_config(config)
