"""What a process loads once and every trial reuses: pipeline, judge, caches.

The data caches (latents and caption embeddings of the style images, the base model's samples
of the evaluation prompts) are also written to the run folder, so other processes of the same
study (``process_per_trial``, workers) read them instead of computing them again.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.data import StyleSet
from autolora.diagnostics import diagnose_style_set, judge_findings
from autolora.models.loading import load_base
from autolora.sampling import load_images, sample, save_images
from autolora.scoring.clip import ClipJudge, ClipStyleContentScorer
from autolora.tune.plan import Plan
from autolora.tune.train import TrainData, TrainSettings

if TYPE_CHECKING:
    from autolora.core.findings import Finding


class PhaseTimer:
    """Wall time per named phase, summed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0


@dataclass
class Session:
    """The loaded base pipeline and judge, and the per-study caches."""

    plan: Plan
    pipe: Any
    judge: Any
    dtype: Any
    train_data: Any = None
    scorer: Any = None
    base_samples: list[Any] = field(default_factory=list)
    anchors: list[Any] | None = None
    """The base model's rendering of each reference's caption (None without captions)."""
    setup_seconds: float = 0.0
    csd: Any = None
    """The CSD style model (``eval.style_model``), loaded once."""
    priors: dict[str, Any] = field(default_factory=dict)
    """Prior-preservation data by class prompt, read once per process (``prior_data``)."""

    @classmethod
    def load(cls, plan: Plan) -> Session:
        """Load the pipeline and the CLIP judge (bad weights are a ``UserError``, nothing created yet)."""

        t0 = time.perf_counter()

        pipe, dtype = load_base(plan.model, plan.config.model, plan.device)
        judge = ClipJudge(plan.clip[0], plan.clip[1], device=plan.device)
        ev, csd = plan.config.eval, None
        if ev.style_model:
            from autolora.scoring.csd import CsdReader

            csd = CsdReader(ev.style_model, ev.style_model_arch, plan.device)
        return cls(plan=plan, pipe=pipe, judge=judge, dtype=dtype, csd=csd, setup_seconds=time.perf_counter() - t0)

    def prepare(self, cache_dir: Path) -> None:
        """Latents, caption embeddings, base samples and scorer references: once per study."""
        import torch

        t0 = time.perf_counter()
        plan, cfg = self.plan, self.plan.config
        key = self._data_key()
        cache_dir.mkdir(parents=True, exist_ok=True)
        train_path = cache_dir / f"train-{key}.safetensors"
        if train_path.exists():
            self.train_data = TrainData.load(train_path)
        else:
            self.train_data = TrainData.build(
                self.pipe, plan.style, cfg.data.trigger, plan.resolution, plan.device, plan.buckets, plan.bucket_of
            )
            self.train_data.save(train_path)
        sample_key = self._sample_key(key)
        base_path = cache_dir / f"base-samples-{sample_key}.safetensors"
        self.ensure_base_samples(cache_dir)
        if not base_path.exists():
            save_images(base_path, self.base_samples)
        anchors = self.ensure_anchors(cache_dir)
        if anchors is not None:
            anchor_path = cache_dir / f"anchors-{sample_key}.safetensors"
            if not anchor_path.exists():
                save_images(anchor_path, anchors)
        if self.scorer is None:  # diagnose prepared it already (the same base samples and anchors)
            self.scorer = self.new_scorer(self.base_samples)
        torch.set_grad_enabled(True)
        self.setup_seconds += time.perf_counter() - t0

    def ensure_anchors(self, cache_dir: Path) -> list[Any] | None:
        """The base model's own rendering of each reference's caption (None unless every reference has one): the
        content-only counterpart that ``style_direction`` subtracts and the judge's self-check tells the references
        from (``autolora.scoring``); kept, else read from ``cache_dir``, else drawn (``prepare`` writes them)."""

        plan = self.plan
        if self.anchors is None and all(plan.style.captions):
            path = cache_dir / f"anchors-{self._sample_key(self._data_key())}.safetensors"
            self.anchors = (
                load_images(path) if path.exists() else self.draw(plan.style.captions, plan.config.eval.seeds[:1])
            )
        return self.anchors

    def new_scorer(self, base_samples: list[Any]) -> Any:
        """The study's scorer, prepared against ``base_samples`` (the search's or the confirmation's seeds)."""

        plan = self.plan
        scorer = ClipStyleContentScorer(self.judge, self.readers())
        n_seeds = len(base_samples) // len(plan.prompts)
        scorer.prepare(plan.style.images, plan.prompts, n_seeds, base_samples, self.anchors, plan.style.captions)
        return scorer

    def readers(self) -> dict[str, Any]:
        """The style readers besides the judge: the base model's own (``style_intro``, unless ``eval.intro_style``
        is off; it reads with any trial's adapter switched off, ``autolora.methods.base_view``) and a CSD model
        (``style_csd``, with ``eval.style_model``, loaded by ``load``)."""
        ev, out = self.plan.config.eval, {}
        if ev.intro_style:
            from autolora.methods import base_view
            from autolora.models.features import DenoiserFeatures

            pipe = self.pipe
            out["style_intro"] = DenoiserFeatures(
                pipe, self.plan.device, self.plan.resolution, base_view=lambda: base_view(pipe)
            )
        if self.csd is not None:
            out["style_csd"] = self.csd
        return out

    def _data_key(self) -> str:
        plan, cfg = self.plan, self.plan.config
        items = [str(plan.model.folder), plan.style.fingerprint(), cfg.data.trigger, plan.resolution, str(self.dtype)]
        items.append("rows: trigger, empty")  # the cached captions' extra rows (caption_mode, caption_dropout)
        items.append([[b.width, b.height] for b in plan.buckets])  # also tells the per-bucket cache format apart
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]

    def _sample_key(self, data_key: str, seeds: list[int] | None = None) -> str:
        cfg = self.plan.config
        ev = cfg.eval
        seeds = seeds or ev.seeds
        items = [data_key, self.plan.prompts, seeds, ev.inference_steps, ev.guidance(), cfg.data.prompt_template]
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]

    def base_samples_for(self, seeds: list[int], cache_dir: Path) -> list[Any]:
        """The base model's samples of the evaluation prompts on other ``seeds`` (the confirmation's), cached."""

        path = cache_dir / f"base-samples-{self._sample_key(self._data_key(), seeds)}.safetensors"
        if path.exists():
            return load_images(path)
        images = self.draw(self.eval_prompts(), seeds)
        save_images(path, images)
        return images

    def ensure_base_samples(self, cache_dir: Path) -> list[Any]:
        """The base model's samples of the evaluation prompts: kept, else read from ``cache_dir``, else drawn
        (not written: ``prepare`` writes them, once the run folder may be created)."""

        if not self.base_samples:
            path = cache_dir / f"base-samples-{self._sample_key(self._data_key())}.safetensors"
            if path.exists():
                self.base_samples = load_images(path)
            else:
                self.base_samples = self.draw(self.eval_prompts(), self.plan.config.eval.seeds)
        return self.base_samples

    def prior_data(self, prompts: list[str], n: int, cache_dir: Path) -> Any:
        """The prior-preservation data: ``n`` pictures the base model draws of ``prompts`` (in turn; one seed a
        picture, at the training resolution), as latents and the prompts' embeddings; drawn once per study, prompts
        and number, cached (call it with no adapter attached)."""
        key = json.dumps([prompts, n])
        if key not in self.priors:  # every trial of a study asks for it: read the cache once per process
            self.priors[key] = self._prior_data(prompts, n, cache_dir)
        return self.priors[key]

    def prior_for(self, spec: Any) -> Any:
        """A trial's prior-preservation data (``prior_weight`` above 0), else None; before its adapter is attached."""
        if float(spec["prior_weight"]) <= 0:
            return None
        return self.prior_data(self.prior_prompts(spec), int(spec["prior_images"]), self.plan.run_dir / "cache")

    def train_settings(self) -> Any:
        """The per-study settings of the training loop (``TrainSettings``): seed, clipping, offset noise, gradient
        checkpointing and autocast as the config and the device say."""
        import torch

        cfg, device = self.plan.config, self.plan.device
        checkpointing = cfg.model.gradient_checkpointing
        return TrainSettings(
            seed=cfg.train.seed,
            max_grad_norm=cfg.train.max_grad_norm,
            noise_offset=cfg.train.noise_offset,
            gradient_checkpointing=checkpointing == "on" or (checkpointing == "auto" and device.startswith("cuda")),
            autocast_dtype=self.dtype if self.dtype != torch.float32 else None,
        )

    def prior_prompts(self, spec: Any) -> list[str]:
        """What the base model draws for a trial's prior: its ``class_prompt``, or (``prior_prompts: captions``)
        each style picture's content caption without the trigger, as kohya's regularisation images."""
        if str(spec["prior_prompts"]) == "captions":
            return list(self.plan.style.captions)
        return [str(spec["class_prompt"])]

    def _prior_data(self, prompts: list[str], n: int, cache_dir: Path) -> Any:
        plan, cfg = self.plan, self.plan.config
        items = [self._data_key(), prompts, n, cfg.eval.inference_steps, cfg.eval.guidance()]
        path = cache_dir / f"prior-{hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]}.safetensors"
        if path.exists():
            return TrainData.load(path)
        seeds = [10_000 + i for i in range(n)]  # apart from the evaluation and confirmation seeds
        wanted = [prompts[i % len(prompts)] for i in range(n)]
        # Each prompt with the seeds of its turns (one draw per prompt, batched), back in turn order.
        images: list[Any] = [None] * n
        for prompt in dict.fromkeys(wanted):
            turns = [i for i, p in enumerate(wanted) if p == prompt]
            for i, image in zip(turns, self.draw([prompt], [seeds[i] for i in turns]), strict=True):
                images[i] = image
        style = StyleSet(folder=cache_dir, images=images, captions=wanted, names=[str(s) for s in seeds])
        data = TrainData.build(self.pipe, style, "", plan.resolution, plan.device)
        cache_dir.mkdir(parents=True, exist_ok=True)
        data.save(path)
        return data

    def draw(self, prompts: list[str], seeds: list[int]) -> list[Any]:
        """Samples of ``prompts`` x ``seeds`` by the pipeline as it is (the base model, or with an adapter attached)
        at the study's evaluation settings."""

        ev = self.plan.config.eval
        return sample(
            self.pipe,
            prompts,
            seeds,
            steps=ev.inference_steps,
            guidance_scale=ev.guidance(),
            resolution=self.plan.resolution,
            batch_size=ev.batch_size,
        )

    def diagnose(self, cache_dir: Path) -> list[Finding]:
        """The data diagnostics of the style set (``autolora.diagnostics``), the base samples as yardstick; then the
        judge's self-check of its style terms (``autolora.scoring.selfcheck``)."""

        yardstick = self.ensure_base_samples(cache_dir)
        plan = self.plan
        findings = diagnose_style_set(
            plan.style, plan.resolution, self.pipe.vae, yardstick, plan.buckets, plan.bucket_of, plan.config.data.crop
        )
        self.ensure_anchors(cache_dir)
        self.scorer = scorer = self.new_scorer(yardstick)  # kept: prepare scores the trials with it
        terms = {m for t in plan.objective.targets for m in t.terms}
        return findings + judge_findings(scorer.checks, scorer.paired, terms, scorer.style_cost)

    def eval_prompts(self) -> list[str]:
        cfg = self.plan.config
        return [cfg.data.prompt_template.format(prompt=p, trigger=cfg.data.trigger) for p in self.plan.prompts]

    def release(self) -> None:
        import torch

        self.pipe = None
        self.judge = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
