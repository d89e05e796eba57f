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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autolora.atomic import readable, staging_folder
from autolora.models.miniworld import SCHEDULER, TEXT_ENCODER, VAE, WEIGHTS, assemble_judge, assemble_pipeline
from autolora.models.tokenizer import T5_VOCAB_SIZE, write_clip_tokenizer_files, write_t5_tokenizer_files
from autolora.quiet import quiet_libraries

PREFIX = "builtin:"


@dataclass(frozen=True)
class Builtin:
    """One built-in model: how to build it into a folder, and its cache version."""

    name: str
    kind: str  # "diffusion" or "clip"
    version: int
    build: Callable[[Path], None]
    description: str
    judge: str | None = None
    """For a diffusion model: the built-in CLIP that ``objective.clip: auto`` picks for it."""
    stamp: Callable[[], str] | None = None
    """A fingerprint of shipped inputs (weights): a new one gives a new cache folder."""

    def folder_name(self) -> str:
        suffix = f"-{self.stamp()}" if self.stamp else ""
        return f"{self.name}-v{self.version}{suffix}"


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

    tok_dir = folder / "_tokenizer_src"
    write_clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**_tiny_unet_kwargs(sdxl))  # type: ignore[arg-type]
    torch.manual_seed(0)

    vae = AutoencoderKL(**VAE)  # miniworld's VAE shape, with seeded random weights

    # miniworld's text-encoder shape, narrower (the seeded weights are those of the first tiny builds)
    narrow = {"hidden_size": 32, "intermediate_size": 37, "projection_dim": 32, "hidden_act": "gelu"}
    text_cfg = CLIPTextConfig(**{**TEXT_ENCODER, **narrow})
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(text_cfg)
    scheduler = DDIMScheduler(**SCHEDULER)
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


def _tiny_text_encoders(n_clip: int, projection: bool) -> tuple[list[Any], Any]:
    """``n_clip`` tiny CLIP text encoders (seeds 0, 1, ...) and a tiny T5 encoder (64 wide), seeded."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    narrow = {"hidden_size": 32, "intermediate_size": 37, "projection_dim": 32, "hidden_act": "gelu"}
    cfg = CLIPTextConfig(**{**TEXT_ENCODER, **narrow})
    clips = []
    for seed in range(n_clip):
        torch.manual_seed(seed)
        clips.append(CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg))
    torch.manual_seed(n_clip)
    t5 = T5EncoderModel(T5Config(vocab_size=T5_VOCAB_SIZE, d_model=64, d_ff=64, d_kv=16, num_layers=2, num_heads=4))
    return clips, t5


def _build_tiny_dit(folder: Path, family: str) -> None:
    """A tiny SD3 (``sd3``) or Flux.1-dev (``flux``) pipeline: miniworld's VAE shape, two or three text encoders
    and a two-block transformer, seeded random weights, the real pipeline classes and schedulers."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTokenizer, T5Tokenizer

    tok_dir, t5_dir = folder / "_tokenizer_src", folder / "_t5_src"
    write_clip_tokenizer_files(tok_dir)
    write_t5_tokenizer_files(t5_dir)
    tokenizer, t5_tokenizer = CLIPTokenizer.from_pretrained(tok_dir), T5Tokenizer.from_pretrained(t5_dir)
    torch.manual_seed(0)
    vae_kwargs: dict[str, Any] = {**VAE, "use_quant_conv": False, "use_post_quant_conv": False}
    pipe: Any
    if family == "flux":
        vae = AutoencoderKL(**{**vae_kwargs, "shift_factor": 0.06, "scaling_factor": 1.2})
        (clip,), t5 = _tiny_text_encoders(1, projection=False)
        torch.manual_seed(0)
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=4 * VAE["latent_channels"],
            num_layers=2,
            num_single_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=64,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=(4, 4, 8),
        )
        scheduler = FlowMatchEulerDiscreteScheduler(
            base_image_seq_len=256,
            base_shift=0.5,
            max_image_seq_len=4096,
            max_shift=1.15,
            shift=3.0,
            use_dynamic_shifting=True,
        )
        pipe = FluxPipeline(
            scheduler=scheduler,
            vae=vae,
            text_encoder=clip,
            tokenizer=tokenizer,
            text_encoder_2=t5,
            tokenizer_2=t5_tokenizer,
            transformer=transformer,
        )
    else:
        vae = AutoencoderKL(**{**vae_kwargs, "shift_factor": 0.0, "scaling_factor": 1.5})
        (clip1, clip2), t5 = _tiny_text_encoders(2, projection=True)
        torch.manual_seed(0)
        sd3 = SD3Transformer2DModel(
            sample_size=16,
            patch_size=2,
            in_channels=VAE["latent_channels"],
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=64,
            pooled_projection_dim=64,
            out_channels=VAE["latent_channels"],
        )
        pipe = StableDiffusion3Pipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=vae,
            text_encoder=clip1,
            tokenizer=tokenizer,
            text_encoder_2=clip2,
            tokenizer_2=tokenizer,
            text_encoder_3=t5,
            tokenizer_3=t5_tokenizer,
            transformer=sd3,
        )
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(tok_dir)
    shutil.rmtree(t5_dir)


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
    readable(folder / "open_clip_model.safetensors")


