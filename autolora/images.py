"""Pictures as the models see them: one crop-and-scale shared by training and the data diagnostics."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from autolora.buckets import Bucket


def fit(image: Image.Image, size: int | Bucket) -> Image.Image:
    """Scale to cover ``size`` (a square side, or a bucket's width x height) and centre-crop to it."""
    from PIL import Image as PILImage

    width, height = (size, size) if isinstance(size, int) else (size.width, size.height)
    w, h = image.size
    scale = max(width / w, height / h)
    resized = image.resize((max(width, round(w * scale)), max(height, round(h * scale))), PILImage.Resampling.BICUBIC)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


def to_tensor(image: Image.Image, size: int | Bucket) -> torch.Tensor:
    """``fit`` the picture to ``size`` and scale to [-1, 1] (C, H, W)."""
    import numpy as np
    import torch

    arr = np.asarray(fit(image, size), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
