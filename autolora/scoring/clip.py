"""CLIP through open_clip: the judge, and the style/content scorer built on it.

Metrics (all cosine similarities of L2-normalised CLIP embeddings, so in [-1, 1]):

- ``style_fidelity``: mean over samples of cos(sample, style centroid), where the centroid is the
  normalised mean embedding of the style reference images.
- ``style_base``: the same for the base model's samples (a constant of the study).
- ``style_gain``: ``style_fidelity - style_base``: how much closer to the references the LoRA
  moved the samples than the base model already was. 0 means no style learnt.
- ``content_text``: mean cos(sample, text of its content prompt without the trigger) (CLIPScore
  without the 2.5 factor).
- ``content_text_delta``: ``content_text`` minus the same for the base samples: how much prompt
  agreement the LoRA cost (usually <= 0).
- ``content_text_ratio``: ``content_text`` over the same for the base samples: the share of the base's prompt
  agreement kept (1 kept all; the content constraint's metric: a ratio carries across judges whose cosines sit at
  other levels better than a difference does).
- ``content_base``: mean cos(sample, base sample of the same prompt and seed): 1 means the LoRA
  changed nothing.
- ``style_direction``: directional CLIP similarity (as in StyleGAN-NADA): mean over samples of
  cos(sample - base sample of the same prompt and seed, style direction), where the style direction is
  the mean of (reference - base model's rendering of that reference's caption). Both differences hold
  the content fixed, so a LoRA that paints the references' subjects instead of their style gains
  nothing here, while ``style_fidelity`` (plain similarity to the centroid) rewards it. Without
  captions the anchors are the base samples of the evaluation prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.errors import UserError, closest
from autolora.scoring.base import Scorer

if TYPE_CHECKING:
    import torch
    from PIL import Image


class ClipJudge:
    """An open_clip model loaded once: image and text embeddings (normalised)."""

    def __init__(self, model: str, pretrained: str | None, device: str = "cpu") -> None:
        import open_clip

        from autolora.models.builtin import BUILTINS, PREFIX, builtin_path, is_builtin

        if is_builtin(model):
            name = model.removeprefix(PREFIX)
            if name not in BUILTINS or BUILTINS[name].kind != "clip":
                clips = [PREFIX + n for n, b in BUILTINS.items() if b.kind == "clip"]
                raise UserError(f"CLIP model '{model}': no such built-in{closest(model, clips)}")
            folder = builtin_path(model)
            open_clip.add_model_config(folder / f"{name}.json")
            model, pretrained = name, pretrained or str(folder / "open_clip_model.safetensors")
        elif model.endswith(".json"):
            if not Path(model).is_file():
                raise UserError(f"CLIP model config {model}: no such file")
            open_clip.add_model_config(model)
            model = Path(model).stem
        if model not in open_clip.list_models():
            raise UserError(f"CLIP model '{model}': unknown to open_clip{closest(model, open_clip.list_models())}")
        looks_like_file = pretrained and ("/" in pretrained or pretrained.endswith((".safetensors", ".bin", ".pt")))
        if looks_like_file and not Path(str(pretrained)).is_file():
            raise UserError(f"CLIP checkpoint {pretrained}: no such file")
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained, device=device
            )
        except Exception as e:
            raise UserError(
                f"CLIP model '{model}' with weights '{pretrained}' could not be loaded "
                f"({type(e).__name__}: {str(e)[:120]}); offline, give a local checkpoint file"
            ) from None
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device = device
        self.name = f"{model}:{Path(pretrained).name if pretrained else 'random'}"

    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        import torch

        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        with torch.no_grad():
            emb = self.model.encode_image(batch).float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu()

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        import torch

        tokens = self.tokenizer(texts).to(self.device)
        with torch.no_grad():
            emb = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu()


class ClipStyleContentScorer(Scorer):
    """Style fidelity and content preservation from one CLIP judge (see the module docstring)."""

    metrics = (
        "style_fidelity",
        "style_base",
        "style_gain",
        "style_direction",
        "content_text",
        "content_text_delta",
        "content_text_ratio",
        "content_base",
    )

    def __init__(self, judge: ClipJudge) -> None:
        self.judge = judge
        self._ready: dict[str, Any] = {}

    def prepare(
        self,
        references: list[Image.Image],
        prompts: list[str],
        n_seeds: int,
        base_samples: list[Image.Image],
        anchors: list[Image.Image] | None = None,
    ) -> None:
        """``anchors``: the base model's rendering of each reference's caption (same order), if captioned."""
        import torch

        ref = self.judge.embed_images(references)
        centroid = torch.nn.functional.normalize(ref.mean(0), dim=-1)
        text = self.judge.embed_texts(prompts).repeat_interleave(n_seeds, dim=0)
        base = self.judge.embed_images(base_samples)
        if anchors is not None:
            if len(anchors) != len(references):
                raise ValueError(f"expected one anchor per reference ({len(references)}), got {len(anchors)}")
            direction = (ref - self.judge.embed_images(anchors)).mean(0)
        else:
            direction = ref.mean(0) - base.mean(0)
        self._ready = {
            "centroid": centroid,
            "text": text,
            "base": base,
            "direction": torch.nn.functional.normalize(direction, dim=-1),
            "style_base": float((base @ centroid).mean()),
            "content_text_base": float((base * text).sum(-1).mean()),
        }

    def score(self, samples: list[Image.Image]) -> dict[str, float]:
        """The metrics, averaged over the samples (``score_each`` gives them per sample)."""
        return {k: sum(v) / len(v) for k, v in self.score_each(samples).items()}

    def score_each(self, samples: list[Image.Image]) -> dict[str, list[float]]:
        """Every metric for every sample (prompt-major, in the order of the base samples)."""
        import torch

        if not self._ready:
            raise RuntimeError("ClipStyleContentScorer.score called before prepare")
        r = self._ready
        emb = self.judge.embed_images(samples)
        if emb.shape != r["base"].shape:
            raise ValueError(f"expected {r['base'].shape[0]} samples, got {emb.shape[0]}")
        style = emb @ r["centroid"]
        content_text = (emb * r["text"]).sum(-1)
        moved = emb - r["base"]
        norm = moved.norm(dim=-1)
        # An unchanged sample has no direction: it contributes 0, not noise.
        direction = torch.where(norm > 1e-6, (moved @ r["direction"]) / norm.clamp_min(1e-6), torch.zeros_like(norm))
        n = len(samples)
        return {
            "style_fidelity": style.tolist(),
            "style_base": [r["style_base"]] * n,
            "style_gain": (style - r["style_base"]).tolist(),
            "style_direction": direction.tolist(),
            "content_text": content_text.tolist(),
            "content_text_delta": (content_text - r["content_text_base"]).tolist(),
            "content_text_ratio": (content_text / max(r["content_text_base"], 1e-6)).tolist(),
            "content_base": (emb * r["base"]).sum(-1).tolist(),
        }
