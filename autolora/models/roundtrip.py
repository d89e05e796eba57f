"""A VAE's round trip (encode -> decode) on pictures, as PSNR: what the latent space can represent."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autolora.images import to_tensor

if TYPE_CHECKING:
    from PIL import Image


def psnr(a: Any, b: Any) -> float:
    """PSNR in dB of two arrays/tensors in [0, 1] (capped at 60 dB for identical inputs, 0 for NaN/inf)."""
    mse = float(((a - b) ** 2).mean())
    if not math.isfinite(mse):  # a VAE that overflowed: nothing kept (min() would call NaN 60 dB)
        return 0.0
    return 60.0 if mse <= 1e-6 else min(60.0, 10.0 * math.log10(1.0 / mse))


def round_trip_psnr(
    vae: Any, images: Sequence[Image.Image], resolution: int, batch_size: int | None = None
) -> list[float]:
    """Per image, the PSNR of ``vae``'s decode of its encoding (latent mean), as training crops it.

    ``batch_size`` defaults to 8 pictures at 32-256 px, 2 at 512 and 1 from 1024 (a float32 decode at 1024 px
    takes gigabytes)."""
    return [psnr((x + 1) / 2, (y + 1) / 2) for x, y in _round_trips(vae, images, resolution, batch_size)]


def round_trip_images(
    vae: Any, images: Sequence[Image.Image], resolution: int, batch_size: int | None = None
) -> list[Image.Image]:
    """``vae``'s decode of each picture's encoding (latent mean), as training crops it: what the latent space keeps."""
    import torch
    from PIL import Image as PILImage

    out = []
    for _, y in _round_trips(vae, images, resolution, batch_size):
        pixels = ((y + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        out.append(PILImage.fromarray(pixels))
    return out


def _round_trips(vae: Any, images: Sequence[Image.Image], resolution: int, batch_size: int | None) -> list[Any]:
    """(input, decode) tensor pairs in [-1, 1], float32 on the CPU."""
    batch_size = batch_size or max(1, min(8, 2 * (512 // resolution) ** 2))
    import torch

    param = next(vae.parameters())
    dtype = param.dtype
    # In float32: SDXL's VAE overflows in float16, and fp16/bf16 -> fp32 -> back is exact.
    if dtype != torch.float32:
        vae.to(torch.float32)
    out: list[Any] = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = torch.stack([to_tensor(im, resolution) for im in images[start : start + batch_size]])
                latents = vae.encode(x.to(param.device)).latent_dist.mode()
                y = vae.decode(latents).sample.float().cpu().clamp(-1, 1)
                out.extend(zip(x, y, strict=True))
    finally:
        if dtype != torch.float32:
            vae.to(dtype)
    return out
