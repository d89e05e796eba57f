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
- ``style_gram``: Gram-matrix style statistics (Gatys et al. 2016) of the judge's intermediate image features: per
  sample, how much of its base sample's distance to the references' mean Gram matrices the LoRA closed,
  ``(d(base) - d(sample)) / mean d(base)`` (0: no change, 1: the references' feature statistics exactly, < 0: further
  away). A Gram matrix averages over positions, so it keeps texture and palette statistics and drops where things
  are: the review's own reference for a content-invariant style descriptor. NaN for a judge whose image tower gives
  no intermediate features (open_clip's ``forward_intermediates``).
- ``content_choice``, ``content_choice_delta``, ``content_leak``, ``content_structure``: the content checks a style
  cannot fake (zero-shot choice of the prompt among its alternatives, leakage of the references' captions,
  structure kept against the base sample): see ``autolora.scoring.content``.
- ``content_choice_kept``, ``content_text_kept``: ``content_choice_delta`` and ``content_text_ratio`` net of what the
  style itself costs them, read on the references against the base model's renderings of their captions (a style
  that hides the subject from the judge costs a restyled subject its reading too; with no captions, nothing is
  netted), in proportion to how much of the style the sample learnt (``style_auto`` clipped to [0, 1]): 0 and 1 for
  a sample restyled as well as the references and otherwise the same subject.
- ``style_probe``: the sample's move from its base sample along a linear probe fitted to tell the references from
  the base model's renderings of their captions (``autolora.scoring.selfcheck.probe``).
- ``style_intro``: IntroStyle (``autolora.models.features``): how much of its base sample's 2-Wasserstein distance
  to the references' mean denoiser statistics the sample closed, read by the base diffusion model itself (0: no
  change, 1: the references' statistics); NaN when ``eval.intro_style`` is off.
- ``style_csd``: the same with a CSD style model's embeddings (``autolora.scoring.csd``, ``eval.style_model``); NaN
  without one.
- ``style_auto``: the mean, over the style terms that pass the judge's self-check at ``prepare``
  (``autolora.scoring.selfcheck``), of each term over its value on held-out references: 1 means the samples moved
  as far as the references are from the base model, by the terms that can see this style.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.errors import UserError, closest
from autolora.models.builtin import BUILTINS, PREFIX, builtin_path, is_builtin
from autolora.scoring.base import Scorer
from autolora.scoring.content import alternatives, self_similarity
from autolora.scoring.selfcheck import Stats, TermCheck, auto_terms, check_terms, gram_distance, probe

if TYPE_CHECKING:
    import torch
    from PIL import Image


Reader = Callable[[list["Image.Image"]], Stats]
"""Pictures -> one statistic per picture (``selfcheck.Stats``)."""
READ_TERMS = ("style_intro", "style_csd")
"""The style terms read by a reader other than the judge (``ClipStyleContentScorer(readers=...)``)."""

MOST_TEXT_COST = 0.25
"""The lowest share of the base's prompt agreement a style's own cost may allow (``_style_cost``)."""


def open_clip_model(model: str, pretrained: str | None, what: str = "CLIP model") -> tuple[str, str | None]:
    """An open_clip model name and its weights from what a user writes: a name open_clip knows, a model config
    ``.json`` (registered with open_clip), or ``builtin:NAME`` (its config registered, its weights the default)."""
    import open_clip

    if is_builtin(model):
        name = model.removeprefix(PREFIX)
        if name not in BUILTINS or BUILTINS[name].kind != "clip":
            clips = [PREFIX + n for n, b in BUILTINS.items() if b.kind == "clip"]
            raise UserError(f"{what} '{model}': no such built-in{closest(model, clips)}")
        folder = builtin_path(model)
        open_clip.add_model_config(folder / f"{name}.json")
        return name, pretrained or str(folder / "open_clip_model.safetensors")
    if model.endswith(".json"):
        if not Path(model).is_file():
            raise UserError(f"{what} config {model}: no such file")
        open_clip.add_model_config(model)
        model = Path(model).stem
    if model not in open_clip.list_models():
        raise UserError(f"{what} '{model}': unknown to open_clip{closest(model, open_clip.list_models())}")
    return model, pretrained


