"""What a loaded pipeline is, in the terms ``KeptAdapter.base`` and the exporters use."""

from __future__ import annotations

from typing import Any

from autolora.errors import UserError


def base_facts(pipe: Any) -> dict[str, Any]:
    """The ``KeptAdapter.base`` facts of a loaded SD/SDXL pipeline (what ``autolora.export`` needs).

    Raises:
        UserError: for a pipeline that is neither ``StableDiffusionPipeline`` nor ``StableDiffusionXLPipeline``.
    """
    cls = type(pipe).__name__
    if cls not in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        raise UserError(f"LoRA fusion supports StableDiffusionPipeline and StableDiffusionXLPipeline, not {cls}")
    unet_config = pipe.unet.config
    sd_arch = "sd2" if unet_config.cross_attention_dim == 1024 else "sd1"  # the rule autolora.models.loading uses
    arch = "sdxl" if cls == "StableDiffusionXLPipeline" else sd_arch
    return {
        "source": str(pipe.config.get("_name_or_path", "") or ""),
        "arch": arch,
        "layers_per_block": unet_config.layers_per_block,
        "resolution": int(unet_config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8)),
        "prediction_type": pipe.scheduler.config.get("prediction_type", "epsilon"),
        "pipeline_class": cls,
    }
