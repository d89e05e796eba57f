"""Fixed prompts x seeds -> images: the same evaluation set for every trial and the base model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.atomic import write_file
from autolora.models.family import denoiser

if TYPE_CHECKING:
    from PIL import Image


def sample(
    pipe: Any,
    prompts: list[str],
    seeds: list[int],
    *,
    steps: int,
    guidance_scale: float,
    resolution: int,
    batch_size: int = 4,
    callback: Any = None,
) -> list[Image.Image]:
    """Draw one image per (prompt, seed), prompt-major, deterministic per pair.

    Each image gets its own CPU generator seeded with its seed, so an image does not depend on
    the batch it falls in, and CPU and CUDA runs start from the same noise. ``callback`` is passed
    to every pipeline call as ``callback_on_step_end`` (e.g. a two-phase fusion schedule).
    """
    import torch

    pairs = [(p, s) for p in prompts for s in seeds]
    images: list[Image.Image] = []
    unet = denoiser(pipe)
    was_training = unet.training
    unet.eval()
    try:
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i : i + batch_size]
            generators = [torch.Generator("cpu").manual_seed(s) for _, s in chunk]
            with torch.no_grad():
                out = pipe(
                    [p for p, _ in chunk],
                    num_inference_steps=steps,
                    guidance_scale=guidance_scale,
                    height=resolution,
                    width=resolution,
                    generator=generators,
                    output_type="pil",
                    callback_on_step_end=callback,
                )
            images.extend(out.images)
    finally:
        unet.train(was_training)
    return images


def grid(images: list[Image.Image], rows: int) -> Image.Image:
    """Tile images row-major into ``rows`` rows (one row per prompt)."""
    from PIL import Image as PILImage

    cols = max(1, -(-len(images) // rows))
    w, h = images[0].size
    canvas = PILImage.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        canvas.paste(im, ((i % cols) * w, (i // cols) * h))
    return canvas


def save_images(path: Path, images: list[Image.Image]) -> None:
    """Images as one uint8 tensor (N, H, W, 3) in a safetensors file, written atomically."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    arr = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images]))
    write_file(path, lambda tmp: save_file({"images": arr.contiguous()}, str(tmp)))


def load_images(path: Path) -> list[Image.Image]:
    from PIL import Image as PILImage
    from safetensors.torch import load_file

    return [PILImage.fromarray(a.numpy()) for a in load_file(str(path))["images"]]
