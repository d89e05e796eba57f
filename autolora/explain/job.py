"""``autolora explain``: validate, load the LoRA once, map it, read its spectrum, optionally prune, write."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autolora.explain.config import ExplainRunConfig
from autolora.explain.measure import NAME, ExplainSession, measure
from autolora.explain.output import log_to_mlflow, summary_lines, table_lines, write_outputs
from autolora.explain.plan import make_explain_plan
from autolora.explain.prune import prune
from autolora.explain.spectrum import delta_shares, rank_used, spectra


@dataclass
class ExplainResult:
    doc: dict[str, Any]
    """``explain.json``'s document."""
    lines: list[str]
    """The summary and the per-group table."""
    out: Path
    files: list[Path]


def run_explain(config: ExplainRunConfig, echo: Callable[[str], None] = print) -> ExplainResult:
    """Map the LoRA of ``config.explain.lora``; every input is validated before anything loads or is written."""
    plan = make_explain_plan(config)
    session = ExplainSession.load(plan)
    try:
        result = explain_with(session, echo)
    finally:
        session.close()
    if config.study.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        ui = log_to_mlflow(config.study.mlflow_uri, result.doc, result.files, config.study_name)
        result.lines.append(f"  logged to MLflow (experiment autolora-explain): {ui}")
    return result


def explain_with(
    session: ExplainSession, echo: Callable[[str], None] = print, about: dict[str, Any] | None = None
) -> ExplainResult:
    """The map, the spectrum and (``explain.prune``) the smaller LoRA of the LoRA loaded in ``session``, written
    into the plan's folder; ``about`` joins ``explain.json``'s document (``tune``: the trial mapped)."""
    t0 = time.perf_counter()
    plan = session.plan
    settings = plan.config.explain
    echo(f"explain {plan.lora.name}: {len(session.keys(settings.granularity))} {settings.granularity} groups")
    found = measure(session, settings.granularity, echo)
    layers = spectra(session.fa, NAME, settings.granularity)
    doc: dict[str, Any] = {
        **(about or {}),
        "lora": plan.lora.name,
        "lora_path": str(plan.lora.resolve()),
        "base_model": plan.model.source,
        "arch": plan.model.arch,
        "objective": plan.objective.name,
        "prompts": plan.prompts,
        "seeds": list(plan.config.eval.seeds),
        "map": found.to_dict(),
        "rank": rank_used(layers),
        "delta_shares": delta_shares(layers),
        "layers": [s.to_dict() for s in layers],
    }
    if settings.prune:
        echo("pruning:")
        doc["pruned"] = prune(session, found, settings, plan.out_dir / "pruned", echo).to_dict()
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    files = write_outputs(doc, session.samples, plan.out_dir)
    lines = summary_lines(doc) + table_lines(doc)
    lines.append(f"  wrote {', '.join(p.name for p in files)} in {plan.out_dir}")
    return ExplainResult(doc, lines, plan.out_dir, files)
