"""What a family's training loss is given: one trial's loss settings, and the loss function's shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LossFn = Callable[[Any, dict[str, Any], Any], Any]
"""``loss(latents, cond, generator) -> per-sample loss``; latents are scaled, on the CPU, fp32."""


@dataclass(frozen=True)
class LossSettings:
    """What shapes a training loss, beyond the model: one trial's values."""

    noise_offset: float = 0.0
    """UNet families: a per-channel constant of this spread added to the noise."""
    min_snr_gamma: float = 0.0
    """UNet families: min-SNR weighting (0: off)."""
    weighting_scheme: str = "none"
    """Flow families: timestep density / loss weighting (none, logit_normal, mode, sigma_sqrt, cosmap)."""
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    flow_shift: float = 0.0
    """Flow families: timestep shift s (sigma -> s sigma / (1 + (s - 1) sigma)); 0: the scheduler's own."""
    guidance: float = 1.0
    """Flux with a guidance embedding (dev): the guidance value the transformer sees in training."""
