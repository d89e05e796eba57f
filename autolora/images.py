"""Pictures as the models see them: one crop-and-scale shared by training and the data diagnostics."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """Resize the short side to ``size``, center-crop, and scale to [-1, 1] (C, H, W)."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    w, h = image.size
    scale = size / min(w, h)
    resized = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), PILImage.Resampling.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    crop = resized.crop((left, top, left + size, top + size))
    arr = np.asarray(crop, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
