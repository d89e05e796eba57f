"""The diffusers LoRA file (``pytorch_lora_weights.safetensors``, ``pipe.load_lora_weights``), with the peft
LoraConfig of every component in its metadata so alpha and per-module ranks survive a reload."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.adapter import KeptAdapter
from autolora.atomic import write_file
from autolora.formats.kept import COMPONENTS, canonical_key, check_adapter

if TYPE_CHECKING:
    import torch
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
_PIPELINES = {
    "sd1": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}


# LoraConfig fields that only record where a config came from; an older peft rejects the ones it lacks.
_CONFIG_BOOKKEEPING = {
    "peft_version",
    "base_model_name_or_path",
    "revision",
    "auto_mapping",
    "task_type",
    "inference_mode",
}


# Always written, even at their defaults, so the file does not depend on another peft version's defaults.
_CONFIG_ESSENTIAL = {"r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora"}


def export_diffusers(adapter: KeptAdapter, path: Path) -> None:
    """Write the adapter in diffusers' LoRA format with diffusers' own ``save_lora_weights``.

    The LoraConfig of each component goes into the file's metadata: without it diffusers infers the config
    from tensor shapes on reload and loses ``lora_alpha``, rsLoRA and per-module alphas.

    Args:
        adapter: The adapter to export.
        path: Destination file (normally ``pytorch_lora_weights.safetensors``); replaced atomically.

    Raises:
        UserError: for an adapter that does not fit its base architecture.
    """
    import diffusers

    check_adapter(adapter)
    arch = adapter.base["arch"]
    pipeline_cls = getattr(diffusers, _PIPELINES[arch])
    kwargs: dict[str, Any] = {}
    for comp in COMPONENTS[arch]:
        if adapter.state_dicts.get(comp):
            kwargs[f"{comp}_lora_layers"] = _diffusers_layers(comp, adapter.state_dicts[comp])
            kwargs[f"{comp}_lora_adapter_metadata"] = _portable_config(adapter.configs[comp])

    def write(tmp: Path) -> None:
        # save_lora_weights writes into a folder: a private one beside the target, its file moved to ``tmp``.
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=tmp.parent) as folder:
            pipeline_cls.save_lora_weights(folder, weight_name=path.name, safe_serialization=True, **kwargs)
            (Path(folder) / path.name).rename(tmp)

    write_file(path, write)


def _diffusers_layers(comp: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {canonical_key(comp, k): v.detach().cpu().contiguous() for k, v in state_dict.items()}


def _portable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The LoraConfig fields diffusers passes back to ``LoraConfig(**...)`` on reload.

    Only the fields this peft knows and that differ from its defaults (plus the essentials), so a reader
    with an older peft, which rejects unknown fields, can still build the config.
    """
    from peft import LoraConfig

    defaults = LoraConfig().to_dict()
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key not in LoraConfig.__dataclass_fields__ or key in _CONFIG_BOOKKEEPING:
            continue
        default = defaults.get(key)
        if isinstance(default, set):
            default = sorted(default)
        if key in _CONFIG_ESSENTIAL or value != default:
            out[key] = sorted(value) if isinstance(value, set) else value
    return out
