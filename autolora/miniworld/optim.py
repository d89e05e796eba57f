"""The optimiser every miniworld model trains with: AdamW under a one-cycle schedule, one loss per step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from autolora.models.miniworld import Progress

if TYPE_CHECKING:
    import torch

PEAK_LR = 1e-3


class OneCycle:
    """``step(loss)``: zero the gradients, backpropagate, clip (optional), step optimiser and schedule, record.

    ``losses`` is the curve so far; ``progress`` (if given) hears of every step.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        steps: int,
        weight_decay: float,
        pct_start: float = 0.1,
        clip: float | None = None,
        progress: Progress | None = None,
    ) -> None:
        import torch

        self.params = list(params)
        self.steps, self.clip, self.progress = steps, clip, progress
        self.opt = torch.optim.AdamW(self.params, lr=PEAK_LR, weight_decay=weight_decay)
        total = max(steps, 1)
        # torch's OneCycleLR divides 0 by 0 on the first step when its warm-up ends exactly there
        # (pct_start x steps = 1, e.g. a 10-step smoke build at 0.1): warm up half a step longer then.
        pct = pct_start * 1.5 if abs(pct_start * total - 1.0) < 1e-9 else pct_start
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=PEAK_LR, total_steps=total, pct_start=pct)
        self.losses: list[float] = []

    def step(self, loss: Any) -> None:
        import torch

        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        self.sched.step()
        self.losses.append(loss.item())
        if self.progress:
            self.progress(len(self.losses), self.steps, self.losses[-1])
