"""Loading Stable Diffusion 1.x/2.x, SDXL, SD 3.x and Flux.1 pipelines: local folder, hub id or built-in.

Validation (``resolve_model``) reads only small JSON files, so bad input is refused before any
weights load. Loading goes through diffusers ``from_pretrained`` with ``use_safetensors=True``
unless the user opts in to pickle.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.errors import UserError, closest
from autolora.models.builtin import BUILTINS, PREFIX, builtin_path, is_builtin
from autolora.textfiles import read_json

if TYPE_CHECKING:
    import torch

    from autolora.config import ModelConfig

PIPELINES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}
DENOISERS = {"sd1": "unet", "sd2": "unet", "sdxl": "unet", "sd3": "transformer", "flux": "transformer"}
"""The pipeline component a LoRA trains, per architecture."""
DENOISER_CLASSES = {
    "sd1": "UNet2DConditionModel",
    "sd2": "UNet2DConditionModel",
    "sdxl": "UNet2DConditionModel",
    "sd3": "SD3Transformer2DModel",
    "flux": "FluxTransformer2DModel",
}
DIT_ARCHS = ("sd3", "flux")
_PICKLE = (".bin", ".ckpt", ".pt", ".pth")


@dataclass(frozen=True)
class ModelRef:
    """A validated base model: where its files are and what it is, before any weights load."""

    source: str
    """What the user gave (folder, hub id, builtin:NAME)."""
    folder: Path
    pipeline_class: str
    arch: str
    """sd1, sd2, sdxl, sd3 or flux."""
    denoiser_config: dict[str, Any]
    """``unet/config.json`` or, for SD3 and Flux, ``transformer/config.json``."""

    @property
    def denoiser(self) -> str:
        """``unet`` or ``transformer``: the component a LoRA trains."""
        return DENOISERS[self.arch]

    @property
    def denoiser_class(self) -> str:
        return DENOISER_CLASSES[self.arch]


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        raise UserError(f"base model '{repo_id}': not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"]))
    except Exception as e:
        raise UserError(
            f"base model '{repo_id}': not in the local Hugging Face cache and the hub could not be reached "
            f"({type(e).__name__}); download it on a connected machine or pass a local folder"
        ) from None


def _check_weights(folder: Path, components: list[str], allow_pickle: bool) -> None:
    for comp in components:
        files = [p for p in (folder / comp).glob("*") if p.is_file()]
        weights = [p for p in files if p.suffix in _PICKLE or p.suffix == ".safetensors"]
        if not weights:
            continue
        if not any(p.suffix == ".safetensors" for p in weights) and not allow_pickle:
            raise UserError(
                f"base model {folder}: {comp}/ has only pickle weights ({weights[0].name}); pickle can run code, "
                f"so autolora loads safetensors only (set model.allow_pickle: true if you trust the file)"
            )


def resolve_model(source: str, allow_pickle: bool = False) -> ModelRef:
    """Validate a base model without loading weights; build a built-in one on first use."""
    if is_builtin(source):
        name = source.removeprefix(PREFIX)
        if name not in BUILTINS or BUILTINS[name].kind != "diffusion":
            names = [PREFIX + n for n, b in BUILTINS.items() if b.kind == "diffusion"]
            raise UserError(
                f"base model '{source}': no such built-in model{closest(source, names)}; built-ins: {', '.join(names)}"
            )
        folder = builtin_path(source)
    else:
        path = Path(source).expanduser()
        if path.exists():
            folder = path
        elif source.count("/") == 1 and not source.startswith((".", "/", "~")):
            folder = _hub_snapshot(source)
        else:
            raise UserError(f"base model {source}: no such folder (and not a hub id of the form org/name)")
    if folder.is_file():
        raise UserError(
            f"base model {source}: a single checkpoint file; autolora needs a diffusers folder "
            f"(convert it with diffusers' scripts/convert_original_stable_diffusion_to_diffusers.py)"
        )
    index = folder / "model_index.json"
    if not index.is_file():
        raise UserError(f"base model {source}: not a diffusers model folder (no model_index.json)")
    meta = read_json(index, f"base model {source}:")
    if not isinstance(meta, dict):
        raise UserError(f"base model {source}: model_index.json must be a JSON object")
    cls = meta.get("_class_name", "")
    if cls not in PIPELINES:
        raise UserError(f"base model {source}: a {cls or 'unknown pipeline'}; autolora supports {', '.join(PIPELINES)}")
    arch = PIPELINES[cls]
    denoiser = "unet" if arch in ("sd", "sdxl") else "transformer"
    config = read_json(folder / denoiser / "config.json", f"base model {source}:")
    if not isinstance(config, dict):
        raise UserError(f"base model {source}: {denoiser}/config.json must be a JSON object")
    components = [k for k, v in meta.items() if not k.startswith("_") and isinstance(v, list) and v[0]]
    _check_weights(folder, components, allow_pickle)
    if arch == "sd":
        arch = "sd2" if config.get("cross_attention_dim") == 1024 else "sd1"
    return ModelRef(source=source, folder=folder, pipeline_class=cls, arch=arch, denoiser_config=config)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available else cpu; refuse CUDA that is not there."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {device}: CUDA was requested but torch sees no CUDA device")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def resolve_dtype(mixed_precision: str, device: str) -> torch.dtype:
    """The dtype of the frozen base weights: fp32 on CPU, half precision on CUDA by default."""
    import torch

    if not device.startswith("cuda"):
        if mixed_precision in ("fp16", "bf16"):
            raise UserError(f"model.mixed_precision {mixed_precision}: needs a CUDA device (device is {device})")
        return torch.float32
    if mixed_precision == "no":
        return torch.float32
    if mixed_precision == "fp16":
        return torch.float16
    if mixed_precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def load_pipeline(ref: ModelRef, device: str, dtype: torch.dtype, allow_pickle: bool = False) -> Any:
    """Load the pipeline once for the whole process, frozen, on ``device``."""
    import diffusers

    cls = getattr(diffusers, ref.pipeline_class)
    kwargs: dict[str, Any] = {"torch_dtype": dtype, "use_safetensors": None if allow_pickle else True}
    if ref.arch in ("sd1", "sd2"):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    with warnings.catch_warnings():
        # diffusers 0.42 renames torch_dtype to dtype; older releases know only torch_dtype
        warnings.simplefilter("ignore", FutureWarning)
        pipe = cls.from_pretrained(str(ref.folder), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    for comp in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, comp, None)
        if module is not None:
            module.requires_grad_(False)
            module.eval()
    return pipe


def vae_factor(model: ModelRef) -> int:
    """Pixels per latent pixel (2 ** (VAE levels - 1)), from JSON only."""
    vae_cfg = model.folder / "vae" / "config.json"
    if not vae_cfg.is_file():
        return 8
    vae = read_json(vae_cfg, f"base model {model.source}:")
    blocks = vae.get("block_out_channels", [0] * 4) if isinstance(vae, dict) else None
    if not isinstance(blocks, list) or not blocks:
        raise UserError(f"base model {model.source}: vae/config.json has no block_out_channels list")
    return int(2 ** (len(blocks) - 1))


def size_factor(model: ModelRef) -> int:
    """The multiple every training side must be, in pixels: the VAE's factor times the UNet's downsampling
    (2 ** (levels - 1)) or the transformer's patch (SD3's ``patch_size``; Flux packs 2x2 latent patches)."""
    cfg = model.denoiser_config
    if model.arch == "flux":
        inner = 2 * int(cfg.get("patch_size", 1))
    elif model.arch == "sd3":
        inner = int(cfg.get("patch_size", 2))
    else:
        inner = 2 ** (len(cfg.get("block_out_channels", [0] * 4)) - 1)
    return vae_factor(model) * inner


def native_resolution(model: ModelRef) -> int:
    """The model's own sample size in pixels, from JSON only (Flux's transformer config has none: its pipeline's
    ``default_sample_size`` of 128 latent pixels, 1024 px with Flux's VAE)."""
    default = 128 if model.arch == "flux" else 64
    return int(model.denoiser_config.get("sample_size", default)) * vae_factor(model)


def load_base(model: ModelRef, settings: ModelConfig, device: str) -> tuple[Any, Any]:
    """The base pipeline and its dtype; weights that do not load are a ``UserError`` (nothing created yet)."""
    dtype = resolve_dtype(settings.mixed_precision, device)
    try:
        pipe = load_pipeline(model, device, dtype, settings.allow_pickle)
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"base model {model.source}: could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        ) from None
    return pipe, dtype
