"""The miniworld models' architectures: a Stable-Diffusion-shaped pipeline and an open_clip judge, both tiny.

One place for the shapes, so that ``autolora miniworld build`` (which trains them) and the ``builtin:miniworld``
loader (which assembles the shipped weights into a diffusers folder) cannot disagree. The shipped build is
``WEIGHTS`` (fp16 safetensors and its ``build.json``); this module assembles it, ``autolora.miniworld`` trains it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autolora.errors import UserError
from autolora.models.tokenizer import write_clip_tokenizer_files

WEIGHTS = Path(__file__).parent / "weights"
"""The shipped build (``autolora miniworld build --out`` writes such a folder)."""

Progress = Callable[[int, int, float], None]
"""Training progress callback: (step, total steps, loss)."""

SIZE = 32
"""Image size in pixels; the VAE halves it, so the UNet works on 16 x 16 x 4 latents."""

VAE: dict[str, Any] = dict(
    block_out_channels=(32, 64),
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    latent_channels=4,
    layers_per_block=1,
    sample_size=SIZE,
)

UNET: dict[str, Any] = dict(
    sample_size=SIZE // 2,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64,
    attention_head_dim=8,
)

TEXT_ENCODER: dict[str, Any] = dict(
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    hidden_size=64,
    intermediate_size=128,
    layer_norm_eps=1e-05,
    num_attention_heads=4,
    num_hidden_layers=2,
    vocab_size=49408,
    max_position_embeddings=77,
    projection_dim=64,
    hidden_act="quick_gelu",
)

# Stable Diffusion 1.x's noise schedule, so LoRA training and sampling behave as on a real checkpoint.
SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)

JUDGE_NAME = "miniworld-clip"
JUDGE: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": SIZE, "layers": 3, "width": 96, "head_width": 32, "patch_size": 4},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def make_vae(scaling_factor: float = 1.0) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE, scaling_factor=scaling_factor)


def make_unet(heads: int = 8) -> Any:
    """The UNet with ``heads`` attention heads per transformer block (``UNET`` has 8; a build records its own)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**{**UNET, "attention_head_dim": heads})


def make_text_encoder() -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER))


def make_judge(config_dir: Any) -> Any:
    """A randomly initialised judge; registers its config (written into ``config_dir``) with open_clip."""
    import json
    import logging
    from pathlib import Path

    import open_clip

    path = Path(config_dir) / f"{JUDGE_NAME}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(JUDGE, indent=2))
    open_clip.add_model_config(path)
    logging.disable(logging.WARNING)  # "no pretrained weights loaded": we are about to train them
    try:
        return open_clip.create_model(JUDGE_NAME)
    finally:
        logging.disable(logging.NOTSET)


# -- loading the shipped build -------------------------------------------------------------------------


def manifest(weights: Path = WEIGHTS) -> dict[str, Any]:
    path = weights / "build.json"
    if not path.is_file():
        raise UserError(f"miniworld weights {weights}: no build.json (run autolora miniworld build --out {weights})")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def unet_heads(info: dict[str, Any]) -> int:
    """The UNet's attention heads that a build's manifest records (builds before the field had 8)."""
    return int(info.get("config", {}).get("unet_heads", 8))


def _load(module: Any, path: Path) -> Any:
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path)))
    return module


def assemble_pipeline(folder: Path, weights: Path = WEIGHTS) -> None:
    """Write a diffusers Stable Diffusion folder from the shipped weights (loaded later by ``from_pretrained``)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    info = manifest(weights)
    write_clip_tokenizer_files(folder / "_tokenizer_src")
    pipe: Any = StableDiffusionPipeline(
        vae=_load(make_vae(info["scaling_factor"]), weights / "vae.safetensors"),
        text_encoder=_load(make_text_encoder(), weights / "text_encoder.safetensors"),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "_tokenizer_src"),
        unet=_load(make_unet(unet_heads(info)), weights / "unet.safetensors"),
        scheduler=DDIMScheduler(**SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(folder / "_tokenizer_src")


def assemble_judge(folder: Path, weights: Path = WEIGHTS) -> None:
    """Write the judge's open_clip config and checkpoint (``create_model_and_transforms(pretrained=FILE)``)."""

    manifest(weights)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{JUDGE_NAME}.json").write_text(json.dumps(JUDGE, indent=2))
    shutil.copyfile(weights / "judge.safetensors", folder / "open_clip_model.safetensors")
