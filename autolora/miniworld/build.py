"""``autolora miniworld build``: train the miniworld diffusion model and judge from a seed, and ship them.

The output folder holds fp16 safetensors (``vae``, ``unet``, ``text_encoder``, ``judge``) and ``build.json``
(seed, steps, device, threads, wall time per phase, loss curves' ends, the VAE scaling factor and the judge's
zero-shot accuracy on fresh draws). The repository ships one such folder in ``autolora/models/weights``;
``builtin:miniworld`` and ``builtin:miniworld-clip`` assemble it into a diffusers folder and an open_clip
checkpoint (``assemble_pipeline``/``assemble_judge``) that load like a user's model.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autolora.atomic import readable, replace_folder
from autolora.errors import UserError
from autolora.miniworld import diffusion, judge
from autolora.miniworld.judge import classify
from autolora.miniworld.quality import battery_figures
from autolora.miniworld.world import STYLES, sample_items
from autolora.models import miniworld as nets
from autolora.models.tokenizer import write_clip_tokenizer_files

"""The shipped build."""


NARROW: dict[str, Any] = {
    "general": False,
    "vae_steps": 400,
    "vae_batch_size": 48,
    "judge_steps": 1000,
    "noise_offset": 0.0,
    "unet_steps": 2400,
    "unet_heads": 8,
}
"""The narrow recipe (``--recipe narrow``), shipped until session 11: VAE and judge on miniworld's pictures only.
Its VAE round-trips a dark-ground folder at 5 dB (docs/miniworld.md); kept to reproduce the earlier figures."""


@dataclass(frozen=True)
class BuildConfig:
    """Step counts and batch sizes of one build (``scale`` multiplies every step count and the latent pool)."""

    seed: int = 0
    device: str = "cpu"
    scale: float = 1.0
    vae_steps: int = 1200
    vae_batch_size: int = 32
    judge_steps: int = 1400
    unet_steps: int = 4800
    batch_size: int = 48
    general: bool = True
    """The general recipe (the default, and the shipped build): VAE on the broad procedural family of flat art,
    judge half on it, so that a round trip keeps the look of styles nobody planned (docs/miniworld.md: the
    battery). ``False`` with the rest of ``NARROW`` is the earlier, narrow world."""
    judge_batch_size: int = 128
    pool_size: int = 12000
    unet_heads: int = 2
    """Attention heads of the UNet's transformer blocks (diffusers' ``attention_head_dim``, which SD 1.x uses as
    the head count). 8 heads at 32 channels are 4-dimensional, which torch's CPU attention runs slowly: 2 heads
    make a training step 1.4x faster (0.48 -> 0.35 s at batch 48 on 2 cores), so the general recipe buys twice the
    UNet steps within the hour. Recorded in ``build.json``; the loader builds the UNet with it."""
    noise_offset: float = 0.1
    """Offset noise in the UNet's training (``noise += offset * randn(batch, channels, 1, 1)``). The general
    VAE paints whatever ground a latent holds, so without it the UNet takes the initial noise's per-channel mean
    for the picture's ground and draws tinted grounds (docs/miniworld/history.md: 3/48 -> 34/48 by the pixel check)."""

    patterned_share: float = 0.0
    """Share of the UNet's latent pool that is miniworld content in the broad family's textures, captioned
    ``in patterned style`` (``diffusion.patterned_batch``), so that the base learns to draw textures in general and a
    style LoRA can bind one to the prompt. Off in every recipe: a 600-step fine-tune and a full 2400-step general
    build at 0.25 both drew blotches, not periodic textures, and made neither checker's nor dotted's texture
    learnable (docs/miniworld/history.md)."""

    def __post_init__(self) -> None:
        if not 0 <= self.patterned_share < 1:
            raise UserError(f"patterned_share {self.patterned_share}: expected a number in [0, 1)")
        if not self.scale > 0:
            raise UserError(f"--scale {self.scale}: expected a number > 0")
        if not 0 <= self.noise_offset <= 1:
            raise UserError(f"noise_offset {self.noise_offset}: expected a number in [0, 1]")
        if self.unet_heads not in (1, 2, 4, 8):
            raise UserError(f"unet_heads {self.unet_heads}: expected 1, 2, 4 or 8 (dividing 32 and 64 channels)")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise UserError(f"--device {self.device}: expected cpu or cuda[:N]")

    @classmethod
    def recipe(cls, name: str, **kwargs: Any) -> BuildConfig:
        """``general`` (the defaults, measured for it: docs/miniworld.md) or ``narrow`` (``NARROW``)."""
        if name not in ("general", "narrow"):
            raise UserError(f"--recipe {name}: expected general or narrow")
        return cls(**{**(NARROW if name == "narrow" else {}), **kwargs})

    def steps(self, n: int) -> int:
        return max(1, round(n * self.scale))


