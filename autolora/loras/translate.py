"""Block coefficients in other tools' terms: diffusers ``set_adapters`` weights and A1111 lora-block-weight."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from autolora.errors import UserError
from autolora.loras.facts import base_facts
from autolora.loras.groups import TEXT_ENCODERS


class FusedAdapters(Protocol):
    """What these translations read of ``autolora.loras.engine.FusedAdapters`` (which calls them)."""

    pipe: Any
    names: list[str]
    slots: list[Any]

    def _check_coefficients(self, coeffs: Mapping[str, Mapping[str, float]]) -> dict[str, str]: ...


# lora-block-weight's 17 slots for SD 1.x (the blocks holding attentions) and the block group feeding each.
A1111_SLOTS = (
    "BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID",
    "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11",
)  # fmt: skip
_A1111_GROUP = {
    "BASE": "text_encoder",
    "IN01": "down.0", "IN02": "down.0", "IN04": "down.1", "IN05": "down.1", "IN07": "down.2", "IN08": "down.2",
    "MID": "mid",
    "OUT03": "up.1", "OUT04": "up.1", "OUT05": "up.1", "OUT06": "up.2", "OUT07": "up.2", "OUT08": "up.2",
    "OUT09": "up.3", "OUT10": "up.3", "OUT11": "up.3",
}  # fmt: skip


def diffusers_weights(groups: Mapping[str, float]) -> dict[str, Any]:
    unet: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for group, value in groups.items():
        if group in TEXT_ENCODERS:
            out[group] = float(value)
        elif group == "mid":
            unet["mid"] = float(value)
        elif group != "unet":  # modules outside the blocks: checked to be 1, diffusers' default
            side, _, level = group.partition(".")
            unet.setdefault(side, {})[f"block_{level}"] = float(value)
    out["unet"] = unet
    return out


def set_adapters_weights(fa: FusedAdapters, coeffs: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """See ``FusedAdapters.diffusers_set_adapters_weights``."""
    granularity = fa._check_coefficients(coeffs)
    if getattr(fa.pipe, "unet", None) is None:
        raise UserError("diffusers' set_adapters has no per-block weights for transformer models (use the fused LoRA)")
    out: dict[str, dict[str, Any]] = {}
    for lora in fa.names:
        if granularity[lora] != "block":
            raise UserError(f"diffusers block weights need block coefficients; {lora} has {granularity[lora]}")
        _check_diffusers_reach(fa, lora, coeffs[lora])
        out[lora] = diffusers_weights(coeffs[lora])
    return out


def a1111_vector(fa: FusedAdapters, coeffs: Mapping[str, Mapping[str, float]], lora: str) -> str:
    """See ``FusedAdapters.a1111_block_weights``."""
    arch = base_facts(fa.pipe)["arch"]
    if arch != "sd1":
        raise UserError(f"A1111 17-value block weights exist for SD 1.x only; the loaded model is {arch}")
    granularity = fa._check_coefficients(coeffs)
    if granularity[lora] != "block":
        raise UserError(f"A1111 block weights need block coefficients; {lora} has {granularity[lora]}")
    values = coeffs[lora]
    slotless = {g: v for g, v in values.items() if g not in _A1111_GROUP.values() and v != 1.0}
    if slotless:
        raise UserError(f"A1111's 17-value block weights have no slot for {lora} groups {sorted(slotless)}")
    return ",".join(f"{float(values.get(_A1111_GROUP[slot], 1.0)):.6g}" for slot in A1111_SLOTS)


def _check_diffusers_reach(fa: FusedAdapters, lora: str, groups: Mapping[str, float]) -> None:
    unet = fa.pipe.unet
    with_attn = {
        f"{side}.{i}"
        for side, blocks in (("down", unet.down_blocks), ("up", unet.up_blocks))
        for i, block in enumerate(blocks)
        if hasattr(block, "attentions")
    }
    for slot in fa.slots:
        if lora not in slot.base or slot.component != "unet":
            continue
        group = slot.groups["block"]
        if group == "unet":  # diffusers' lookup indexes name parts these names lack and fails
            raise UserError(f"diffusers' block weights cannot handle {lora} module {slot.name} outside the blocks")
        reached = group in with_attn or slot.name.startswith("mid_block.attentions.")
        if not reached and groups[group] != 1.0:
            raise UserError(
                f"diffusers' block weights cannot scale {lora} module {slot.name} (group {group}); "
                "use set_coefficients or coefficient 1 there"
            )
