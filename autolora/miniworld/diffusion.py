"""Training the miniworld diffusion model: first the VAE, then the UNet and text encoder together.

The VAE is trained on every style (like Stable Diffusion's general-purpose VAE, it knows nothing of captions);
the UNet and text encoder only on ``BASE_STYLES``, so ``HELD_OUT_STYLES`` are new to the base model and a style
LoRA has something real to learn. The UNet learns epsilon prediction on SD 1.x's noise schedule with min-SNR
weighting, 10% of captions dropped for classifier-free guidance, and an EMA of its weights is what ships.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autolora.miniworld.optim import OneCycle
from autolora.miniworld.procedural import patterned_content, random_picture, styled_content
from autolora.miniworld.world import COLOURS, HELD_OUT_STYLES, SHAPES, STYLES, caption, draw
from autolora.models.miniworld import SCHEDULER, SIZE, Progress

if TYPE_CHECKING:
    import torch

BASE_STYLES = tuple(s for s in STYLES if s not in HELD_OUT_STYLES)


def draw_batch(rng: random.Random, n: int, styles: tuple[str, ...]) -> tuple[torch.Tensor, list[str]]:
    """``n`` fresh pictures as a (n, 3, H, W) tensor in [-1, 1], with their captions."""
    import numpy as np

    arrays, captions = [], []
    for _ in range(n):
        image, item = draw(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(styles), rng, SIZE)
        arrays.append(np.asarray(image, dtype=np.float32))
        captions.append(item.caption)
    return _to_tensor(arrays), captions


def _to_tensor(arrays: list[Any]) -> torch.Tensor:
    """(H, W, 3) float arrays in [0, 255] -> a contiguous (n, 3, H, W) tensor in [-1, 1]."""
    import numpy as np
    import torch

    return (torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0).contiguous()


def general_batch(rng: random.Random, n: int) -> torch.Tensor:
    """``n`` pictures for the general VAE: a quarter miniworld draws (every style), half the broad procedural
    family, a quarter miniworld content in that family's styles (``procedural``). Never the battery."""
    import numpy as np

    arrays = []
    for _ in range(n):
        r = rng.random()
        if r < 0.25:
            image, _ = draw(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(STYLES), rng, SIZE)
        elif r < 0.75:
            image = random_picture(rng, SIZE)
        else:
            image = styled_content(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng, SIZE)
        arrays.append(np.asarray(image, dtype=np.float32))
    return _to_tensor(arrays)


def train_vae(
    vae: Any,
    steps: int,
    batch_size: int,
    seed: int,
    device: str,
    progress: Progress | None = None,
    general: bool = False,
) -> list[float]:
    """Reconstruction (MSE) plus a light KL term, on every miniworld style or (``general``) the broad mix of
    ``general_batch``."""
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    vae.to(device).train()
    fit = OneCycle(vae.parameters(), steps, weight_decay=0.0, progress=progress)
    for _ in range(steps):
        x = general_batch(rng, batch_size) if general else draw_batch(rng, batch_size, STYLES)[0]
        x = x.to(device)
        dist = vae.encode(x).latent_dist
        recon = vae.decode(dist.sample()).sample
        fit.step(torch.nn.functional.mse_loss(recon, x) + 1e-5 * dist.kl().mean())
    vae.eval()
    return fit.losses


@dataclass
class LatentPool:
    """A fixed pool of encoded base-style pictures: latent mean and std, and caption indices."""

    mean: torch.Tensor
    std: torch.Tensor
    caption_index: torch.Tensor
    captions: list[str]  # index 0 is "" (the unconditional caption)


PATTERNED = "patterned"
"""The general base's caption for miniworld content in the broad family's textures (``patterned_content``)."""


