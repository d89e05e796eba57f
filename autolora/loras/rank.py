"""Rank reduction of a LoRA adapter by truncated SVD, with the approximation error it costs."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from autolora.adapter import KeptAdapter
from autolora.errors import UserError
from autolora.loras.factors import kept

if TYPE_CHECKING:
    import torch


def reduce_rank(adapter: KeptAdapter, rank: int) -> tuple[KeptAdapter, float]:
    """Compress every module's ``delta = scale * B @ A`` to at most ``rank`` by truncated SVD.

    The SVD works on the small ``r x r`` core of QR factors of ``B`` and ``A^T`` (``delta`` itself is never
    formed), so it is cheap even for SDXL and exact up to float rounding.

    Args:
        adapter: A plain LoRA adapter (e.g. from ``fused_adapter``); DoRA is refused.
        rank: The largest rank to keep (>= 1).

    Returns:
        The reduced adapter and the largest relative Frobenius error ``||delta - delta_k|| / ||delta||`` over
        its modules (the worst module, not an average: one ruined layer shows).

    Raises:
        UserError: for a DoRA adapter or a rank below 1.
    """
    if rank < 1:
        raise UserError(f"rank {rank}: expected at least 1")
    if any(cfg.get("use_dora") for cfg in adapter.configs.values()):
        raise UserError("cannot reduce the rank of a DoRA adapter (its magnitude vector is not low-rank)")
    factors: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    worst = 0.0
    for comp, modules in _adapter_factors(adapter):
        for name, down, up in modules:
            new_down, new_up, error = _truncate(down, up, rank)
            factors.setdefault(comp, {})[name] = (new_down, new_up)
            worst = max(worst, error)
    info = {**adapter.info, "reduced_rank": rank, "rank_error": worst}
    return kept(factors, adapter.base, info), worst


def reduce_rank_to_energy(adapter: KeptAdapter, energy: float) -> tuple[KeptAdapter, float, dict[str, int]]:
    """Compress every module to the fewest directions that hold ``energy`` of its delta (squared singular values).

    Args:
        adapter: A plain LoRA adapter; DoRA is refused.
        energy: Share of each module's ``||delta||^2`` to keep, in (0, 1] (1 keeps every non-zero direction).

    Returns:
        The reduced adapter, the worst relative Frobenius error (as ``reduce_rank``) and each module's new rank
        (``component.module`` -> rank).
    """

    if not 0 < energy <= 1:
        raise UserError(f"energy {energy}: expected a share in (0, 1]")
    if any(cfg.get("use_dora") for cfg in adapter.configs.values()):
        raise UserError("cannot reduce the rank of a DoRA adapter (its magnitude vector is not low-rank)")
    factors: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    ranks: dict[str, int] = {}
    worst = 0.0
    for comp, modules in _adapter_factors(adapter):
        for name, down, up in modules:
            k = directions(singular_values(down, up), energy)
            new_down, new_up, error = _truncate(down, up, k)
            factors.setdefault(comp, {})[name] = (new_down, new_up)
            ranks[f"{comp}.{name}"] = k
            worst = max(worst, error)
    info = {**adapter.info, "reduced_energy": energy, "rank_error": worst}
    return kept(factors, adapter.base, info), worst, ranks


def singular_values(down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The singular values of ``up @ down`` (convs flattened), largest first, in float64, from the ``r x r`` core
    of QR factors (``delta`` itself is never formed)."""
    import torch

    flat_down = down.reshape(down.shape[0], -1).double()
    flat_up = up.reshape(up.shape[0], -1).double()
    r_up = torch.linalg.qr(flat_up)[1]
    r_down = torch.linalg.qr(flat_down.T)[1]
    return torch.linalg.svdvals(r_up @ r_down.T)


def directions(values: torch.Tensor, energy: float) -> int:
    """The fewest leading singular values whose squares hold ``energy`` of their total (at least 1)."""
    import torch

    squares = values.double().square()
    total = float(squares.sum())
    if total <= 0:
        return 1
    reached = torch.cumsum(squares, 0) >= energy * total * (1 - 1e-12)
    return max(1, int(reached.nonzero()[0, 0]) + 1) if bool(reached.any()) else int(values.shape[0])


def _adapter_factors(
    adapter: KeptAdapter,
) -> Iterator[tuple[str, Iterator[tuple[str, torch.Tensor, torch.Tensor]]]]:
    """Per component, every module's ``(name, A, scale * B)`` in float32."""
    for comp, state in adapter.state_dicts.items():
        config = adapter.configs[comp]
        yield comp, _module_factors(state, config)


def _module_factors(
    state: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    for key in sorted(k for k in state if k.endswith(".lora_A.weight")):
        name = key.removesuffix(".lora_A.weight")
        down = state[key].float()
        scale = _module_scale(config, name, int(down.shape[0]))
        yield name, down, state[f"{name}.lora_B.weight"].float() * scale


def _module_scale(config: Mapping[str, Any], module: str, rank: int) -> float:
    """peft's scale of ``module``: ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA), patterns as peft reads them."""
    from peft.utils.other import get_pattern_key

    alphas = config.get("alpha_pattern") or {}
    alpha = float(alphas.get(get_pattern_key(list(alphas), module), config.get("lora_alpha", 8)))
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _truncate(down: torch.Tensor, up: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-``rank`` factors of ``up @ down`` (convs flattened) and the relative Frobenius error."""
    import torch

    flat_down = down.reshape(down.shape[0], -1).double()  # (r, in * kh * kw)
    flat_up = up.reshape(up.shape[0], -1).double()  # (out, r), also for a 1x1 conv lora_B
    q_up, r_up = torch.linalg.qr(flat_up)
    q_down, r_down = torch.linalg.qr(flat_down.T)
    u, s, vh = torch.linalg.svd(r_up @ r_down.T)
    k = min(rank, int(s.shape[0]))
    total = float(s.square().sum())
    error = math.sqrt(float(s[k:].square().sum()) / total) if total > 0 else 0.0
    root = s[:k].sqrt()
    new_up = (q_up @ u[:, :k]) * root
    new_down = (root[:, None] * vh[:k]) @ q_down.T
    shape_down = (k, *down.shape[1:])
    shape_up = (up.shape[0], k, *up.shape[2:])
    return new_down.reshape(shape_down).to(down.dtype), new_up.reshape(shape_up).to(up.dtype), error
