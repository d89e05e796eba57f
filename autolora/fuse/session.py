"""What a fusion run loads once: the base pipeline with every LoRA, the judge, the base samples.

A trial then only sets coefficients (``Fusion.apply``), samples the fixed prompts x seeds and scores them.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.diagnostics import diagnose_style_set
from autolora.fuse.plan import FusePlan
from autolora.fuse.space import Fusion
from autolora.loras.engine import load_loras, unload
from autolora.models.loading import load_base
from autolora.sampling import load_images, sample, save_images
from autolora.scoring.styles import MultiStyleScorer

if TYPE_CHECKING:
    from PIL import Image

    from autolora.core.findings import Finding
    from autolora.fuse.space import Blend
    from autolora.loras.engine import FusedAdapters


@dataclass
class FuseSession:
    """The pipeline with the LoRAs loaded as separate adapters, the judge and the scorer."""

    plan: FusePlan
    pipe: Any
    fa: FusedAdapters
    judge: Any = None
    scorer: MultiStyleScorer | None = None
    base_samples: list[Image.Image] = field(default_factory=list)
    setup_seconds: float = 0.0

    @classmethod
    def load(cls, plan: FusePlan, judge: bool = True) -> FuseSession:
        """Load the pipeline, the LoRAs (a bad file is a ``UserError``, the pipeline left clean) and the judge."""

        t0 = time.perf_counter()
        pipe, _ = load_base(plan.model, plan.config.model, plan.device)
        fa = load_loras(pipe, [path for _, path in plan.loras], plan.names)
        clip = None
        if judge:
            from autolora.scoring.clip import ClipJudge

            clip = ClipJudge(plan.clip[0], plan.clip[1], device=plan.device)
        return cls(plan=plan, pipe=pipe, fa=fa, judge=clip, setup_seconds=time.perf_counter() - t0)

    def prepare(self, cache_dir: Path) -> None:
        """The base model's samples (cached in the run folder) and the scorer's references: once per run."""

        t0 = time.perf_counter()
        plan, ev = self.plan, self.plan.config.eval
        path = self._base_path(cache_dir)
        self.ensure_base_samples(cache_dir)
        if not path.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            save_images(path, self.base_samples)
        self.scorer = MultiStyleScorer(self.judge)
        references = {name: style.images for name, style in plan.styles.items()}
        self.scorer.prepare(references, plan.prompts, len(ev.seeds), self.base_samples)
        self.setup_seconds += time.perf_counter() - t0

    def _base_path(self, cache_dir: Path, seeds: list[int] | None = None) -> Path:
        plan, ev = self.plan, self.plan.config.eval
        items = [str(plan.model.folder), self.eval_prompts(), seeds or ev.seeds, ev.inference_steps, ev.guidance()]
        key = json.dumps([*items, plan.resolution])
        return cache_dir / f"base-samples-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"

    def ensure_base_samples(self, cache_dir: Path) -> list[Image.Image]:
        """The base model's samples: kept, else read from ``cache_dir``, else drawn (``prepare`` writes them)."""

        if not self.base_samples:
            path = self._base_path(cache_dir)
            if path.exists():
                self.base_samples = load_images(path)
            else:
                self.base_samples = self._draw_base(self.plan.config.eval.seeds)
        return self.base_samples

    def _draw_base(self, seeds: list[int]) -> list[Image.Image]:
        zero = {name: {"all": 0.0} for name in self.plan.names}  # scale 0: exactly the base model's output
        return self.draw(_constant(zero), seeds)

    def diagnose(self, cache_dir: Path) -> list[Finding]:
        """The data diagnostics of every style's references (``autolora.diagnostics``), named by style."""
        from dataclasses import replace

        yardstick = self.ensure_base_samples(cache_dir)
        out = []
        for name, style in self.plan.styles.items():
            for f in diagnose_style_set(style, self.plan.resolution, self.pipe.vae, yardstick):
                out.append(replace(f, check=f"{f.check}.{name}", line=f"[{name}] {f.line}"))
        return out

    def eval_prompts(self) -> list[str]:
        data = self.plan.config.data
        return [data.prompt_template.format(prompt=p, trigger=data.trigger) for p in self.plan.prompts]

    def draw(self, fusion: Blend, seeds: list[int] | None = None) -> list[Image.Image]:
        """Apply ``fusion`` and sample the fixed prompts x seeds (``eval.seeds`` unless given)."""

        ev = self.plan.config.eval
        callback = fusion.apply(self.fa)
        return sample(
            self.pipe,
            self.eval_prompts(),
            seeds or ev.seeds,
            steps=ev.inference_steps,
            guidance_scale=ev.guidance(),
            resolution=self.plan.resolution,
            batch_size=ev.batch_size,
            callback=callback,
        )

    def base_samples_for(self, seeds: list[int], cache_dir: Path) -> list[Image.Image]:
        """The base model's samples on other ``seeds`` (the confirmation's), cached in the run folder."""

        path = self._base_path(cache_dir, seeds)
        if path.exists():
            return load_images(path)
        images = self._draw_base(seeds)
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_images(path, images)
        return images

    def close(self) -> None:
        """Remove the LoRAs from the pipeline (its base weights are then bit-identical to the loaded ones)."""

        if self.fa.slots:
            unload(self.fa)


def _constant(coeffs: dict[str, dict[str, float]]) -> Fusion:
    return Fusion(coeffs)
