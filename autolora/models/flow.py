"""Flow-matching training of SD 3.x and Flux.1 transformers, as diffusers' training scripts do it.

``noisy = (1 - sigma) x + sigma noise``, target the velocity ``noise - x``; sigma drawn by
``diffusers.training_utils.compute_density_for_timestep_sampling`` (uniform, ``logit_normal`` or ``mode``) on
the scheduler's own sigma table (which carries SD3's shift of 3; Flux shifts at sampling time only), the loss
weighted by ``compute_loss_weighting_for_sd3`` (``sigma_sqrt``, ``cosmap``). Flux's latents are packed 2x2
into tokens with their position ids and, for guidance-distilled checkpoints (dev), a guidance value.
``flow_shift`` > 0 replaces the table's shift by ``s sigma / (1 + (s - 1) sigma)`` on the unshifted sigmas:
diffusers' scripts have no such option, but a search over resolutions or styles needs one (the SD3 paper's
shift depends on resolution).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from autolora.models.losses import LossFn, LossSettings

SCHEMES = ("none", "logit_normal", "mode", "sigma_sqrt", "cosmap")


def sample_sigmas(
    scheduler: Any, bsz: int, settings: LossSettings, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas, timesteps) of one batch: density as diffusers' scripts, on the scheduler's table or shifted."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    n = int(scheduler.config.num_train_timesteps)
    u = compute_density_for_timestep_sampling(
        weighting_scheme=settings.weighting_scheme,
        batch_size=bsz,
        logit_mean=settings.logit_mean,
        logit_std=settings.logit_std,
        mode_scale=settings.mode_scale,
        generator=gen,
    )
    indices = (u * n).long().clamp(0, n - 1)
    if settings.flow_shift > 0:
        base = 1.0 - indices.float() / n  # the unshifted table: sigma 1 at index 0 down to 1/n
        s = settings.flow_shift
        sigmas = s * base / (1 + (s - 1) * base)
        return sigmas, sigmas * n
    timesteps = scheduler.timesteps[indices].float()
    sigmas = scheduler.sigmas[indices].float()
    return sigmas, timesteps


def flow_forward(
    pipe: Any, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any], device: str, guidance: float
) -> torch.Tensor:
    """The transformer's velocity for a batch of noisy latents at ``timesteps`` (sigma x 1000); Flux's latents
    packed 2x2 into tokens with their position ids and unpacked again, its guidance embedding (dev) at
    ``guidance``."""
    import torch

    transformer = pipe.transformer
    bsz, channels, h, w = noisy.shape
    dtype = transformer.dtype
    embeds = cond["prompt_embeds"].to(device, dtype)
    pooled = cond["pooled"].to(device, dtype)
    if type(pipe).__name__ != "FluxPipeline":
        return transformer(
            hidden_states=noisy.to(device, dtype),
            timestep=timesteps.to(device, dtype),
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
    packed = pipe._pack_latents(noisy, bsz, channels, h, w)
    img_ids = pipe._prepare_latent_image_ids(bsz, h // 2, w // 2, device, dtype)
    txt_ids = torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype)
    scale = None
    if transformer.config.guidance_embeds:
        scale = torch.full((bsz,), guidance, device=device, dtype=torch.float32)
    out = transformer(
        hidden_states=packed.to(device, dtype),
        timestep=(timesteps / 1000).to(device, dtype),
        guidance=scale,
        pooled_projections=pooled,
        encoder_hidden_states=embeds,
        txt_ids=txt_ids,
        img_ids=img_ids,
        return_dict=False,
    )[0]
    factor = pipe.vae_scale_factor
    return pipe._unpack_latents(out, h * factor, w * factor, factor)


def make_flow_loss(pipe: Any, settings: LossSettings, device: str) -> LossFn:
    """Per-sample flow-matching loss of the pipeline's transformer (SD3 or Flux)."""
    import torch
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    # A fresh copy holds the sigma table at training length, whatever sampling did to the pipeline's own.
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)

    def loss(latents: torch.Tensor, cond: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
        bsz = latents.shape[0]
        noise = torch.randn(latents.shape, generator=gen)
        sigmas, timesteps = sample_sigmas(scheduler, bsz, settings, gen)
        s = sigmas.view(-1, 1, 1, 1)
        noisy = (1.0 - s) * latents + s * noise
        target = noise - latents
        pred = flow_forward(pipe, noisy, timesteps, cond, device, settings.guidance)
        weighting = compute_loss_weighting_for_sd3(settings.weighting_scheme, sigmas).to(device).float()
        return (weighting * ((pred.float() - target.to(device).float()) ** 2).mean(dim=(1, 2, 3))).float()

    return loss
