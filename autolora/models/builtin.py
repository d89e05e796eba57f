"""Built-in models, built from code into a cache folder and then loaded like a user's model.

A built-in name (``builtin:tiny-sd``) resolves to a folder; the first use builds it with seeded
weights. Everything downstream sees only the folder and loads it through ``from_pretrained``
(diffusion) or ``open_clip.create_model_and_transforms`` (judge), so the code path is the one a
real Stable Diffusion checkpoint or a real CLIP takes. A later model (trained miniworld weights)
is one more entry in ``BUILTINS``, with a higher version so caches rebuild.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "builtin:"


@dataclass(frozen=True)
class Builtin:
    """One built-in model: how to build it into a folder, and its cache version."""

    name: str
    kind: str  # "diffusion" or "clip"
    version: int
    build: Callable[[Path], None]
    description: str


def cache_root() -> Path:
    """Where built-in models and study caches live (``AUTOLORA_CACHE`` overrides)."""
    env = os.environ.get("AUTOLORA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "autolora"


def _tiny_unet_kwargs(sdxl: bool) -> dict[str, object]:
    if sdxl:
        # Shapes follow diffusers' own SDXL LoRA tests (tests/lora/test_lora_layers_sdxl.py).
        return dict(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80,
            cross_attention_dim=64,
        )
    return dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
    )


def _build_tiny_pipeline(folder: Path, sdxl: bool) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from autolora.models.tokenizer import write_clip_tokenizer_files

    tok_dir = folder / "_tokenizer_src"
    write_clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**_tiny_unet_kwargs(sdxl))  # type: ignore[arg-type]
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=32,
    )
    text_cfg = CLIPTextConfig(
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=49408,
        max_position_embeddings=77,
        projection_dim=32,
        hidden_act="gelu",
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(text_cfg)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    pipe: Any
    if sdxl:
        torch.manual_seed(0)
        text_encoder_2 = CLIPTextModelWithProjection(text_cfg)
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(tok_dir)


TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _build_tiny_clip(folder: Path) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny-clip.json").write_text(json.dumps(TINY_CLIP_CONFIG, indent=2))
    open_clip.add_model_config(folder / "tiny-clip.json")
    torch.manual_seed(0)
    logging.disable(logging.WARNING)  # open_clip warns that a model without weights is random: that is the point
    try:
        model = open_clip.create_model("tiny-clip")
    finally:
        logging.disable(logging.NOTSET)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "tiny-sd",
            "diffusion",
            1,
            lambda f: _build_tiny_pipeline(f, sdxl=False),
            "tiny SD 1.x-architecture pipeline with seeded random weights (32 px)",
        ),
        Builtin(
            "tiny-sdxl",
            "diffusion",
            1,
            lambda f: _build_tiny_pipeline(f, sdxl=True),
            "tiny SDXL-architecture pipeline with seeded random weights (32 px)",
        ),
        Builtin(
            "tiny-clip",
            "clip",
            1,
            _build_tiny_clip,
            "tiny open_clip model with seeded random weights (32 px, 32-d embeddings)",
        ),
    )
}

DEFAULT_DIFFUSION = PREFIX + "tiny-sd"
DEFAULT_CLIP = PREFIX + "tiny-clip"


def is_builtin(name: str) -> bool:
    return name.startswith(PREFIX)


def builtin_path(name: str) -> Path:
    """Return the folder of built-in ``name`` (``builtin:tiny-sd``), building it on first use.

    Raises:
        KeyError: for an unknown built-in name (the caller turns it into a ``UserError``).
    """
    entry = BUILTINS[name.removeprefix(PREFIX)]
    return build_once(cache_root() / "models" / f"{entry.name}-v{entry.version}", entry.build)


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Return ``folder``, first filling it with ``build`` if no complete copy exists.

    Builds next to the target and renames, so a crash or a concurrent build never leaves a
    half-written folder that later runs would trust.
    """
    if (folder / ".complete").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
