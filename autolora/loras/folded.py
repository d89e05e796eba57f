"""A fusion as one exact LoRA adapter: ranks concatenated, coefficients and scales folded into the up weights."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autolora.adapter import KeptAdapter, config_to_dict
from autolora.errors import UserError
from autolora.loras.engine import FusedAdapters, Slot
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


def kept(
    factors: Mapping[str, Mapping[str, tuple[torch.Tensor, torch.Tensor]]], base: dict[str, Any], info: dict[str, Any]
) -> KeptAdapter:
    """A ``KeptAdapter`` whose modules apply exactly ``B @ A`` (``factors`` carry any scale in ``B``).

    ``lora_alpha`` is the most common rank R for every module and ``rank_pattern`` lists the other ranks, whose
    ``B`` is multiplied by ``r / R`` to cancel their scale ``R / r``. One alpha for all modules (rather than
    ``alpha = r`` per module) because diffusers' kohya loader gives attention projections the file's most
    common alpha (see ``autolora.formats``), so only a single alpha reloads exactly from both files.
    """
    configs: dict[str, dict[str, Any]] = {}
    state_dicts: dict[str, dict[str, torch.Tensor]] = {}
    for comp, modules in factors.items():
        ranks = {name: int(down.shape[0]) for name, (down, _) in modules.items()}
        common = Counter(ranks.values()).most_common(1)[0][0]
        state: dict[str, torch.Tensor] = {}
        for name, (down, up) in modules.items():
            state[f"{name}.lora_A.weight"] = down.contiguous()
            state[f"{name}.lora_B.weight"] = (up * (ranks[name] / common)).contiguous()
        configs[comp] = _config(ranks, common)
        state_dicts[comp] = state
    return KeptAdapter(configs=configs, state_dicts=state_dicts, base=dict(base), info=info)


def _config(ranks: Mapping[str, int], common: int) -> dict[str, Any]:
    from peft import LoraConfig

    # Exact names, escaped: peft reads rank_pattern keys as regular expressions matched at the name's end.
    pattern = {re.escape(name): rank for name, rank in ranks.items() if rank != common}
    config = LoraConfig(
        r=common,
        lora_alpha=common,
        target_modules=sorted(ranks),
        rank_pattern=pattern,
        init_lora_weights=False,
    )
    return config_to_dict(config)
