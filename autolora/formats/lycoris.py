"""The LyCORIS file of a LoHa or LoKr adapter (kohya key layout: what A1111, Forge and ComfyUI read)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.adapter import KeptAdapter
from autolora.atomic import write_file
from autolora.errors import UserError
from autolora.formats.kept import COMPONENTS, adapter_method
from autolora.formats.kohya import KOHYA_PREFIX, base_metadata, kohya_module
from autolora.methods import PeftMethod

if TYPE_CHECKING:
    import torch

    from autolora.methods import KohyaModule
LYCORIS_ARCHS = ("sd1", "sd2", "sdxl")
"""Architectures with a LyCORIS file. Flux's kohya names fuse q/k/v into one module, which a Kronecker or
Hadamard factorisation of three separate updates cannot be rewritten into; SD3 has no kohya file at all."""


def _peft_method(adapter: KeptAdapter) -> PeftMethod:
    method = adapter_method(adapter)
    assert isinstance(method, PeftMethod), method.name
    return method


def lycoris_plan(adapter: KeptAdapter) -> list[KohyaModule]:
    """Every module of the adapter in LyCORIS's key layout, checked; raises before anything is written."""
    method = _peft_method(adapter)
    arch = adapter.base["arch"]
    if arch not in LYCORIS_ARCHS:
        raise UserError(
            f"cannot write the LyCORIS file for a {arch} {method.name} adapter (kohya's {arch} names fuse modules "
            "this factorisation keeps apart): use the peft folder"
        )
    plan: list[KohyaModule] = []
    for comp in COMPONENTS[arch]:
        state_dict = adapter.state_dicts.get(comp)
        if not state_dict:
            continue
        modules = sorted({k.rsplit(".", 1)[0] for k in state_dict})
        name_of = {m: f"{KOHYA_PREFIX[arch][comp]}_{kohya_module(adapter, comp, m).replace('.', '_')}" for m in modules}
        plan += method.kohya_modules(comp, name_of, state_dict, adapter.configs[comp])
    return plan


def write_lycoris(adapter: KeptAdapter, path: Path, name: str, plan: list[KohyaModule]) -> None:
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for entry in plan:
        for key, tensor in entry.tensors.items():
            tensors[f"{entry.name}.{key}"] = tensor.detach().cpu().float().contiguous()
        if entry.alpha is not None:
            tensors[f"{entry.name}.alpha"] = torch.tensor(entry.alpha, dtype=torch.float32)
    method = _peft_method(adapter)
    main = adapter.configs.get("unet") or next(iter(adapter.configs.values()))
    args: dict[str, Any] = {"algo": method.lycoris_algo, "preset": "attn-only", **method.lycoris_args(main)}
    meta = base_metadata(adapter, name, {e.comp for e in plan})
    meta.update(
        {
            "ss_network_module": "lycoris.kohya",
            "ss_network_dim": str(int(main.get("r", 8))),
            "ss_network_alpha": str(float(main.get("alpha", 8))),
            "ss_network_args": json.dumps(args),
        }
    )
    write_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
