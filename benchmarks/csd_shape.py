"""CSD's loader at CSD's real shape: a ViT-L/14 checkpoint in CSD's release layout with random weights (about
1.2 GB, written to a temporary folder and deleted), loaded by ``autolora.scoring.csd.CsdReader`` and read on 8
pictures; prints the load and read times and the embedding shape. No CSD weights are reachable offline, so this is
what says the loader takes the real model's keys and shapes (the tests use the tiny built-in tower).

    python -m benchmarks.csd_shape     # ~1 minute on the 2-core CPU
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def main() -> int:
    import open_clip
    import torch
    from PIL import Image

    from autolora.scoring.csd import DEFAULT_ARCH, CsdReader

    t0 = time.perf_counter()
    visual = open_clip.create_model(DEFAULT_ARCH, pretrained=None, force_quick_gelu=True).visual
    width, dim = int(visual.ln_post.weight.shape[0]), int(visual.proj.shape[1])
    state = {f"module.backbone.{k}": v for k, v in visual.state_dict().items() if k != "proj"}
    gen = torch.Generator().manual_seed(0)
    state["module.last_layer_style"] = torch.randn(width, dim, generator=gen) / width**0.5
    state["module.last_layer_content"] = torch.randn(width, dim, generator=gen) / width**0.5
    del visual
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pth"
        torch.save({"model_state_dict": state, "epoch": 0}, path)
        size = path.stat().st_size
        del state
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        reader = CsdReader(path)
        loaded = time.perf_counter() - t0
    pictures = [Image.new("RGB", (512, 512), (30 * i, 200 - 20 * i, 90)) for i in range(8)]
    t0 = time.perf_counter()
    (emb,) = reader(pictures)
    read = time.perf_counter() - t0
    print(f"CSD {DEFAULT_ARCH} checkpoint (random weights, CSD's layout): {size / 1e9:.2f} GB, built in {built:.0f} s")
    print(f"loaded through open_clip in {loaded:.1f} s; 8 pictures read in {read:.1f} s -> {tuple(emb.shape)}, "
          f"norms {emb.norm(dim=1).min():.3f}-{emb.norm(dim=1).max():.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
