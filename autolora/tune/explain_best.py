"""The end of a ``tune`` run: where the exported best LoRA's style lives (``study.explain``), for the summary and
the report.

The best adapter (the confirmed one when there is a confirmation) is written as a diffusers LoRA file into a
temporary folder and mapped by ``autolora.explain`` on the pipeline and judge the run already holds, against the
run's own style pictures, prompts, seeds and recipe, at block granularity and without pruning: ``2 + 2 x blocks``
sampling passes. The map lands in ``<out>/explain`` (``explain.json``, the heatmap, the samples, the page) and in
the report (``report_parts``); ``autolora explain`` on the exported file gives the same map and can prune it.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.adapter import KeptAdapter
from autolora.core.feasible import best
from autolora.core.rundir import adapter_dir
from autolora.explain.config import ExplainRunConfig, ExplainSection
from autolora.explain.job import explain_with
from autolora.explain.measure import ExplainSession
from autolora.explain.output import HEATMAP_FILE, JSON_FILE, SAMPLES_FILE, summary_lines, table_lines, where_line
from autolora.explain.plan import make_explain_plan
from autolora.formats.export import export_all
from autolora.methods import kept_method

if TYPE_CHECKING:
    import optuna

    from autolora.core.tracking import ParentRun
    from autolora.tune.session import Session

FOLDER = "explain"


def explain_best(
    session: Session, study: optuna.Study, run_dir: Path, parent: ParentRun | None, echo: Callable[[str], None]
) -> str | None:
    """Map the run's best LoRA into ``run_dir / FOLDER``; the summary's line, None when there is nothing to map."""
    found = best(study)
    if not found or not adapter_dir(run_dir, found[0].number).is_dir():
        return None
    number = found[0].number
    kept = KeptAdapter.load(adapter_dir(run_dir, number))
    method = kept_method(kept.configs)
    if method.files != "lora" or method.learns_tokens:
        return f"explain: trial {number} is a {method.name} adapter; the map reads plain LoRAs only"
    config = session.plan.config
    out = run_dir / FOLDER
    with tempfile.TemporaryDirectory() as tmp:
        lora = export_all(kept, Path(tmp), f"trial{number}", kohya=False)["diffusers"]
        mapped = ExplainRunConfig(
            model=config.model,
            data=dataclasses.replace(config.data, style_images=str(session.plan.style.folder)),
            eval=config.eval,
            study=dataclasses.replace(config.study, out=str(out)),
            explain=ExplainSection(lora=str(lora)),
        )
        mapped.validate()
        plan = make_explain_plan(mapped)
        mapper = ExplainSession.on(plan, session.pipe, session.judge)
        # the run's own base samples and anchors: the same prompts, seeds and pipeline with no adapter (scale 0)
        mapper.samples["base"] = session.ensure_base_samples(run_dir / "cache")
        mapper.anchors = session.ensure_anchors(run_dir / "cache")
        try:
            result = explain_with(mapper, echo=lambda s: None, about={"trial": number})
        finally:
            mapper.close()
    if parent is not None:
        for path in result.files:
            parent.client.log_artifact(parent.run_id, str(path), FOLDER)
    return f"explain (trial {number}): " + where_line(result.doc) + f"; {out / 'explain.html'}"


def report_part(run_dir: Path | None) -> list[tuple[str, list[Any]]]:
    """The map as a section of the run's HTML report, when the run has one."""
    if run_dir is None or not (run_dir / FOLDER / JSON_FILE).is_file():
        return []
    from PIL import Image

    folder = run_dir / FOLDER
    doc = json.loads((folder / JSON_FILE).read_text(encoding="utf-8"))
    items: list[Any] = [*summary_lines(doc), *table_lines(doc)]
    for name in (HEATMAP_FILE, SAMPLES_FILE):
        if (folder / name).is_file():
            with Image.open(folder / name) as image:
                items.append(image.convert("RGB"))
    return [("Where the best adapter's style lives (autolora explain)", items)]
