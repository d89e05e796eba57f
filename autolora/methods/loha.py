"""LoHa (Hyeon-Woo et al. 2022, FedPara; LyCORIS): the update is the Hadamard product of two rank-r products,
``(w1_a @ w1_b) * (w2_a @ w2_b) * alpha / r``, a rank up to r^2 at twice LoRA's parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autolora.errors import UserError
from autolora.methods.base import KohyaModule, PeftMethod, Settings, modules_of, pattern_value

if TYPE_CHECKING:
    import torch
    from peft import LoHaConfig, PeftConfig


_KEYS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")


class LoHa(PeftMethod):
    name = "loha"
    peft_type = "LOHA"
    lycoris_algo = "loha"
    files = "lycoris"

    def config(self, spec: Settings, modules: list[str], rank_of: Mapping[str, int]) -> LoHaConfig:
        from peft import LoHaConfig

        rank, ratio = int(spec["rank"]), float(spec["alpha_ratio"])
        # use_effective_conv2d stays off: its Tucker cores (hada_t1/t2) are a second key layout for 3x3 convs.
        return LoHaConfig(
            r=rank,
            alpha=ratio * rank,  # type: ignore[arg-type]  # peft scales by alpha / r and accepts floats
            target_modules=list(modules),
            rank_pattern=dict(rank_of),
            alpha_pattern={m: ratio * r for m, r in rank_of.items()},
        )

    def config_class(self) -> type[PeftConfig]:
        from peft import LoHaConfig

        return LoHaConfig

    def kohya_modules(
        self, comp: str, name_of: Mapping[str, str], state: Mapping[str, torch.Tensor], config: Mapping[str, Any]
    ) -> list[KohyaModule]:
        # A1111 and ComfyUI scale a LoHa by alpha / hada_w1_b.shape[0], peft by alpha / r: the same number once
        # the module's rank is the one the config says (checked).
        out = []
        for key in state:
            if key.rsplit(".", 1)[-1] not in _KEYS:
                raise UserError(f"cannot write the LyCORIS file: it has no place for {comp} weight {key!r}")
        for module in modules_of(state, _KEYS):
            tensors = {k: state[f"{module}.{k}"] for k in _KEYS if f"{module}.{k}" in state}
            if len(tensors) != len(_KEYS):
                raise UserError(f"cannot export: {comp} LoHa module {module!r} lacks {set(_KEYS) - set(tensors)}")
            rank = int(tensors["hada_w1_b"].shape[0])
            expected = int(pattern_value(config.get("rank_pattern"), module, config.get("r", 8)))
            if rank != expected:
                raise UserError(f"cannot export: {comp} module {module!r} has rank {rank}, its config says {expected}")
            alpha = float(pattern_value(config.get("alpha_pattern"), module, config.get("alpha", 8)))
            out.append(KohyaModule(comp, name_of[module], dict(tensors), alpha, rank))
        return out
