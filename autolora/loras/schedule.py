"""Two coefficient sets over one generation: early (layout) steps and late (detail) steps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class FusedAdapters(Protocol):
    """What a schedule needs of ``autolora.loras.engine.FusedAdapters`` (which makes schedules)."""

    def set_coefficients(self, coeffs: Mapping[str, Mapping[str, float]]) -> None: ...

    def _check_coefficients(self, coeffs: Mapping[str, Mapping[str, float]]) -> dict[str, str]: ...


class TwoPhase:
    """``callback_on_step_end`` switching coefficient sets: ``early`` for layout, ``late`` for detail.

    Steps ``0 .. k-1`` use ``early`` and steps ``k ..`` use ``late``, with ``k = round(switch_at * steps)`` kept
    within ``1 .. steps`` (``switch_at`` 1 never switches). After the last step ``early`` is set again, so the
    same callback serves the next call; call ``start`` after an interrupted generation.
    """

    def __init__(
        self,
        fa: FusedAdapters,
        early: Mapping[str, Mapping[str, float]],
        late: Mapping[str, Mapping[str, float]],
        switch_at: float,
    ) -> None:
        if not 0.0 < switch_at <= 1.0:
            raise ValueError(f"switch_at {switch_at}: expected a fraction of the steps in (0, 1]")
        fa._check_coefficients(late)  # fail now, not in the middle of a generation
        self.fa, self.early, self.late, self.switch_at = fa, early, late, switch_at
        self.start()

    def start(self) -> None:
        """Set the early coefficients (done at construction and after each generation's last step)."""
        self.fa.set_coefficients(self.early)

    def switch_step(self, steps: int) -> int:
        """The first step that uses the late coefficients, out of ``steps``."""
        return min(max(round(self.switch_at * steps), 1), steps)

    def __call__(self, pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        steps = int(pipe.num_timesteps)
        if step_index + 1 >= steps:
            self.start()
        elif step_index + 1 == self.switch_step(steps):
            self.fa.set_coefficients(self.late)
        return callback_kwargs
