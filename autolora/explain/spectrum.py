"""Each layer's singular-value spectrum: how many directions of its delta the LoRA actually uses.

A layer's delta is ``scale * B @ A``; its squared singular values split ``||delta||^2`` between directions. The
rank a LoRA was trained at is an upper bound: a rank-16 LoRA whose layers hold 90 % of their delta in 4 directions
would lose little at rank 4 (``export --rank``, ``explain --prune --rank auto``).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from autolora.loras.rank import directions, singular_values

if TYPE_CHECKING:
    from autolora.loras.engine import FusedAdapters


@dataclass(frozen=True)
class LayerSpectrum:
    """One LoRA layer's spectrum."""

    component: str
    name: str
    group: str
    """Its group key at the run's granularity."""
    rank: int
    """The rank it was trained at (rows of ``A``)."""
    norm: float
    """``||delta||`` (Frobenius)."""
    k90: int
    """Fewest directions holding 90 % of ``||delta||^2``."""
    k99: int
    """Fewest directions holding 99 %."""
    values: list[float]
    """The singular values, largest first."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spectra(fa: FusedAdapters, lora: str, granularity: str) -> list[LayerSpectrum]:
    """The spectrum of every layer LoRA ``lora`` touches in ``fa`` (at the scale it was loaded with)."""
    import torch

    out = []
    with torch.no_grad():
        for slot in fa.slots:
            if lora not in slot.base:
                continue
            down = slot.module.lora_A[lora].weight.detach().float().cpu()
            up = slot.module.lora_B[lora].weight.detach().float().cpu() * slot.base[lora]
            values = singular_values(down, up)
            out.append(
                LayerSpectrum(
                    component=slot.component,
                    name=slot.name,
                    group=slot.groups[granularity],
                    rank=int(down.shape[0]),
                    norm=float(values.square().sum().sqrt()),
                    k90=directions(values, 0.9),
                    k99=directions(values, 0.99),
                    values=[round(float(v), 6) for v in values],
                )
            )
    return out


def rank_used(layers: list[LayerSpectrum]) -> dict[str, Any]:
    """The LoRA's rank and the directions its layers use: median and largest ``k90``/``k99`` over the layers."""
    if not layers:
        return {}
    return {
        "rank": max(s.rank for s in layers),
        "k90_median": statistics.median(s.k90 for s in layers),
        "k90_max": max(s.k90 for s in layers),
        "k99_median": statistics.median(s.k99 for s in layers),
        "k99_max": max(s.k99 for s in layers),
        "layers": len(layers),
    }


def delta_shares(layers: list[LayerSpectrum]) -> dict[str, float]:
    """Group key -> its share of the LoRA's whole ``sum ||delta||^2`` (where the weights changed most)."""
    total = sum(s.norm**2 for s in layers) or 1.0
    out: dict[str, float] = {}
    for s in layers:
        out[s.group] = out.get(s.group, 0.0) + s.norm**2 / total
    return out
