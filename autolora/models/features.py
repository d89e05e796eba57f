"""The base model's own reading of a picture's style: IntroStyle (Kumar, Mu & Vasconcelos, ICCV 2025,
arXiv 2412.14432).

A picture is encoded by the pipeline's VAE, noised lightly (``TIMESTEP`` of the training schedule, one fixed noise
for every picture of a size, so that two pictures differ only by what they show), and denoised once with the empty
prompt; the output of one intermediate block of the denoiser is summarised per channel by its mean and standard
deviation over positions. Two pictures' styles are as far apart as the 2-Wasserstein distance between the diagonal
Gaussians those statistics describe: ``sqrt(|mu1 - mu2|^2 + |sd1 - sd2|^2)``, which is the Euclidean distance of
the concatenated ``(mu, sd)`` vectors (``autolora.scoring.selfcheck.gram_distance`` computes it, normalised).

The paper reads Stable Diffusion 2.1's ``up_blocks[1]`` at t = 25 of 1000; here the UNet families read the same
block at the same fraction of their schedule, and the DiT families (SD3, Flux) the image tokens after the middle
transformer block (the paper has no DiT; the middle block stands where a UNet's upper-middle block stands). It needs
no weights beyond the base model's, so every model autolora loads has it.

The features are read from the base model whatever adapter a trial has on the pipeline: ``base_view`` (a context
manager factory, ``autolora.methods.base_view``) switches the adapter off for the read.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from autolora.models.family import encode_prompts, is_flow, unet_forward
from autolora.models.flow import flow_forward

if TYPE_CHECKING:
    import torch
    from PIL import Image

TIMESTEP = 0.025
"""How noised the picture is, as a fraction of the training schedule (the paper's t = 25 of 1000)."""
UNET_BLOCK = 1
"""The UNet's up block whose output is read (the paper's)."""
BATCH = 8
NOISE_SEED = 0


class DenoiserFeatures:
    """``reader(images)`` -> one ``(N, 2C)`` tensor of per-channel means and standard deviations (a list, one block;
    the shape ``gram_distance`` takes)."""

    def __init__(
        self,
        pipe: Any,
        device: str,
        resolution: int,
        base_view: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.pipe = pipe
        self.device = device
        self.resolution = resolution
        self.base_view = base_view or nullcontext
        self._cond: dict[str, torch.Tensor] | None = None
        self._noise: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, images: list[Image.Image]) -> list[torch.Tensor]:
        import torch

        out = []
        with torch.no_grad(), self.base_view():
            for i in range(0, len(images), BATCH):
                out.append(self._read(images[i : i + BATCH]))
        return [torch.cat(out)]

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        import numpy as np
        import torch
        from PIL import ImageOps

        size = (self.resolution, self.resolution)
        arrays = [np.asarray(ImageOps.fit(im.convert("RGB"), size), dtype=np.float32) for im in images]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0

    def _read(self, images: list[Image.Image]) -> torch.Tensor:
        import torch

        pipe, device = self.pipe, self.device
        vae = pipe.vae
        pixels = self._pixels(images).to(device, vae.dtype)
        latents = vae.encode(pixels).latent_dist.mean.float()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        latents = (latents - shift) * vae.config.scaling_factor
        if self._cond is None:
            self._cond = {k: v.float() for k, v in encode_prompts(pipe, [""], device).items()}
        n = len(latents)
        cond = {k: v.expand(n, *v.shape[1:]) for k, v in self._cond.items()}
        shape = tuple(latents.shape[1:])
        if shape not in self._noise:
            gen = torch.Generator("cpu").manual_seed(NOISE_SEED)
            self._noise[shape] = torch.randn(shape, generator=gen)
        noise = self._noise[shape].to(latents.device).expand_as(latents)
        captured: list[torch.Tensor] = []
        module, pick = self._block()

        def hook(_m: Any, _inputs: Any, output: Any) -> None:
            captured.append(pick(output))

        handle = module.register_forward_hook(hook)
        try:
            if is_flow(pipe):
                noisy = (1 - TIMESTEP) * latents + TIMESTEP * noise
                timesteps = torch.full((n,), TIMESTEP * 1000.0)
                flow_forward(pipe, noisy, timesteps, cond, device, 1.0)
            else:
                steps = int(pipe.scheduler.config.num_train_timesteps)
                t = torch.full((n,), round(TIMESTEP * steps), dtype=torch.long)
                alphas = pipe.scheduler.alphas_cumprod[t].float().view(-1, 1, 1, 1).to(latents.device)
                noisy = alphas.sqrt() * latents + (1 - alphas).sqrt() * noise
                unet_forward(pipe, noisy, t, cond, device)
        finally:
            handle.remove()
        feats = captured[0].float()  # (N, C, H, W) or (N, tokens, C)
        per_channel = feats.flatten(2) if feats.dim() == 4 else feats.transpose(1, 2)
        return torch.cat([per_channel.mean(-1), per_channel.std(-1)], dim=1).cpu()

    def _block(self) -> tuple[torch.nn.Module, Callable[[Any], torch.Tensor]]:
        """The module whose output is read, and how to take the image features out of that output."""
        unet = getattr(self.pipe, "unet", None)
        if unet is not None:
            block = unet.up_blocks[min(UNET_BLOCK, len(unet.up_blocks) - 1)]
            return block, lambda out: out[0] if isinstance(out, tuple) else out
        blocks = self.pipe.transformer.transformer_blocks
        # SD3's and Flux's joint blocks return (text tokens, image tokens).
        return blocks[len(blocks) // 2], lambda out: out[-1] if isinstance(out, tuple) else out
