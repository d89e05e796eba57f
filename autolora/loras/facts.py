"""What a loaded pipeline is, in the terms ``KeptAdapter.base`` and the exporters use."""

from __future__ import annotations

from typing import Any

from autolora.errors import UserError
from autolora.models.family import arch_of
from autolora.models.loading import PIPELINES


def base_facts(pipe: Any) -> dict[str, Any]:
    """The ``KeptAdapter.base`` facts of a loaded SD/SDXL/SD3/Flux pipeline (what ``autolora.formats`` needs).

    Raises:
        UserError: for a pipeline of another kind.
    """

    cls = type(pipe).__name__
    if cls not in PIPELINES:
        raise UserError(f"LoRA fusion supports {', '.join(PIPELINES)}, not {cls}")
    if cls in ("StableDiffusion3Pipeline", "FluxPipeline"):
        config = pipe.transformer.config
        return {
            "source": str(pipe.config.get("_name_or_path", "") or ""),
            "arch": arch_of(pipe),
            "resolution": int(getattr(pipe, "default_sample_size", 128)) * int(pipe.vae_scale_factor),
            "prediction_type": "flow",
            "pipeline_class": cls,
            "denoiser": "transformer",
            "denoiser_config": dict(config),
        }
    unet_config = pipe.unet.config
    arch = arch_of(pipe)
    return {
        "source": str(pipe.config.get("_name_or_path", "") or ""),
        "arch": arch,
        "layers_per_block": unet_config.layers_per_block,
        "resolution": int(unet_config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8)),
        "prediction_type": pipe.scheduler.config.get("prediction_type", "epsilon"),
        "pipeline_class": cls,
    }
