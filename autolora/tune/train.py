"""The training loop of one trial, and the per-study training data it reads.

Latents of the style images (per aspect-ratio bucket) and the text embeddings of their captions are
computed once per study (``TrainData.build``), saved in the run folder and reused by every trial and every
worker process. The loss is the model family's (``autolora.models.family``: epsilon/v prediction for UNets,
flow matching for SD3 and Flux); gradient checkpointing and mixed precision are options.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.atomic import write_file
from autolora.buckets import Bucket, square
from autolora.errors import TrialFailed
from autolora.images import to_tensor
from autolora.methods.base import TEXT_ENCODERS
from autolora.models.family import denoiser, denoiser_name, encode_prompts, make_loss

if TYPE_CHECKING:
    import torch

    from autolora.data import StyleSet
    from autolora.tune.search import LoraSpec


@dataclass
class TrainData:
    """Cached per study: latent distributions of the style images (per bucket) and caption embeddings."""

    latent_mean: list[torch.Tensor]
    """Per bucket: (n_b, C, h, w) means of the VAE's latent distribution of the bucket's pictures."""
    latent_std: list[torch.Tensor]
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor | None
    captions: list[str]
    resolution: int
    members: list[list[int]]
    """Per bucket: the indices (into ``captions``/``prompt_embeds``) of its pictures."""
    buckets: list[Bucket]
    trigger_row: int = -1
    """The row of ``captions``/``prompt_embeds`` that holds the trigger alone (``caption_mode: trigger``); after
    the pictures' rows."""
    empty_row: int = -1
    """The row of the empty caption (``caption_dropout``)."""

    @classmethod
    def build(
        cls,
        pipe: Any,
        style: StyleSet,
        trigger: str,
        resolution: int,
        device: str,
        buckets: list[Bucket] | None = None,
        bucket_of: list[int] | None = None,
    ) -> TrainData:
        import torch

        buckets = buckets or [square(resolution)]
        bucket_of = bucket_of if bucket_of is not None else [0] * len(style.images)
        members = [[i for i, b in enumerate(bucket_of) if b == k] for k in range(len(buckets))]
        captions = [f"{c}, {trigger}" if c and trigger else c or trigger for c in style.captions]
        # Two more rows after the pictures': the trigger alone and the empty caption, for the caption settings.
        captions += [trigger, ""]
        vae = pipe.vae
        dtype = vae.dtype
        vae.to(torch.float32)  # the SDXL VAE overflows in fp16; encode once in fp32
        means, stds = [], []
        with torch.no_grad():
            for bucket, idx in zip(buckets, members, strict=True):
                pixels = torch.stack([to_tensor(style.images[i], bucket) for i in idx])
                m, sd = [], []
                for i in range(0, len(pixels), 8):
                    dist = vae.encode(pixels[i : i + 8].to(device, torch.float32)).latent_dist
                    m.append(dist.mean.cpu())
                    sd.append(dist.std.cpu())
                means.append(torch.cat(m))
                stds.append(torch.cat(sd))
            cond = encode_prompts(pipe, captions, device)
        vae.to(dtype)
        pooled = cond.get("pooled")
        return cls(
            means,
            stds,
            cond["prompt_embeds"].float().cpu(),
            pooled.float().cpu() if pooled is not None else None,
            captions,
            resolution,
            members,
            list(buckets),
            trigger_row=len(captions) - 2,
            empty_row=len(captions) - 1,
        )

    def save(self, path: Path) -> None:
        import json

        from safetensors.torch import save_file

        tensors = {"prompt_embeds": self.prompt_embeds}
        for k, (mean, std) in enumerate(zip(self.latent_mean, self.latent_std, strict=True)):
            tensors[f"latent_mean.{k}"] = mean
            tensors[f"latent_std.{k}"] = std
        if self.pooled is not None:
            tensors["pooled"] = self.pooled
        meta = {
            "captions": "\n".join(self.captions),
            "resolution": str(self.resolution),
            "buckets": json.dumps([[b.width, b.height] for b in self.buckets]),
            "members": json.dumps(self.members),
            "rows": json.dumps({"trigger": self.trigger_row, "empty": self.empty_row}),
        }
        write_file(
            path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        )

    @classmethod
    def load(cls, path: Path) -> TrainData:
        import json

        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        buckets = [Bucket(w, h) for w, h in json.loads(meta["buckets"])]
        rows = json.loads(meta.get("rows", '{"trigger": -1, "empty": -1}'))
        return cls(
            [t[f"latent_mean.{k}"] for k in range(len(buckets))],
            [t[f"latent_std.{k}"] for k in range(len(buckets))],
            t["prompt_embeds"],
            t.get("pooled"),
            meta["captions"].split("\n"),
            int(meta["resolution"]),
            json.loads(meta["members"]),
            buckets,
            trigger_row=int(rows["trigger"]),
            empty_row=int(rows["empty"]),
        )

    def caption_rows(self, index: torch.Tensor, mode: str, dropout: float, gen: torch.Generator) -> torch.Tensor:
        """The caption rows of a batch of pictures: their own captions (``content``) or the trigger alone
        (``trigger``), each replaced by the empty caption with probability ``dropout`` (kohya's
        ``caption_dropout_rate``; the random numbers are drawn only when it is above 0, so a trial without it
        draws the same batches as before it existed)."""
        import torch

        if (mode != "content" or dropout > 0) and self.trigger_row < 0:
            raise ValueError("these cached captions predate caption_mode and caption_dropout: rebuild the cache")
        rows = index.clone() if mode == "content" else torch.full_like(index, self.trigger_row)
        if dropout > 0:
            rows[torch.rand(len(index), generator=gen) < dropout] = self.empty_row
        return rows

    def draw(self, bsz: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch within one bucket (chosen in proportion to its pictures): latents sampled from their
        distributions (unscaled) and the pictures' indices."""
        import torch

        k = 0
        if len(self.members) > 1:
            weights = torch.tensor([len(m) for m in self.members], dtype=torch.float32)
            k = int(torch.multinomial(weights, 1, generator=gen))
        mean, std = self.latent_mean[k], self.latent_std[k]
        local = torch.randint(0, mean.shape[0], (bsz,), generator=gen)
        eps = torch.randn(mean[local].shape, generator=gen)
        index = torch.tensor(self.members[k])[local]
        return mean[local] + std[local] * eps, index


@dataclass
class TrainSettings:
    """Per-study settings that are not searched."""

    seed: int = 0
    max_grad_norm: float = 1.0
    noise_offset: float = 0.0
    gradient_checkpointing: bool = False
    autocast_dtype: Any = None  # torch dtype for autocast on CUDA, or None


def _autocast(dtype: Any) -> Any:
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def train_lora(
    pipe: Any,
    spec: LoraSpec,
    data: TrainData,
    settings: TrainSettings,
    device: str,
    on_step: Callable[[int, float], None] | None = None,
    on_eval: Callable[[int], None] | None = None,
    eval_every: int = 0,
    attached: list[str] | None = None,
    prompt: Callable[[str], str] | None = None,
    prior: TrainData | None = None,
    prior_weight: float = 0.0,
) -> list[float]:
    """Train the adapter already attached to ``pipe`` for ``spec['steps']`` steps; return the loss curve.

    What trains, at which learning rate, is the method's (``spec.method.param_groups`` over the ``attached``
    components; by default the denoiser and the text encoders that have trainable weights). ``prompt`` rewrites a
    caption for the method (textual inversion writes its tokens); captions are then encoded at every step.
    ``prior`` (class pictures of the base model, ``Session.prior_data``) adds DreamBooth's prior-preservation loss
    at ``prior_weight``: a batch of them per step, the total is the loss reported.
    ``on_eval(step)`` runs every ``eval_every`` steps and after the last step (it may raise
    ``optuna.TrialPruned``). A non-finite loss raises ``TrialFailed``.
    """
    import torch
    from diffusers.optimization import get_scheduler

    model: Any = denoiser(pipe)  # a diffusers ModelMixin (UNet or transformer)
    if attached is None:
        attached = [denoiser_name(pipe)] + [
            n
            for n in TEXT_ENCODERS
            if getattr(pipe, n, None) is not None and any(p.requires_grad for p in getattr(pipe, n).parameters())
        ]
    text_encoders = [getattr(pipe, n) for n in attached if n in TEXT_ENCODERS]
    train_te = bool(text_encoders) or prompt is not None
    lr = float(spec["learning_rate"])
    groups = spec.method.param_groups(pipe, spec, attached)
    trainable = [p for g in groups for p in g["params"]]
    for p in trainable:
        p.data = p.data.float()  # trainable weights stay fp32 even when the base is half precision
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=float(spec["weight_decay"]))
    steps = int(spec["steps"])
    lr_sched = get_scheduler(
        spec["lr_scheduler"], optimizer, num_warmup_steps=int(steps * spec["warmup_ratio"]), num_training_steps=steps
    )
    use_fp16 = settings.autocast_dtype == torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_fp16 else None
    if settings.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    gen = torch.Generator("cpu").manual_seed(settings.seed)
    bsz = int(spec["batch_size"])
    loss_fn = make_loss(pipe, spec.loss_settings(settings.noise_offset), device)
    scaling = pipe.vae.config.scaling_factor
    shift = getattr(pipe.vae.config, "shift_factor", None) or 0.0
    eval_every = eval_every or max(1, math.ceil(steps / 4))
    losses: list[float] = []

    mode, dropout = str(spec["caption_mode"]), float(spec["caption_dropout"])

    def batch_loss(d: TrainData, rewrite: Callable[[str], str] | None, styled: bool = True) -> torch.Tensor:
        raw, idx = d.draw(bsz, gen)
        latents = (raw - shift) * scaling
        if styled:  # the caption settings are the style pictures'; the prior's pictures keep their prompts
            idx = d.caption_rows(idx, mode, dropout, gen)
        if train_te:
            captions = [d.captions[i] for i in idx.tolist()]
            cond = encode_prompts(pipe, [rewrite(c) if rewrite and c else c for c in captions], device)
        else:
            cond = {"prompt_embeds": d.prompt_embeds[idx]}
            if d.pooled is not None:
                cond["pooled"] = d.pooled[idx]
        return loss_fn(latents, cond, gen).mean()

    model.train()
    for te in text_encoders if train_te else []:
        te.train()
    try:
        for step in range(1, steps + 1):
            with _autocast(settings.autocast_dtype):
                loss = batch_loss(data, prompt)
                if prior is not None and prior_weight > 0:
                    # DreamBooth's prior preservation: the same loss on the base model's own class pictures.
                    loss = loss + prior_weight * batch_loss(prior, None, styled=False)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrialFailed(f"loss is {value} at step {step} (learning rate {lr:g} too high?)")
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            with torch.no_grad():
                spec.method.after_step(pipe, spec, attached)
            lr_sched.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(value)
            if on_step:
                on_step(step, value)
            if on_eval and (step % eval_every == 0 or step == steps):
                on_eval(step)
    finally:
        if settings.gradient_checkpointing:
            model.disable_gradient_checkpointing()
        model.eval()
        for te in text_encoders:
            te.eval()
    return losses
