"""LoKr (Yeh et al. 2024, LyCORIS): the update is a Kronecker product ``kron(w1, w2) * alpha / r`` of a small
factor ``w1`` and a larger one ``w2``, each full or a rank-r product; ``lokr_factor`` sets w1's size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autolora.errors import UserError
from autolora.methods.base import KohyaModule, PeftMethod, Settings, modules_of, pattern_value
from autolora.methods.param import Param

if TYPE_CHECKING:
    import torch
    from peft import LoKrConfig, PeftConfig


_KEYS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")


class LoKr(PeftMethod):
    name = "lokr"
    peft_type = "LOKR"
    lycoris_algo = "lokr"
    files = "lycoris"
    params = {
        "lokr_factor": Param(
            "int",
            -1,
            lambda v: v == -1 or v >= 1,
            "-1 (near-square factors) or an integer >= 1",
            help="LoKr: size of the small Kronecker factor w1",
        ),
        "lokr_decompose_both": Param("bool", False, help="LoKr: w1 a rank-r product too (not only w2)"),
    }

    def config(self, spec: Settings, modules: list[str], rank_of: Mapping[str, int]) -> LoKrConfig:
        from peft import LoKrConfig

        rank, ratio = int(spec["rank"]), float(spec["alpha_ratio"])
        return LoKrConfig(
            r=rank,
            alpha=ratio * rank,  # type: ignore[arg-type]  # peft scales by alpha / r and accepts floats
            target_modules=list(modules),
            rank_pattern=dict(rank_of),
            alpha_pattern={m: ratio * r for m, r in rank_of.items()},
            decompose_both=bool(spec["lokr_decompose_both"]),
            decompose_factor=int(spec["lokr_factor"]),
        )

    def describe(self, values: Mapping[str, Any]) -> list[str]:
        return [f"factor={values['lokr_factor']}"] + (["decompose_both"] if values["lokr_decompose_both"] else [])

    def lycoris_args(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return {"factor": config.get("decompose_factor", -1), "decompose_both": bool(config.get("decompose_both"))}

    def config_class(self) -> type[PeftConfig]:
        from peft import LoKrConfig

        return LoKrConfig

    def kohya_modules(
        self, comp: str, name_of: Mapping[str, str], state: Mapping[str, torch.Tensor], config: Mapping[str, Any]
    ) -> list[KohyaModule]:
        # peft always scales by alpha / r. A1111 and ComfyUI scale by alpha / dim where a factor is a low-rank
        # product (dim = its rank, = r), and by 1 when both factors are full matrices; then the scale is baked
        # into w1 and no .alpha is written, so every reader applies what peft trained.
        for key in state:
            if key.rsplit(".", 1)[-1] not in _KEYS:
                raise UserError(f"cannot write the LyCORIS file: it has no place for {comp} weight {key!r}")
        out = []
        for module in modules_of(state, _KEYS):
            tensors = {k: state[f"{module}.{k}"] for k in _KEYS if f"{module}.{k}" in state}
            has_w1 = "lokr_w1" in tensors or {"lokr_w1_a", "lokr_w1_b"} <= set(tensors)
            has_w2 = "lokr_w2" in tensors or {"lokr_w2_a", "lokr_w2_b"} <= set(tensors)
            if not (has_w1 and has_w2):
                raise UserError(f"cannot export: {comp} LoKr module {module!r} lacks a factor ({sorted(tensors)})")
            rank = int(pattern_value(config.get("rank_pattern"), module, config.get("r", 8)))
            alpha = float(pattern_value(config.get("alpha_pattern"), module, config.get("alpha", 8)))
            low_rank = [tensors[k].shape[1] for k in ("lokr_w1_a", "lokr_w2_a") if k in tensors]
            if any(int(d) != rank for d in low_rank):
                raise UserError(f"cannot export: {comp} module {module!r} has rank {low_rank}, its config says {rank}")
            written: float | None = alpha
            if not low_rank:
                tensors["lokr_w1"] = tensors["lokr_w1"] * (alpha / rank)
                written = None
            out.append(KohyaModule(comp, name_of[module], tensors, written, rank))
        return out