def patterned_batch(rng: random.Random, n: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` pictures of ``procedural.patterned_content``, captioned ``a red circle in patterned style``."""
    import numpy as np

    arrays, captions = [], []
    for _ in range(n):
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        arrays.append(np.asarray(patterned_content(shape, colour, rng, SIZE), dtype=np.float32))
        captions.append(caption(shape, colour, PATTERNED))
    return _to_tensor(arrays), captions


def encode_pool(vae: Any, n: int, seed: int, device: str, patterned: float = 0.0) -> LatentPool:
    """``n`` encoded pictures of ``BASE_STYLES``; with ``patterned`` > 0, that share of them is miniworld content
    in the broad family's textures (``patterned_batch``). At 0 the pool is the one it always was."""
    import torch

    rng = random.Random(seed)
    styles = BASE_STYLES + ((PATTERNED,) if patterned else ())
    captions = [""] + sorted({caption(s, c, y) for s in SHAPES for c in COLOURS for y in styles})
    index = {c: i for i, c in enumerate(captions)}
    means, stds, idx = [], [], []  # type: list[torch.Tensor], list[torch.Tensor], list[int]
    with torch.no_grad():
        for start in range(0, n, 256):
            k = min(256, n - start)
            k_pat = round(k * patterned)
            x, caps = draw_batch(rng, k - k_pat, BASE_STYLES)
            if k_pat:
                xp, cp = patterned_batch(rng, k_pat)
                x, caps = torch.cat([x, xp]), caps + cp
            dist = vae.encode(x.to(device)).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
            idx.extend(index[c] for c in caps)
    return LatentPool(torch.cat(means), torch.cat(stds), torch.tensor(idx), captions)


def train_unet(
    unet: Any,
    text_encoder: Any,
    token_ids: torch.Tensor,
    pool: LatentPool,
    scaling_factor: float,
    steps: int,
    batch_size: int,
    seed: int,
    device: str,
    progress: Progress | None = None,
    noise_offset: float = 0.0,
) -> tuple[Any, Any, list[float]]:
    """Epsilon prediction with min-SNR-5 weighting; returns the EMA UNet and text encoder and the loss curve.

    ``token_ids[i]`` are the padded token ids of ``pool.captions[i]``. ``noise_offset`` adds a per-sample,
    per-channel constant to the noise (offset noise, as the field trains it), so that the model learns grounds
    from the prompt instead of from the initial noise's mean; at 0 the random stream is the one it always was.
    """
    import torch
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    noise_sched: Any = DDPMScheduler(**{k: v for k, v in SCHEDULER.items() if k != "set_alpha_to_one"})
    alphas = noise_sched.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    unet.to(device).train()
    text_encoder.to(device).train()
    ema = [copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()]
    params = [*unet.parameters(), *text_encoder.parameters()]
    fit = OneCycle(params, steps, weight_decay=0.01, pct_start=0.05, clip=1.0, progress=progress)
    token_ids = token_ids.to(device)
    for step in range(steps):
        pick = torch.randint(0, len(pool.mean), (batch_size,))
        latents = (pool.mean[pick] + pool.std[pick] * torch.randn_like(pool.mean[pick])).to(device) * scaling_factor
        cap = pool.caption_index[pick].clone()
        cap[torch.rand(batch_size) < 0.1] = 0
        noise = torch.randn_like(latents)
        if noise_offset:
            noise = noise + noise_offset * torch.randn(*latents.shape[:2], 1, 1, device=device)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (batch_size,), device=device)
        noisy = noise_sched.add_noise(latents, noise, t)
        hidden = text_encoder(token_ids[cap.to(device)])[0]
        pred = unet(noisy, t, hidden).sample
        weight = torch.clamp(snr[t], max=5.0) / snr[t]
        fit.step((weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean())
        decay = min(0.998, (1 + step) / (10 + step))
        with torch.no_grad():
            for model, avg in zip((unet, text_encoder), ema, strict=True):
                for p, q in zip(model.parameters(), avg.parameters(), strict=True):
                    q.lerp_(p, 1 - decay)
    return ema[0], ema[1], fit.losses
