"""LoRA (Hu et al. 2021), with peft's DoRA, rsLoRA and Gaussian-init variants: the default method."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from autolora.methods.base import PeftMethod, Settings
from autolora.methods.param import Param

if TYPE_CHECKING:
    from peft import LoraConfig, PeftConfig


class Lora(PeftMethod):
    name = "lora"
    peft_type = "LORA"
    params = {
        "dropout": Param("float", 0.0, lambda v: 0 <= v < 1, "a number in [0, 1)", help="lora_dropout"),
        "use_dora": Param("bool", False, help="weight-decomposed LoRA"),
        "use_rslora": Param("bool", False, help="rank-stabilised scaling alpha/sqrt(r)"),
        "init": Param("choice", "default", allowed=("default", "gaussian"), help="LoRA A init (B starts at zero)"),
    }

    def config(self, spec: Settings, modules: list[str], rank_of: Mapping[str, int]) -> LoraConfig:
        from peft import LoraConfig

        rank, ratio = int(spec["rank"]), float(spec["alpha_ratio"])
        return LoraConfig(
            r=rank,
            lora_alpha=ratio * rank,  # type: ignore[arg-type]  # peft accepts float alphas
            target_modules=list(modules),
            rank_pattern=dict(rank_of),
            alpha_pattern={m: ratio * r for m, r in rank_of.items()},
            lora_dropout=float(spec["dropout"]),
            use_dora=bool(spec["use_dora"]),
            use_rslora=bool(spec["use_rslora"]),
            init_lora_weights="gaussian" if spec["init"] == "gaussian" else True,
        )

    def config_class(self) -> type[PeftConfig]:
        from peft import LoraConfig

        return LoraConfig
