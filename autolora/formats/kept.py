"""What every file format reads of a kept adapter: its base architecture's components, its method, and the module
names as diffusers spells them (the names the kept state dicts use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autolora.adapter import KeptAdapter
from autolora.errors import UserError
from autolora.methods import kept_method

if TYPE_CHECKING:
    from autolora.methods import Method
COMPONENTS: dict[str, tuple[str, ...]] = {
    "sd1": ("unet", "text_encoder"),
    "sd2": ("unet", "text_encoder"),
    "sdxl": ("unet", "text_encoder", "text_encoder_2"),
    "sd3": ("transformer",),
    "flux": ("transformer",),
}
LORA_A = ".lora_A.weight"
LORA_B = ".lora_B.weight"


def adapter_method(adapter: KeptAdapter) -> Method:
    """The adapter's method (its components' one method, or pivotal: a LoRA and token embeddings)."""

    try:
        return kept_method(adapter.configs)
    except ValueError as e:
        raise UserError(f"cannot export: {e}") from None


def check_adapter(adapter: KeptAdapter) -> None:
    """Raise ``UserError`` unless the adapter's components and weights fit its base architecture."""
    arch = adapter.base.get("arch")
    if arch not in COMPONENTS:
        raise UserError(f"cannot export: unknown base architecture {arch!r} (expected one of {sorted(COMPONENTS)})")
    allowed = COMPONENTS[arch]
    for comp in adapter.state_dicts:
        if comp not in allowed:
            raise UserError(f"cannot export: a {arch} model has no component {comp!r} (it has {', '.join(allowed)})")
        if comp not in adapter.configs:
            raise UserError(f"cannot export: component {comp!r} has weights but no LoraConfig")
    if not any(adapter.state_dicts.values()):
        raise UserError("cannot export: the adapter has no LoRA weights")


def canonical_key(comp: str, key: str) -> str:
    """Give text-encoder keys the ``text_model.`` prefix that older transformers (and kohya) use.

    transformers 5 flattens ``CLIPTextModel`` (its modules are ``encoder.layers...``) but not
    ``CLIPTextModelWithProjection``; diffusers strips the prefix again when the loaded model has none,
    so the prefixed spelling loads under both old and new transformers.
    """
    if comp in ("unet", "transformer") or key.startswith(("text_model.", "text_projection.")):
        return key
    return f"text_model.{key}"
