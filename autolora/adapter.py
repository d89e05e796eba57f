"""An adapter (LoRA, LoHa, LoKr: any peft tuner of ``autolora.methods``) on the loaded base model: attach,
detach, save and load a kept copy.

The base model is loaded once per process; every trial attaches its adapter with
``peft.inject_adapter_in_model`` and detaches it afterwards, unwrapping the peft layers so that the
modules are again the original ``nn.Linear``/``nn.Conv2d`` objects with untouched weights.
(transformers 5 routes its own ``add_adapter`` through peft >= 0.22, so we call peft directly,
the same way for the UNet and the text encoders.)

A kept adapter is a folder::

    adapter.json                 {"components": {"unet": peft config dict (its peft_type names the method), ...},
                                  "base": {...}, "trial": {...}}
    unet.safetensors             peft state dict of the UNet (keys as get_peft_model_state_dict returns them)
    text_encoder.safetensors     (only when the text encoder was trained)
    text_encoder_2.safetensors   (SDXL, only when the text encoders were trained)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.atomic import readable, replace_folder
from autolora.sampling import grid, load_images, save_images

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig

ADAPTER_FILE = "adapter.json"


@dataclass
class KeptAdapter:
    """An adapter in memory: per-component peft configs and state dicts, plus what it came from."""

    configs: dict[str, dict[str, Any]]
    """Component name (``unet``, ``text_encoder``, ``text_encoder_2``) -> peft config (LoraConfig...) as a dict."""
    state_dicts: dict[str, dict[str, torch.Tensor]]
    """Component name -> peft state dict (``...to_q.lora_A.weight`` etc., no adapter name)."""
    base: dict[str, Any] = field(default_factory=dict)
    """Base model facts: ``source``, ``arch`` (sd1/sd2/sdxl), ``layers_per_block``."""
    info: dict[str, Any] = field(default_factory=dict)
    """Study, trial number, params, scores."""
    samples: list[Any] = field(default_factory=list)
    """The trial's final evaluation images (PIL), prompt-major; saved as ``samples.png`` + tensors."""
    sample_rows: int = 1

    def save(self, folder: Path) -> None:
        """Write atomically: a temp folder beside ``folder``, then one rename."""
        from safetensors.torch import save_file

        with replace_folder(folder) as tmp:
            for comp, sd in self.state_dicts.items():
                save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(tmp / f"{comp}.safetensors"))
                readable(tmp / f"{comp}.safetensors")
            if self.samples:
                _save_samples(tmp, self.samples, self.sample_rows)
            meta = {"components": self.configs, "base": self.base, "trial": self.info, "sample_rows": self.sample_rows}
            (tmp / ADAPTER_FILE).write_text(json.dumps(meta, indent=2, default=str))

    @classmethod
    def load(cls, folder: Path) -> KeptAdapter:
        from safetensors.torch import load_file

        meta = json.loads((folder / ADAPTER_FILE).read_text())
        sds = {comp: load_file(str(folder / f"{comp}.safetensors")) for comp in meta["components"]}
        samples = _load_samples(folder)
        return cls(
            configs=meta["components"],
            state_dicts=sds,
            base=meta.get("base", {}),
            info=meta.get("trial", {}),
            samples=samples,
            sample_rows=int(meta.get("sample_rows", 1)),
        )


def _save_samples(folder: Path, images: list[Any], rows: int) -> None:
    save_images(folder / "samples.safetensors", images)
    grid(images, rows).save(folder / "samples.png")


def _load_samples(folder: Path) -> list[Any]:
    path = folder / "samples.safetensors"
    return load_images(path) if path.exists() else []


def config_to_dict(config: PeftConfig) -> dict[str, Any]:
    """A JSON-safe dict of a peft config (sets become sorted lists; ``peft_type`` names the method)."""
    d = config.to_dict()
    for k, v in list(d.items()):
        if isinstance(v, set):
            d[k] = sorted(v)
    return json.loads(json.dumps(d, default=str))


def attach(model: torch.nn.Module, config: PeftConfig, name: str) -> None:
    """Add an adapter called ``name`` to ``model`` in place and make it the active one."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(config, model, adapter_name=name)


def detach(model: torch.nn.Module, name: str) -> None:
    """Remove adapter ``name``; where no adapter is left, put the original base layer back.

    peft's ``delete_adapter`` leaves an empty wrapper around each base layer; unwrapping uses only
    the public ``BaseTunerLayer.get_base_layer`` so the module tree is what it was before attach.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for qualified, module in wrapped:
        # Each tuner names its weight dicts (lora_A..., hada_w1_a..., lokr_w1...) in adapter_layer_names.
        holders = [getattr(module, a, {}) for a in module.adapter_layer_names]
        if any(name in h for h in holders) or name in module.active_adapters:
            module.delete_adapter(name)
        if not any(len(h) for h in holders):
            parent_name, _, child = qualified.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    configs = getattr(model, "peft_config", None)
    if isinstance(configs, dict):
        configs.pop(name, None)
        if not configs:
            del model.peft_config  # else the next inject_adapter_in_model warns about a second adapter


def adapter_state_dict(model: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The adapter's weights with peft's canonical keys (no adapter name inside)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}


def load_into(model: torch.nn.Module, config: PeftConfig, state_dict: dict[str, torch.Tensor], name: str) -> None:
    """Attach a kept adapter's config (read back by its method: ``autolora.methods``) and weights as ``name``."""
    from peft.utils import set_peft_model_state_dict

    attach(model, config, name)
    result = set_peft_model_state_dict(model, state_dict, adapter_name=name)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"adapter weights do not fit the model: unexpected keys {unexpected[:3]}")


def state_bytes(state_dicts: dict[str, dict[str, torch.Tensor]]) -> int:
    """Size of the adapter's weights as the kept safetensors files hold them (tensors plus headers)."""
    from safetensors.torch import save

    return sum(len(save({k: v.detach().cpu().contiguous() for k, v in sd.items()})) for sd in state_dicts.values())