class ClipJudge:
    """An open_clip model loaded once: image and text embeddings (normalised)."""

    def __init__(self, model: str, pretrained: str | None, device: str = "cpu") -> None:
        import open_clip

        model, pretrained = open_clip_model(model, pretrained)
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
        self._gram_layers: list[int] | None = None
        self._middle = 0
        scale = getattr(self.model, "logit_scale", None)
        self.logit_scale = float(scale.detach().exp()) if scale is not None else 100.0
        """The temperature the judge was trained at: zero-shot probabilities at its own sharpness."""
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device = device
        self.name = f"{model}:{Path(pretrained).name if pretrained else 'random'}"

    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        import torch

        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        with torch.no_grad():
            emb = self.model.encode_image(batch).float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu()

    def grams(self, images: list[Image.Image]) -> list[torch.Tensor] | None:
        """Per image, the Gram matrices of up to 4 of the image tower's blocks spread over its depth (as Gatys's
        conv1_1-conv5_1): one ``(N, C, C)`` tensor per block; None when the tower has no intermediates.

        The features are centred per image and channel first (a covariance): uncentred, the mean feature's outer
        product dominates and the matrix mostly says which colours the picture has. Measured on miniworld (4 styles,
        the judge's 3 blocks): pictures in the style closed 0.17-0.56 of the distance centred (0.21-0.48 uncentred),
        the references' subject without the style -0.02 to -0.17 centred (-0.00 to +0.04 uncentred)."""
        return self.inner(images)[0]

    def structure(self, images: list[Image.Image]) -> torch.Tensor | None:
        """Per image, the flattened self-similarity of the patch tokens of the image tower's middle block
        (``autolora.scoring.content.self_similarity``); None when the tower has no intermediates."""
        return self.inner(images)[1]

    def inner(self, images: list[Image.Image]) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
        """``grams`` and ``structure`` from one pass of the image tower (both read its intermediate blocks)."""
        import torch

        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        try:
            with torch.no_grad():
                if self._gram_layers is None:
                    probe = self.model.forward_intermediates(image=batch[:1], intermediates_only=True)
                    n = len(probe["image_intermediates"])
                    self._gram_layers = sorted({round(i * (n - 1) / 3) for i in range(4)})
                    self._middle = (n - 1) // 2
                layers = sorted({*self._gram_layers, self._middle})
                out = self.model.forward_intermediates(image=batch, image_indices=layers, intermediates_only=True)
        except (AttributeError, NotImplementedError, TypeError, KeyError):
            return None, None
        by_layer = dict(zip(layers, out["image_intermediates"], strict=True))
        grams = []
        for layer in self._gram_layers:
            f = by_layer[layer].float().flatten(2)  # (N, C, H*W): features by position
            f = f - f.mean(-1, keepdim=True)
            grams.append((f @ f.transpose(1, 2) / f.shape[-1]).cpu())
        return grams, self_similarity(by_layer[self._middle]).cpu()

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
        "style_gram",
        "content_choice",
        "content_choice_delta",
        "content_choice_kept",
        "content_text_kept",
        "content_leak",
        "content_structure",
        "style_probe",
        "style_intro",
        "style_csd",
        "style_auto",
    )

    def __init__(self, judge: ClipJudge, readers: Mapping[str, Reader] | None = None) -> None:
        """``readers``: term -> another reader of pictures' style statistics, for the terms the judge alone cannot
        give: ``style_intro`` (the base model's own features, ``autolora.models.features``), ``style_csd`` (a CSD
        style model, ``autolora.scoring.csd``); a term without one has no reading (NaN)."""
        unknown = sorted(set(readers or {}) - set(READ_TERMS))
        if unknown:
            raise ValueError(f"no style term {unknown} reads pictures through a reader (known: {READ_TERMS})")
        self.judge = judge
        self.readers = dict(readers or {})
        self._ready: dict[str, Any] = {}
        self.checks: list[TermCheck] = []
        """The judge's self-check of each style term (``autolora.scoring.selfcheck``), set by ``prepare``."""
        self.auto: list[TermCheck] = []
        """The terms ``style_auto`` averages."""
        self.paired = False
        self.style_cost: dict[str, float] = {}
        """What the style itself costs the content readings (``_style_cost``), set by ``prepare``."""

    def prepare(
        self,
        references: list[Image.Image],
        prompts: list[str],
        n_seeds: int,
        base_samples: list[Image.Image],
        anchors: list[Image.Image] | None = None,
        captions: list[str] | None = None,
    ) -> None:
        """``anchors``: the base model's rendering of each reference's caption (same order), if captioned;
        ``captions``: those captions (the content checks' alternatives and leakage target)."""
        import torch

        ref = self.judge.embed_images(references)
        centroid = torch.nn.functional.normalize(ref.mean(0), dim=-1)
        text = self.judge.embed_texts(prompts).repeat_interleave(n_seeds, dim=0)
        base = self.judge.embed_images(base_samples)
        if anchors is not None:
            if len(anchors) != len(references):
                raise ValueError(f"expected one anchor per reference ({len(references)}), got {len(anchors)}")
            negatives = self.judge.embed_images(anchors)
        else:
            negatives = base
        direction = ref.mean(0) - negatives.mean(0)
        ref_grams = self.judge.grams(references)
        base_grams, base_structure = self.judge.inner(base_samples)
        base_stats: dict[str, Stats] = {}
        stats: dict[str, tuple[Stats, Stats]] = {}
        if ref_grams is not None and base_grams is not None:
            base_stats["style_gram"] = base_grams
            stats["style_gram"] = (ref_grams, base_grams if anchors is None else self.judge.grams(anchors) or [])
        for term, read in self.readers.items():
            base_stats[term] = read(base_samples)
            stats[term] = (read(references), base_stats[term] if anchors is None else read(anchors))
        self.checks = check_terms(ref, negatives, stats, paired=anchors is not None)
        self.paired = anchors is not None
        self.auto = auto_terms(self.checks)
        ref_means = {term: [g.mean(0) for g in pair[0]] for term, pair in stats.items()}
        self._ready = {
            "ref_stats": ref_means,
            "base_distance": {t: gram_distance(base_stats[t], ref_means[t]) for t in stats},
        }
        captions = [c for c in captions or [] if c.strip()]
        rivals = [self.judge.embed_texts(texts) for texts in alternatives(prompts, captions)]
        caption_text = (
            torch.nn.functional.normalize(self.judge.embed_texts(captions).mean(0), dim=-1) if captions else None
        )
        self._ready.update(
            {
                "n_seeds": n_seeds,
                "prompts": list(prompts),
                "rivals": rivals,
                "caption_text": caption_text,
                "base_structure": base_structure,
                "centroid": centroid,
                "text": text,
                "base": base,
                "direction": torch.nn.functional.normalize(direction, dim=-1),
                "probe": probe(ref, negatives),
                "style_base": float((base @ centroid).mean()),
                "content_text_base": float((base * text).sum(-1).mean()),
            }
        )
        self._ready["base_choice"] = self._choice(base)
        self.style_cost = self._style_cost(ref, negatives if anchors is not None else None, captions)
        self._ready.update(self.style_cost)

    def _choice(self, emb: torch.Tensor, rivals: list[torch.Tensor] | None = None, per: int = 0) -> torch.Tensor:
        """Per sample, the judge's zero-shot probability of its prompt among the prompt's alternatives (``rivals``:
        the prompt's, then its alternatives', embeddings per prompt; ``per``: samples per prompt)."""
        import torch

        r = self._ready
        rivals, per = (rivals, per) if rivals is not None else (r["rivals"], r["n_seeds"])
        out = [torch.softmax(self.judge.logit_scale * (rivals[i // per] @ e), dim=0)[0] for i, e in enumerate(emb)]
        return torch.stack(out)

    def _style_cost(self, ref: torch.Tensor, anchors: torch.Tensor | None, captions: list[str]) -> dict[str, float]:
        """What the style itself costs the judge's reading of content: the references' choice of their own caption
        and agreement with it, against the base model's renderings of the same captions (else its samples of the
        prompts). A sample restyled as well as the references loses this much and no more; without captions on
        every reference, nothing (0 and 1)."""

        r = self._ready
        if not captions or len(captions) != len(ref):
            return {"choice_cost": 0.0, "text_cost": 1.0}
        distinct = list(dict.fromkeys(c.strip() for c in captions))
        embedded = {t[0]: self.judge.embed_texts(t) for t in alternatives(distinct, r.get("prompts", []))}
        rivals = [embedded[c.strip()] for c in captions]
        own = self.judge.embed_texts(captions)
        ref_choice = float(self._choice(ref, rivals, 1).mean())
        ref_text = float((ref * own).sum(-1).mean())
        if anchors is not None:
            base_choice = float(self._choice(anchors, rivals, 1).mean())
            base_text = float((anchors * own).sum(-1).mean())
        else:
            base_choice, base_text = float(r["base_choice"].mean()), r["content_text_base"]
        # A judge that reads no content at all (cosines at or under 0: a random judge) nets nothing; a style may cost
        # at most three quarters of the agreement, so the allowance stays a ratio and never a division by zero.
        text_cost = min(1.0, max(MOST_TEXT_COST, ref_text / base_text)) if base_text > 1e-6 and ref_text > 0 else 1.0
        return {
            "choice_cost": min(0.0, ref_choice - base_choice),
            "text_cost": text_cost,
            "reference_choice": ref_choice,
        }

    def _closed(self, term: str, stats: Stats | None, n: int) -> list[float]:
        """Per sample, how much of its base sample's distance to the references' mean statistics (``gram_distance``)
        the sample closed, over the base samples' mean distance; NaN without the statistics."""
        r = self._ready
        base = r["base_distance"].get(term)
        if stats is None or base is None:
            return [float("nan")] * n
        dist = gram_distance(stats, r["ref_stats"][term])
        return ((base - dist) / base.mean().clamp_min(1e-12)).tolist()

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
        grams, structure = self.judge.inner(samples)  # one pass of the image tower for both
        terms = {
            "style_gain": (style - r["style_base"]).tolist(),
            "style_direction": direction.tolist(),
            "style_gram": self._closed("style_gram", grams, n),
            "style_probe": (moved @ r["probe"]).tolist(),
        }
        for term in READ_TERMS:
            read = self.readers.get(term)
            terms[term] = self._closed(term, read(samples) if read is not None else None, n)
        if self.auto:
            auto = [sum(terms[c.term][i] / c.scale for c in self.auto) / len(self.auto) for i in range(n)]
        else:  # no term moves references away from the base model at all (setup warned): the plain gain
            auto = terms["style_gain"]
        choice = self._choice(emb)
        # The style's own cost on the content readings is allowed in proportion to how much of the style a sample
        # learnt (``style_auto``, 1: as far as the references), so a weak style cannot hide a lost subject behind it.
        learnt = torch.tensor(auto).clamp(0.0, 1.0)
        ratio = content_text / max(r["content_text_base"], 1e-6)
        if r["caption_text"] is None:
            leak = [float("nan")] * n
        else:
            toward = (emb - r["base"]) @ r["caption_text"] - ((emb - r["base"]) * r["text"]).sum(-1)
            leak = toward.tolist()
        kept = (
            [float("nan")] * n
            if structure is None or r["base_structure"] is None
            else (structure * r["base_structure"]).sum(-1).tolist()
        )
        return {
            "content_choice": choice.tolist(),
            "content_choice_delta": (choice - r["base_choice"]).tolist(),
            "content_choice_kept": (choice - r["base_choice"] - r["choice_cost"] * learnt).tolist(),
            "content_text_kept": (ratio / (1 - (1 - r["text_cost"]) * learnt)).tolist(),
            "content_leak": leak,
            "content_structure": kept,
            **terms,
            "style_auto": auto,
            "style_fidelity": style.tolist(),
            "style_base": [r["style_base"]] * n,
            "content_text": content_text.tolist(),
            "content_text_delta": (content_text - r["content_text_base"]).tolist(),
            "content_text_ratio": (content_text / max(r["content_text_base"], 1e-6)).tolist(),
            "content_base": (emb * r["base"]).sum(-1).tolist(),
        }