def _miniworld_stamp() -> str:
    """The shipped build's fingerprint (its build.json names the seed, steps and timings of the weights)."""
    import hashlib

    path = WEIGHTS / "build.json"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10] if path.exists() else "missing"


def _assemble_miniworld(folder: Path) -> None:
    assemble_pipeline(folder)


def _assemble_miniworld_clip(folder: Path) -> None:
    assemble_judge(folder)


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "miniworld",
            "diffusion",
            1,
            _assemble_miniworld,
            "SD 1.x-architecture pipeline trained on miniworld shapes (32 px; autolora miniworld build)",
            judge="miniworld-clip",
            stamp=_miniworld_stamp,
        ),
        Builtin(
            "miniworld-clip",
            "clip",
            1,
            _assemble_miniworld_clip,
            "open_clip judge trained on miniworld pictures and captions, every style (32 px)",
            stamp=_miniworld_stamp,
        ),
        Builtin(
            "tiny-sd",
            "diffusion",
            1,
            lambda f: _build_tiny_pipeline(f, sdxl=False),
            "tiny SD 1.x-architecture pipeline with seeded random weights (32 px; for unit tests)",
            judge="tiny-clip",
        ),
        Builtin(
            "tiny-sdxl",
            "diffusion",
            1,
            lambda f: _build_tiny_pipeline(f, sdxl=True),
            "tiny SDXL-architecture pipeline with seeded random weights (32 px; for unit tests)",
            judge="tiny-clip",
        ),
        Builtin(
            "tiny-sd3",
            "diffusion",
            1,
            lambda f: _build_tiny_dit(f, "sd3"),
            "tiny SD 3-architecture pipeline (three text encoders, flow matching), seeded random weights (32 px)",
            judge="tiny-clip",
        ),
        Builtin(
            "tiny-flux",
            "diffusion",
            1,
            lambda f: _build_tiny_dit(f, "flux"),
            "tiny Flux.1-dev-architecture pipeline (CLIP + T5, guidance embedding), seeded random weights (32 px)",
            judge="tiny-clip",
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

DEFAULT_DIFFUSION = PREFIX + "miniworld"


def judge_for(model: str) -> str | None:
    """The built-in CLIP judge that goes with built-in diffusion model ``model`` (None: not a built-in)."""
    entry = BUILTINS.get(model.removeprefix(PREFIX)) if is_builtin(model) else None
    return PREFIX + entry.judge if entry and entry.judge else None


def is_builtin(name: str) -> bool:
    return name.startswith(PREFIX)


def builtin_path(name: str) -> Path:
    """Return the folder of built-in ``name`` (``builtin:tiny-sd``), building it on first use.

    Raises:
        KeyError: for an unknown built-in name (the caller turns it into a ``UserError``).
    """
    entry = BUILTINS[name.removeprefix(PREFIX)]
    return build_once(cache_root() / "models" / entry.folder_name(), entry.build)


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Return ``folder``, first filling it with ``build`` if no complete copy exists.

    Builds next to the target and renames, so a crash or a concurrent build never leaves a
    half-written folder that later runs would trust.
    """
    if (folder / ".complete").exists():
        return folder

    quiet_libraries()  # the first use builds during validation, before a run quiets the libraries' progress bars
    tmp = staging_folder(folder)
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
