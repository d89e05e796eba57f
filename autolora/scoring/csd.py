"""An optional style model: CSD (Somepalli et al. 2024, "Measuring Style Similarity in Diffusion Models"), loaded
through open_clip from a checkpoint file the user supplies (``eval.style_model``; nothing is downloaded).

CSD is CLIP ViT-L/14's image tower (OpenAI's, QuickGELU) fine-tuned for style, its output projection replaced by
two heads, ``last_layer_style`` and ``last_layer_content``. Its released ``checkpoint.pth`` holds
``model_state_dict`` with ``backbone.*`` (the tower, OpenAI's key names, which are open_clip's too),
``last_layer_style`` and ``last_layer_content`` (``(width, dim)`` matrices), keys possibly prefixed ``module.`` (it
was saved from DataParallel). A safetensors file with the same keys loads too.

The reader gives, per picture, the normalised style embedding as a one-block statistic (``(N, dim)``), so the
scorer's ``style_csd`` is the share of its base sample's distance to the references' mean embedding a sample
closed (the distance of unit vectors to a mean is monotone in their cosine to it), self-checked like every term.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.errors import UserError
from autolora.scoring.clip import open_clip_model

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEFAULT_ARCH = "ViT-L-14"
"""CSD's released model."""


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _state(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: Any = load_file(str(path))
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"eval.style_model {path}: not a readable checkpoint ({type(e).__name__})") from None
    if isinstance(raw, dict) and isinstance(raw.get("model_state_dict"), dict):
        raw = raw["model_state_dict"]
    if not isinstance(raw, dict):
        raise UserError(f"eval.style_model {path}: expected a state dict (CSD's checkpoint.pth)")
    return {k.removeprefix("module."): v for k, v in raw.items() if isinstance(v, torch.Tensor)}


class CsdReader:
    """``reader(images)`` -> ``[(N, dim)]`` normalised CSD style embeddings."""

    def __init__(self, path: str | Path, arch: str = DEFAULT_ARCH, device: str = "cpu") -> None:
        import open_clip

        path = Path(path)
        if not path.is_file():
            raise UserError(f"eval.style_model {path}: no such file")
        arch, _ = open_clip_model(arch, None, "eval.style_model_arch")
        state = _state(path)
        if "last_layer_style" not in state or not any(k.startswith("backbone.") for k in state):
            raise UserError(
                f"eval.style_model {path}: expected CSD's keys (backbone.*, last_layer_style), found "
                f"{', '.join(sorted(state)[:3]) or 'none'}"
            )
        # OpenAI's CLIP towers use QuickGELU; open_clip's plain ViT-L-14 config would not match CSD's weights.
        with _quiet_open_clip():  # it warns that the model starts random: CSD's weights are loaded next
            model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True)
        visual = model.visual
        visual.proj = None  # CSD's heads replace the projection
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        backbone.pop("proj", None)
        try:
            missing, unexpected = visual.load_state_dict(backbone, strict=False)
        except RuntimeError as e:
            raise UserError(f"eval.style_model {path}: does not fit open_clip's {arch} ({str(e)[:160]})") from None
        if missing or unexpected:
            what = f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}"
            raise UserError(f"eval.style_model {path}: does not fit open_clip's {arch} ({what})")
        self.head = state["last_layer_style"].float().to(device)
        width = int(visual.ln_post.weight.shape[0])
        if self.head.dim() != 2 or self.head.shape[0] != width:
            raise UserError(
                f"eval.style_model {path}: last_layer_style has shape {tuple(self.head.shape)}, expected ({width}, d)"
            )
        self.visual = visual.to(device).eval()
        self.preprocess = open_clip.image_transform(visual.image_size, is_train=False)
        self.device = device
        self.name = f"CSD {arch}:{path.name}"

    def __call__(self, images: list[Image.Image]) -> list[torch.Tensor]:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(images), 16):
                batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images[i : i + 16]])
                pooled = self.visual(batch.to(self.device)).float()
                out.append(torch.nn.functional.normalize(pooled @ self.head, dim=-1))
        return [torch.cat(out).cpu()]
