"""The map of one LoRA: its file loaded once as an adapter, then every reading is a set of group coefficients, one
sampling pass of the fixed prompts x seeds, and the study's judge (``ClipStyleContentScorer``, the objective's
style term and content readings).

References: the user's style pictures, else the LoRA's own full-strength samples of the same prompts on other seeds
(``eval.confirm_seeds``), so a map needs no pictures and never scores a sample against itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autolora.explain.groups import Coefficients, alone, constant, without
from autolora.explain.plan import ExplainPlan
from autolora.explain.reading import GroupReading, Reading, StyleMap
from autolora.loras.engine import FusedAdapters, load_loras, unload
from autolora.models.loading import load_base
from autolora.sampling import sample
from autolora.scoring.clip import ClipJudge, ClipStyleContentScorer

if TYPE_CHECKING:
    from PIL import Image

NAME = "explained"
"""The adapter name the LoRA is loaded under."""


class ExplainSession:
    """The pipeline with the LoRA loaded, the judge, and the scorer prepared against the base model's samples."""

    def __init__(self, plan: ExplainPlan, pipe: Any, fa: FusedAdapters, judge: ClipJudge) -> None:
        self.plan, self.pipe, self.fa, self.judge = plan, pipe, fa, judge
        self.anchors: list[Image.Image] | None = None
        """The base model's rendering of each reference's caption, when a caller drew them already (``tune``)."""
        self.scorer: ClipStyleContentScorer | None = None
        self.samples: dict[str, list[Image.Image]] = {}
        """Reading name (``base``, ``full``, ``alone:up.1``...) -> its samples, for the grid."""
        self.draws = 0

    @classmethod
    def load(cls, plan: ExplainPlan) -> ExplainSession:
        """Load the pipeline, the LoRA (a file diffusers cannot map is a ``UserError``, nothing written) and judge."""
        pipe, _ = load_base(plan.model, plan.config.model, plan.device)
        return cls.on(plan, pipe, ClipJudge(plan.clip[0], plan.clip[1], device=plan.device))

    @classmethod
    def on(cls, plan: ExplainPlan, pipe: Any, judge: ClipJudge) -> ExplainSession:
        """The LoRA loaded onto a pipeline and judge already loaded (``tune``'s, at the end of a run; a LyCORIS
        file as its exact LoRA, ``autolora.loras.engine``); ``close`` leaves the pipeline as it was."""
        return cls(plan, pipe, load_loras(pipe, [plan.lora], [NAME]), judge)

    @property
    def n_seeds(self) -> int:
        return len(self.plan.config.eval.seeds)

    def keys(self, granularity: str) -> list[str]:
        return self.fa.lora_group_keys(NAME, granularity)

    def eval_prompts(self) -> list[str]:
        data = self.plan.config.data
        return [data.prompt_template.format(prompt=p, trigger=data.trigger) for p in self.plan.prompts]

    def draw(self, coeffs: Coefficients, seeds: list[int] | None = None, prompts: list[str] | None = None) -> list[Any]:
        """Sample ``prompts`` (the evaluation prompts) x ``seeds`` (``eval.seeds``) with the LoRA's groups at
        ``coeffs``."""
        self.fa.set_coefficients({NAME: coeffs})
        return self.sample_active(seeds, prompts)

    def sample_active(self, seeds: list[int] | None = None, prompts: list[str] | None = None) -> list[Any]:
        """Sample with whatever adapters are active as they are (``draw`` sets the LoRA's groups first)."""
        import torch

        ev = self.plan.config.eval
        self.draws += 1
        with torch.no_grad():
            return sample(
                self.pipe,
                prompts or self.eval_prompts(),
                seeds or ev.seeds,
                steps=ev.inference_steps,
                guidance_scale=ev.guidance(),
                resolution=self.plan.resolution,
                batch_size=ev.batch_size,
            )

    def prepare(self) -> str:
        """Draw the base model's (unless given in ``samples["base"]``) and the full LoRA's samples and prepare the
        scorer; return what the references are (``style images`` or ``own samples``)."""
        plan, ev = self.plan, self.plan.config.eval
        keys = self.keys("block")
        if "base" not in self.samples:  # a caller that holds the base model's samples (tune's) set them
            self.samples["base"] = self.draw(constant(keys, 0.0))
        self.samples["full"] = self.draw(constant(keys, 1.0))
        anchors, captions = None, None
        if plan.style is not None:
            references, what = plan.style.images, "style images"
            if all(plan.style.captions):
                captions = plan.style.captions
                anchors = self.anchors or self.draw(constant(keys, 0.0), ev.seeds[:1], captions)
        else:
            references, what = self.draw(constant(keys, 1.0), ev.confirm_seeds), "own samples"
        self.scorer = ClipStyleContentScorer(self.judge, self._readers())
        self.scorer.prepare(references, plan.prompts, self.n_seeds, self.samples["base"], anchors, captions)
        return what

    def _readers(self) -> dict[str, Any]:
        """The base model's own style reader (``style_intro``), as ``tune``'s judge has it, unless it is off."""
        if not self.plan.config.eval.intro_style:
            return {}
        from autolora.methods import base_view
        from autolora.models.features import DenoiserFeatures

        pipe = self.pipe
        return {"style_intro": DenoiserFeatures(pipe, self.plan.device, self.plan.resolution, lambda: base_view(pipe))}

    def read(self, images: list[Any]) -> Reading:
        assert self.scorer is not None, "ExplainSession.prepare first"
        return Reading.of(self.scorer.score_each(images), self.n_seeds)

    def reading(self, name: str, coeffs: Coefficients) -> Reading:
        """Draw with ``coeffs``, keep the samples under ``name``, read them."""
        self.samples[name] = self.draw(coeffs)
        return self.read(self.samples[name])

    def close(self) -> None:
        """Remove the LoRA from the pipeline (its base weights are then bit-identical to the loaded ones)."""
        if self.fa.slots:
            unload(self.fa)


def measure(session: ExplainSession, granularity: str, echo: Callable[[str], None] = print) -> StyleMap:
    """The map at ``granularity``: the base, the full LoRA, and every group alone and without (2 + 2 x groups
    sampling passes, plus the references' when no style pictures are given)."""
    plan = session.plan
    t0 = time.perf_counter()
    references = session.prepare()
    base = session.read(session.samples["base"])
    full = session.read(session.samples["full"])
    keys = session.keys(granularity)
    groups = []
    for i, key in enumerate(keys):
        group = GroupReading(
            key,
            session.reading(f"alone:{key}", alone(keys, key)),
            session.reading(f"without:{key}", without(keys, key)),
        )
        groups.append(group)
        echo(
            f"  {i + 1}/{len(keys)} {key}: {plan.style_metric} alone {group.alone.mean(plan.style_metric):+.3f}, "
            f"without {group.without.mean(plan.style_metric):+.3f} (full {full.mean(plan.style_metric):+.3f})"
        )
    found = StyleMap(granularity, plan.style_metric, plan.content_metrics, base, full, groups, references)
    found.extra["sampling_passes"] = session.draws
    found.extra["seconds"] = round(time.perf_counter() - t0, 1)
    return found
