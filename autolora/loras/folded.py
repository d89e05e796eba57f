"""A fusion as one exact LoRA adapter: ranks concatenated, coefficients and scales folded into the up weights."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from autolora.adapter import KeptAdapter
from autolora.errors import UserError
from autolora.loras.engine import FusedAdapters, Slot
from autolora.loras.factors import kept
from autolora.loras.facts import base_facts

if TYPE_CHECKING:
    import torch


def fused_adapter(fa: FusedAdapters, coeffs: Mapping[str, Mapping[str, float]]) -> KeptAdapter:
    """The fusion ``coeffs`` as one exact LoRA adapter, ranks concatenated.

    Per module: ``A = cat_r(A_i)``, ``B = cat_r(coef_i * scale_i * B_i)`` over the adapters with a non-zero
    coefficient, so ``B @ A = sum_i coef_i * scale_i * B_i @ A_i`` exactly. See ``_kept`` for how the scale is
    stored.

    Args:
        fa: The loaded LoRAs.
        coeffs: Coefficients of any granularity.

    Returns:
        A ``KeptAdapter`` for the unet and the text encoders the LoRAs touch, ready for ``export_all``.

    Raises:
        UserError: for DoRA or bias-carrying adapters (their effect is not a sum of low-rank products) or a
            fusion with every coefficient zero.
    """
    import torch

    fa._check_coefficients(coeffs)
    factors: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    with torch.no_grad():
        for slot in fa.slots:
            downs, ups = [], []
            for adapter, base in slot.base.items():
                coef = fa._coefficient_of(slot, adapter, coeffs)
                if coef == 0.0:
                    continue
                _check_plain(slot, adapter)
                downs.append(slot.module.lora_A[adapter].weight.detach().float().cpu())
                ups.append(slot.module.lora_B[adapter].weight.detach().float().cpu() * (coef * base))
            if downs:
                factors.setdefault(slot.component, {})[slot.name] = (torch.cat(downs, 0), torch.cat(ups, 1))
    if not factors:
        raise UserError("cannot build a fused adapter: every coefficient is zero")
    return kept(factors, base_facts(fa.pipe), {"fusion": {"files": [str(f) for f in fa.files], "coeffs": coeffs}})


def _check_plain(slot: Slot, adapter: str) -> None:
    module = slot.module
    if getattr(module, "use_dora", {}).get(adapter) or getattr(module, "lora_bias", {}).get(adapter):
        raise UserError(f"cannot fuse {adapter}: module {slot.name} is DoRA or has a LoRA bias (not low-rank)")
