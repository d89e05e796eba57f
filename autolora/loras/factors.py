"""Exact low-rank factors as a kept adapter: what a fusion (``folded``), a truncation (``rank``) and a LyCORIS
file read as a LoRA (``lycoris``) all become before they are exported or loaded."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autolora.adapter import KeptAdapter, config_to_dict

if TYPE_CHECKING:
    import torch


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
