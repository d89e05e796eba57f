"""The training loop of one trial, and the per-study training data it reads.

Latents of the style images and the text embeddings of their captions are computed once per
study (``TrainData.build``), saved in the run folder and reused by every trial and every worker
process. Noise, timesteps and loss follow the scheduler's prediction type; min-SNR weighting,
gradient checkpointing and mixed precision are options.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.errors import TrialFailed

if TYPE_CHECKING:
    import torch

    from autolora.data import StyleSet
    from autolora.tune.search import LoraSpec


def encode_prompts(pipe: Any, prompts: list[str], device: str) -> dict[str, torch.Tensor]:
    """Text conditioning through the pipeline's own ``encode_prompt`` (grad flows if TE LoRA is on)."""
    if hasattr(pipe, "text_encoder_2"):
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, device=device, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "pooled": pooled}
    embeds, _ = pipe.encode_prompt(prompts, device, 1, False)
    return {"prompt_embeds": embeds}


@dataclass
class TrainData:
    """Cached per study: latent distributions of the style images and caption embeddings."""

    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor | None
    captions: list[str]
    resolution: int

    @classmethod
    def build(cls, pipe: Any, style: StyleSet, trigger: str, resolution: int, device: str) -> TrainData:
        import torch

        from autolora.images import to_tensor

        captions = [f"{c}, {trigger}" if c else trigger for c in style.captions]
        pixels = torch.stack([to_tensor(im, resolution) for im in style.images])
        vae = pipe.vae
        dtype = vae.dtype
        vae.to(torch.float32)  # the SDXL VAE overflows in fp16; encode once in fp32
        means, stds = [], []
        with torch.no_grad():
            for i in range(0, len(pixels), 8):
                dist = vae.encode(pixels[i : i + 8].to(device, torch.float32)).latent_dist
                means.append(dist.mean.cpu())
                stds.append(dist.std.cpu())
            cond = encode_prompts(pipe, captions, device)
        vae.to(dtype)
        pooled = cond.get("pooled")
        return cls(
            torch.cat(means),
            torch.cat(stds),
            cond["prompt_embeds"].float().cpu(),
            pooled.float().cpu() if pooled is not None else None,
            captions,
            resolution,
        )

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        from autolora.core.rundir import temp_beside
        from autolora.folders import readable

        tensors = {"latent_mean": self.latent_mean, "latent_std": self.latent_std, "prompt_embeds": self.prompt_embeds}
        if self.pooled is not None:
            tensors["pooled"] = self.pooled
        meta = {"captions": "\n".join(self.captions), "resolution": str(self.resolution)}
        tmp = temp_beside(path)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        readable(tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> TrainData:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        return cls(
            t["latent_mean"],
            t["latent_std"],
            t["prompt_embeds"],
            t.get("pooled"),
            meta["captions"].split("\n"),
            int(meta["resolution"]),
        )


@dataclass
class TrainSettings:
    """Per-study settings that are not searched."""

    seed: int = 0
    max_grad_norm: float = 1.0
    noise_offset: float = 0.0
    gradient_checkpointing: bool = False
    autocast_dtype: Any = None  # torch dtype for autocast on CUDA, or None


def _snr_weights(scheduler: Any, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    import torch
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps)
    w = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return w / (snr + 1)
    return w / snr


def _autocast(dtype: Any) -> Any:
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def train_lora(
    pipe: Any,
    spec: LoraSpec,
    data: TrainData,
    settings: TrainSettings,
    device: str,
    on_step: Callable[[int, float], None] | None = None,
    on_eval: Callable[[int], None] | None = None,
    eval_every: int = 0,
) -> list[float]:
    """Train the adapter already attached to ``pipe`` for ``spec['steps']`` steps; return the loss curve.

    ``on_eval(step)`` runs every ``eval_every`` steps and after the last step (it may raise
    ``optuna.TrialPruned``). A non-finite loss raises ``TrialFailed``.
    """
    import torch
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    unet = pipe.unet
    text_encoders = [
        m
        for m in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None))
        if m is not None and any(p.requires_grad for p in m.parameters())
    ]
    train_te = bool(spec["text_encoder"]) and bool(text_encoders)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    lr = float(spec["learning_rate"])
    te_lr = lr * float(spec["text_encoder_lr_ratio"])
    unet_params = [p for p in unet.parameters() if p.requires_grad]
    param_lists: list[tuple[list[torch.nn.Parameter], float]] = [(unet_params, lr)]
    for te in text_encoders if train_te else []:
        param_lists.append(([p for p in te.parameters() if p.requires_grad], te_lr))
    trainable = [p for params, _ in param_lists for p in params]
    for p in trainable:
        p.data = p.data.float()  # trainable LoRA weights stay fp32 even when the base is half precision
    groups = [{"params": params, "lr": group_lr} for params, group_lr in param_lists]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=float(spec["weight_decay"]))
    steps = int(spec["steps"])
    lr_sched = get_scheduler(
        spec["lr_scheduler"], optimizer, num_warmup_steps=int(steps * spec["warmup_ratio"]), num_training_steps=steps
    )
    use_fp16 = settings.autocast_dtype == torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_fp16 else None
    if settings.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    gen = torch.Generator("cpu").manual_seed(settings.seed)
    n = data.latent_mean.shape[0]
    bsz = int(spec["batch_size"])
    gamma = float(spec["min_snr_gamma"])
    scaling = pipe.vae.config.scaling_factor
    shift = getattr(pipe.vae.config, "shift_factor", None) or 0.0
    eval_every = eval_every or max(1, math.ceil(steps / 4))
    losses: list[float] = []
    unet.train()
    for te in text_encoders if train_te else []:
        te.train()
    try:
        for step in range(1, steps + 1):
            idx = torch.randint(0, n, (bsz,), generator=gen)
            eps = torch.randn(data.latent_mean[idx].shape, generator=gen)
            latents = ((data.latent_mean[idx] + data.latent_std[idx] * eps) - shift) * scaling
            noise = torch.randn(latents.shape, generator=gen)
            if settings.noise_offset:
                noise += settings.noise_offset * torch.randn((bsz, latents.shape[1], 1, 1), generator=gen)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), generator=gen)
            noisy = noise_scheduler.add_noise(latents, noise, t)
            if noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, t)
            else:
                target = noise
            with _autocast(settings.autocast_dtype):
                if train_te:
                    cond = encode_prompts(pipe, [data.captions[i] for i in idx.tolist()], device)
                else:
                    cond = {"prompt_embeds": data.prompt_embeds[idx].to(device)}
                    if data.pooled is not None:
                        cond["pooled"] = data.pooled[idx].to(device)
                kwargs: dict[str, Any] = {}
                if "pooled" in cond:
                    res = data.resolution
                    time_ids = torch.tensor([[res, res, 0, 0, res, res]], dtype=torch.float32).repeat(bsz, 1)
                    kwargs["added_cond_kwargs"] = {
                        "text_embeds": cond["pooled"].to(device),
                        "time_ids": time_ids.to(device),
                    }
                dtype = unet.dtype
                pred = unet(
                    noisy.to(device, dtype),
                    t.to(device),
                    encoder_hidden_states=cond["prompt_embeds"].to(dtype),
                    **kwargs,
                ).sample
            per_sample = ((pred.float() - target.to(device).float()) ** 2).mean(dim=(1, 2, 3))
            if gamma > 0:
                per_sample = per_sample * _snr_weights(noise_scheduler, t, gamma).to(device)
            loss = per_sample.mean()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrialFailed(f"loss is {value} at step {step} (learning rate {lr:g} too high?)")
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr_sched.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(value)
            if on_step:
                on_step(step, value)
            if on_eval and (step % eval_every == 0 or step == steps):
                on_eval(step)
    finally:
        if settings.gradient_checkpointing:
            unet.disable_gradient_checkpointing()
        unet.eval()
        for te in text_encoders:
            te.eval()
    return losses
