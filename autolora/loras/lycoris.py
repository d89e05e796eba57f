"""A LyCORIS LoHa or LoKr file read as an exact LoRA, so the LoRA machinery (``explain``'s map) can scale it per group.

diffusers' loader maps LoRA factors only, and a LoHa or LoKr update is no low-rank product of a given rank. Each
module's update is rebuilt as A1111, ComfyUI and LyCORIS apply it (LoHa: ``(w1a @ w1b) * (w2a @ w2b) * alpha / r``;
LoKr: ``kron(w1, w2) * alpha / dim``, a factor given as ``a @ b`` of rank ``dim``, scale 1 when both factors are
full), matched to the base model's module whose kohya name it carries (``autolora.formats.kohya``: SD 1.x/2.x keep
diffusers' names, SDXL's are SGM's), and factored by SVD at its numerical rank, so ``B @ A`` is the update up to
float rounding. The spectrum ``explain`` prints is then the LyCORIS update's own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.adapter import KeptAdapter
from autolora.errors import UserError
from autolora.formats.kept import COMPONENTS
from autolora.formats.kohya import KOHYA_PREFIX, kohya_module
from autolora.loras.factors import kept
from autolora.loras.facts import base_facts

if TYPE_CHECKING:
    import torch

_FACTOR = re.compile(r"^(.*)\.(hada_w[12]_[ab]|hada_t[12]|lokr_w[12](?:_[ab])?|lokr_t2|alpha|dora_scale)$")
RELATIVE_RANK = 1e-6
"""Singular values under this share of a module's largest are rounding, not directions of its update."""


def read_lycoris(path: Path, pipe: Any) -> KeptAdapter:
    """The LyCORIS file at ``path`` as a plain LoRA adapter of ``pipe``'s modules (exact; see the module doc).

    Raises:
        UserError: for Tucker-decomposed or DoRA modules, a module the base model lacks, or an architecture without
            kohya names (SD3, Flux).
    """
    from safetensors.torch import load_file

    facts = base_facts(pipe)
    arch = facts["arch"]
    if arch not in ("sd1", "sd2", "sdxl"):
        raise UserError(
            f"LoRA file {path}: a LyCORIS file for a {arch} model; LyCORIS files are read for SD 1.x/2.x/SDXL"
        )
    tensors = load_file(str(path))
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if m := _FACTOR.match(key):
            modules.setdefault(m[1], {})[m[2]] = tensor
    targets = _targets(pipe, facts)
    factors: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    for name, parts in sorted(modules.items()):
        if not any(k.startswith(("hada_", "lokr_")) for k in parts):
            continue  # a plain LoRA module beside them would be check_lora_file's to refuse; here: nothing to read
        if name not in targets:
            raise UserError(
                f"LoRA file {path}: module {name} matches no module of the base model (made for another model?)"
            )
        odd = sorted(k for k in parts if k in ("hada_t1", "hada_t2", "lokr_t2", "dora_scale"))
        if odd:
            raise UserError(f"LoRA file {path}: module {name} has {', '.join(odd)} (Tucker or DoRA), which is not read")
        comp, module, shape = targets[name]
        factors.setdefault(comp, {})[module] = _factored(update(parts).reshape(shape))
    if not factors:
        raise UserError(f"LoRA file {path}: no LoHa or LoKr module in it")
    return kept(factors, facts, {"lycoris": str(path)})


def update(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """One module's update as LyCORIS applies it, flattened to ``(out, in * kh * kw)`` for LoHa; LoKr's keeps the
    shape its factors give."""
    import torch

    alpha = float(parts["alpha"]) if "alpha" in parts else None
    if "hada_w1_a" in parts:
        w1b = parts["hada_w1_b"].float()
        diff = (parts["hada_w1_a"].float() @ w1b) * (parts["hada_w2_a"].float() @ parts["hada_w2_b"].float())
        return diff * (alpha / w1b.shape[0] if alpha is not None else 1.0)
    dim, found = None, []
    for w in ("w1", "w2"):
        if f"lokr_{w}" in parts:
            found.append(parts[f"lokr_{w}"].float())
        else:
            dim = parts[f"lokr_{w}_b"].shape[0]
            found.append(parts[f"lokr_{w}_a"].float() @ parts[f"lokr_{w}_b"].float())
    w1, w2 = found
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2) * (alpha / dim if alpha is not None and dim is not None else 1.0)


def _factored(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` with ``B @ A == delta`` (a conv's ``A`` keeps its kernel, its ``B`` is 1x1), by SVD."""
    import torch

    out = delta.shape[0]
    u, s, vh = torch.linalg.svd(delta.reshape(out, -1).double(), full_matrices=False)
    k = max(1, int((s > s[0] * RELATIVE_RANK).sum())) if s.numel() and float(s[0]) > 0 else 1
    root = s[:k].sqrt()
    down = (root[:, None] * vh[:k]).reshape(k, *delta.shape[1:]).float()
    up = (u[:, :k] * root).float()
    if delta.dim() == 4:
        up = up[:, :, None, None]
    return down.contiguous(), up.contiguous()


def _targets(pipe: Any, facts: dict[str, Any]) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """kohya module name -> (component, module name, weight shape) for every Linear/Conv2d of the pipeline; a
    module another adapter wraps already (peft's tuner layer) counts as its base layer, under its own name."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    probe = KeptAdapter(configs={}, state_dicts={}, base=facts)
    out = {}
    for comp in COMPONENTS[facts["arch"]]:
        model = getattr(pipe, comp, None)
        prefix = KOHYA_PREFIX[facts["arch"]].get(comp)
        if model is None or prefix is None:
            continue
        wrapped: set[str] = set()
        for name, module in model.named_modules():
            parts = name.split(".")
            if any(".".join(parts[:i]) in wrapped for i in range(1, len(parts))):
                continue  # inside a wrapper: its base layer and the other adapter's factors
            if isinstance(module, BaseTunerLayer):
                wrapped.add(name)
                module = module.get_base_layer()
            if not isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                continue
            try:
                kohya = f"{prefix}_{kohya_module(probe, comp, name).replace('.', '_')}"
            except UserError:  # an SDXL module kohya has no SGM name for: no file can address it
                continue
            out[kohya] = (comp, name, tuple(module.weight.shape))
    return out
