"""Model families: how each architecture is conditioned and trained.

SD 1.x/2.x and SDXL are UNets trained to predict the noise (or v) of a DDPM schedule
(``autolora.models.family``, below); SD 3.x and Flux.1 are DiT transformers trained by flow matching
(``autolora.models.flow``). The training loop (``autolora.tune.train``) asks a family for two things: the
text conditioning of captions (cached once per study) and a per-sample loss of a batch of latents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autolora.models.losses import LossFn, LossSettings

if TYPE_CHECKING:
    import torch

__all__ = ["LossFn", "LossSettings", "denoiser", "encode_prompts", "make_loss"]


def denoiser(pipe: Any) -> torch.nn.Module:
    """The module a LoRA trains: the UNet, or the SD3/Flux transformer."""
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else pipe.transformer


def denoiser_name(pipe: Any) -> str:
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


def arch_of(pipe: Any) -> str:
    cls = type(pipe).__name__
    if cls == "FluxPipeline":
        return "flux"
    if cls == "StableDiffusion3Pipeline":
        return "sd3"
    if cls == "StableDiffusionXLPipeline":
        return "sdxl"
    return "sd2" if pipe.unet.config.cross_attention_dim == 1024 else "sd1"


def is_flow(pipe: Any) -> bool:
    return arch_of(pipe) in ("sd3", "flux")


def encode_prompts(pipe: Any, prompts: list[str], device: str) -> dict[str, torch.Tensor]:
    """Text conditioning through the pipeline's own ``encode_prompt`` (grad flows if TE LoRA is on).

    ``prompt_embeds`` for every family; ``pooled`` for SDXL, SD3 and Flux.
    """
    arch = arch_of(pipe)
    if arch == "flux":
        embeds, pooled, _ = pipe.encode_prompt(prompts, None, device=device)
        return {"prompt_embeds": embeds, "pooled": pooled}
    if arch == "sd3":
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, None, None, device=device, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "pooled": pooled}
    if arch == "sdxl":
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, device=device, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "pooled": pooled}
    embeds, _ = pipe.encode_prompt(prompts, device, 1, False)
    return {"prompt_embeds": embeds}


def make_loss(pipe: Any, settings: LossSettings, device: str) -> LossFn:
    """The per-sample training loss of this pipeline's family."""
    if is_flow(pipe):
        from autolora.models.flow import make_flow_loss

        return make_flow_loss(pipe, settings, device)
    return _make_unet_loss(pipe, settings, device)


def unet_forward(pipe: Any, noisy: torch.Tensor, t: torch.Tensor, cond: dict[str, Any], device: str) -> torch.Tensor:
    """The UNet's prediction for a batch of noisy latents at timesteps ``t`` (SDXL's micro-conditioning from the
    batch's size; no crop)."""
    import torch

    unet = pipe.unet
    bsz = noisy.shape[0]
    scale = getattr(pipe, "vae_scale_factor", 8)
    kwargs: dict[str, Any] = {}
    if "pooled" in cond:
        h, w = noisy.shape[2] * scale, noisy.shape[3] * scale
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32).repeat(bsz, 1)
        kwargs["added_cond_kwargs"] = {"text_embeds": cond["pooled"].to(device), "time_ids": time_ids.to(device)}
    dtype = unet.dtype
    return unet(
        noisy.to(device, dtype), t.to(device), encoder_hidden_states=cond["prompt_embeds"].to(device, dtype), **kwargs
    ).sample


def _snr_weights(scheduler: Any, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    import torch
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps)
    w = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return w / (snr + 1)
    return w / snr


def _make_unet_loss(pipe: Any, settings: LossSettings, device: str) -> LossFn:
    """Epsilon or v prediction on the pipeline's DDPM schedule, optional offset noise and min-SNR weighting."""
    import torch
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def loss(latents: torch.Tensor, cond: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
        bsz = latents.shape[0]
        noise = torch.randn(latents.shape, generator=gen)
        if settings.noise_offset:
            noise += settings.noise_offset * torch.randn((bsz, latents.shape[1], 1, 1), generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (bsz,), generator=gen)
        noisy = scheduler.add_noise(latents, noise, t)
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, t)
        else:
            target = noise
        pred = unet_forward(pipe, noisy, t, cond, device)
        per_sample = ((pred.float() - target.to(device).float()) ** 2).mean(dim=(1, 2, 3))
        if settings.min_snr_gamma > 0:
            per_sample = per_sample * _snr_weights(scheduler, t, settings.min_snr_gamma).to(device)
        return per_sample

    return loss
