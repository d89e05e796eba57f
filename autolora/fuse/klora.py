"""K-LoRA-style selection (Ouyang et al., arXiv 2502.18461): in each layer, one LoRA, the one whose largest update
elements dominate, with a weighting that moves from the first ("content") LoRA to the others over the steps.

What the paper does, as we implement it (the choices the paper leaves open, or that we make for more than two
LoRAs, are marked *ours*):

* For every LoRA layer ``l`` and LoRA ``i`` the update ``dW = scale * B @ A`` (a conv LoRA flattened to
  ``out x in*k*k``) and ``S_i(l)``, the sum of its ``K`` largest ``|dW|`` elements. *Ours*: ``K`` = the LoRA's rank x
  the larger side of ``dW`` (as many elements as its bigger factor has weights; ~2.5 % of an SD attention
  projection's elements at rank 8), ``klora_k`` overrides it.
* A balance ``gamma_i = sum_l sum|dW_0(l)| / sum_l sum|dW_i(l)|`` over the layers where the LoRAs compete (*ours*:
  a layer only one LoRA adapts is that LoRA's anyway), so a LoRA trained stronger does not win everywhere.
* A timestep weighting: the content score is multiplied by ``alpha * t/T + beta`` with ``t/T`` going from 1 at the
  first step to 0 at the last (``alpha`` 1.5, ``beta`` 0.5: x2 at the start, x0.5 at the end), so early steps
  (layout) lean to the content LoRA and late steps (detail) to the style LoRA(s).
* At every step, in every layer, the LoRA with the highest score is used at its full loaded scale and the others
  at 0.

*Ours*, for this project's inputs: the paper fuses one subject LoRA with one style LoRA; here every LoRA is a
style, so the run tries each LoRA in the content role (``klora:<name>`` puts ``<name>`` first, the others compete
as styles). Text-encoder layers act before the first step and use the first step's choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autolora.loras.engine import _set_scaling

if TYPE_CHECKING:
    from autolora.loras.engine import FusedAdapters, Slot

ALPHA = 1.5
BETA = 0.5


def delta_weight(slot: Slot, adapter: str) -> Any:
    """``scale * B @ A`` of ``adapter`` in ``slot`` at its loaded scale, float32 on the CPU, 2-D."""
    import torch

    module = slot.module
    with torch.no_grad():
        down = module.lora_A[adapter].weight.detach().float().flatten(1)
        up = module.lora_B[adapter].weight.detach().float().flatten(1)
        return (up @ down).cpu() * slot.base[adapter]


@dataclass
class Magnitudes:
    """Per slot and LoRA the top-K sum of ``|dW|``, and per LoRA the sum of all ``|dW|`` (computed once)."""

    top: list[dict[str, float]]
    total: dict[str, float]

    @classmethod
    def of(cls, fa: FusedAdapters, k: int | None = None) -> Magnitudes:
        import torch

        top: list[dict[str, float]] = []
        total = dict.fromkeys(fa.names, 0.0)
        for slot in fa.slots:
            row = {}
            for adapter in slot.base:
                dw = delta_weight(slot, adapter).abs().flatten()
                rank = int(slot.module.lora_A[adapter].weight.shape[0])
                n = min(dw.numel(), k or rank * max(delta_weight_shape(slot, adapter)))
                row[adapter] = float(torch.topk(dw, n).values.sum())
                if len(slot.base) > 1:  # the balance compares the LoRAs where they compete
                    total[adapter] += float(dw.sum())
            top.append(row)
        return cls(top, total)


def delta_weight_shape(slot: Slot, adapter: str) -> tuple[int, int]:
    module = slot.module
    return int(module.lora_B[adapter].weight.shape[0]), int(module.lora_A[adapter].weight[0].numel())


class KLora:
    """The selection for one role order (``content`` first), as a ``callback_on_step_end``.

    ``start`` sets the first step's choice; the callback sets step ``i + 1``'s after step ``i`` and the first
    step's again after the last, so the same object serves every generation."""

    def __init__(self, fa: FusedAdapters, magnitudes: Magnitudes, content: str) -> None:
        if content not in fa.names:
            raise ValueError(f"K-LoRA content LoRA {content!r}: not one of {fa.names}")
        self.fa, self.m, self.content = fa, magnitudes, content
        content_total = magnitudes.total[content]
        self.gamma = {n: (content_total / t if t > 0 else 0.0) for n, t in magnitudes.total.items()}
        self.start()

    def choice(self, slot_index: int, t_over_T: float) -> str:
        """The LoRA used in slot ``slot_index`` at the step where ``t/T`` is ``t_over_T``."""
        scores = {}
        for adapter, s in self.m.top[slot_index].items():
            weight = ALPHA * t_over_T + BETA if adapter == self.content else self.gamma[adapter]
            scores[adapter] = s * weight
        return max(scores, key=lambda a: (scores[a], a == self.content))

    def set_step(self, t_over_T: float) -> None:
        for i, slot in enumerate(self.fa.slots):
            if slot.component.startswith("text_encoder") and t_over_T < 1.0:
                continue  # acts before the first step: the first step's choice stays
            chosen = self.choice(i, t_over_T)
            for adapter, base in slot.base.items():
                _set_scaling(slot.module, adapter, base if adapter == chosen else 0.0)

    def start(self) -> None:
        self.set_step(1.0)

    def shares(self, steps: int = 20) -> dict[str, float]:
        """Per LoRA the share of the (layer, step) choices it wins where LoRAs compete, over ``steps`` steps."""
        wins = dict.fromkeys(self.fa.names, 0)
        shared = [i for i, slot in enumerate(self.fa.slots) if len(slot.base) > 1]
        for s in range(steps):
            t = 1.0 - s / max(1, steps - 1)
            for i in shared:
                wins[self.choice(i, t)] += 1
        n = max(1, steps * len(shared))
        return {a: w / n for a, w in wins.items()}

    def __call__(self, pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        steps = int(pipe.num_timesteps)
        nxt = step_index + 1
        if nxt >= steps:
            self.start()
        else:
            self.set_step(1.0 - nxt / max(1, steps - 1))
        return callback_kwargs