def build(config: BuildConfig, out: Path, log: Any = print) -> dict[str, Any]:
    """Train everything into ``out`` (created atomically; must not exist or be empty). Returns the manifest."""
    import torch

    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; choose a new folder")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {config.device}: CUDA is not available here")
    with replace_folder(out) as tmp:
        manifest = _train(config, tmp, log)
        (tmp / "build.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _train(config: BuildConfig, folder: Path, log: Any) -> dict[str, Any]:
    import open_clip
    import torch

    device, seed = config.device, config.seed
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def progress(name: str) -> Any:
        def report(step: int, total: int, loss: float) -> None:
            if step % max(1, total // 10) == 0 or step == total:
                log(f"miniworld build: {name} step {step}/{total} loss {loss:.4f}")

        return report

    def phase(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        log(f"miniworld build: {name} done in {timings[name]:.0f} s")

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    vae = nets.make_vae()
    vae_losses = diffusion.train_vae(
        vae, config.steps(config.vae_steps), config.vae_batch_size, seed, device, progress("vae"), config.general
    )
    pool = diffusion.encode_pool(
        vae, max(256, config.steps(config.pool_size)), seed + 1, device, patterned=config.patterned_share
    )
    scaling = float(1.0 / pool.mean.std())
    vae.register_to_config(scaling_factor=scaling)
    phase("vae", t0)

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    clip = nets.make_judge(folder / "_config")
    _, _, preprocess = open_clip.create_model_and_transforms(nets.JUDGE_NAME)
    tokenizer = open_clip.get_tokenizer(nets.JUDGE_NAME)
    judge_losses = judge.train_judge(
        clip,
        preprocess,
        tokenizer,
        config.steps(config.judge_steps),
        config.judge_batch_size,
        seed + 2,
        device,
        progress("judge"),
        broad_share=0.5 if config.general else 0.0,
    )
    phase("judge", t0)

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    unet, text_encoder = nets.make_unet(config.unet_heads), nets.make_text_encoder()
    token_ids = _token_ids(pool.captions, folder / "_tokenizer")
    unet, text_encoder, unet_losses = diffusion.train_unet(
        unet,
        text_encoder,
        token_ids,
        pool,
        scaling,
        config.steps(config.unet_steps),
        config.batch_size,
        seed + 3,
        device,
        progress("unet"),
        noise_offset=config.noise_offset,
    )
    phase("unet", t0)

    for name, module in (("vae", vae), ("unet", unet), ("text_encoder", text_encoder), ("judge", clip)):
        _save_fp16(module, folder / f"{name}.safetensors")
    shutil.rmtree(folder / "_config")
    shutil.rmtree(folder / "_tokenizer")
    accuracy = _judge_accuracy(clip, preprocess, tokenizer, device, seed + 4)
    n_battery = 48 if config.scale >= 1 else 8  # pictures per style (a smoke build only shows it works)
    battery = battery_figures(vae.cpu(), *_embedders(clip, preprocess, tokenizer, device), n_battery, seed + 5)
    total = round(time.perf_counter() - start, 1)
    log(f"miniworld build: finished in {total:.0f} s; judge accuracy on fresh draws {accuracy}")
    held = {k: v for k, v in battery.items() if not v["vocabulary"]}
    log(
        f"miniworld build: held-out battery: VAE median {min(v['psnr_median'] for v in held.values()):.1f} dB at "
        f"worst, judge shape {sum(v['shape'] for v in held.values()) / len(held):.0%} and colour "
        f"{sum(v['colour'] for v in held.values()) / len(held):.0%} on average"
    )
    return {
        "config": asdict(config),
        "scaling_factor": scaling,
        "wall_s": {**timings, "total": total},
        "device": device if device == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "final_loss": {
            "vae": _tail(vae_losses),
            "judge": _tail(judge_losses),
            "unet": _tail(unet_losses),
        },
        "judge_accuracy_fresh_draws": accuracy,
        "battery": battery,
    }


def _tail(losses: list[float], n: int = 50) -> float:
    last = losses[-n:]
    return round(sum(last) / len(last), 5)


def _token_ids(captions: list[str], tmp: Path) -> Any:
    from transformers import CLIPTokenizer

    write_clip_tokenizer_files(tmp)
    tok = CLIPTokenizer.from_pretrained(tmp)
    return tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def _save_fp16(module: Any, path: Path) -> None:
    from safetensors.torch import save_file

    state = {
        k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in module.state_dict().items()
    }
    save_file(state, str(path))
    readable(path)


def _embedders(model: Any, preprocess: Any, tokenizer: Any, device: str) -> tuple[Any, Any]:
    """The judge's (embed_images, embed_texts), L2-normalised, as ``ClipJudge`` has them."""
    import torch

    def embed_images(images: list[Any]) -> torch.Tensor:
        with torch.no_grad():
            x = torch.stack([preprocess(im) for im in images]).to(device)
            return torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1).cpu()

    def embed_texts(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return torch.nn.functional.normalize(model.encode_text(tokenizer(texts).to(device)).float(), dim=-1).cpu()

    return embed_images, embed_texts


def _judge_accuracy(model: Any, preprocess: Any, tokenizer: Any, device: str, seed: int) -> dict[str, float]:
    """Zero-shot accuracy of the just-trained judge on 280 fresh draws (the benchmark does it at scale)."""

    items = sample_items(280, seed=10_000 + seed, styles=STYLES)
    got = classify(*_embedders(model, preprocess, tokenizer, device), [im for im, _ in items])
    truth = [(it.shape, it.colour, it.style) for _, it in items]
    return {
        what: round(sum(g[k] == t[k] for g, t in zip(got, truth, strict=True)) / len(truth), 3)
        for k, what in enumerate(("shape", "colour", "style"))
    }
