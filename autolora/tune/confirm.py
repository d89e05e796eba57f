"""The confirmation stage: after the trials, the top K feasible trials are re-scored on other, more seeds.

Why: the search scores each trial once, on ``eval.seeds`` (8 samples by default), and a trial-to-trial difference
smaller than that evaluation's noise is a coin toss the search calls a win. Each kept adapter of the search's top
``study.confirm_top_k`` is loaded again, draws ``eval.confirm_seeds`` (the base model draws them too, as the
yardstick), and is scored by the same judge; its constraints are checked again. The confirmed best (highest
confirmed value among trials still feasible) is what ``export`` takes (see ``autolora.core.confirm_record``).

Recorded in Optuna (study attribute ``autolora.confirmation``) and in MLflow (each trial run gets ``confirm.*``
metrics and an ``autolora.confirmed`` tag; the parent run ``confirm.changed`` and ``autolora.confirmed_best``).
A trial confirmed before on the same seeds is not scored again (a resumed study confirms only what is new).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from autolora.adapter import KeptAdapter
from autolora.core.confirm_record import Confirmation, begin, rescore, settle
from autolora.core.feasible import candidates
from autolora.core.rundir import adapter_dir
from autolora.methods import kept_method, load_kept

if TYPE_CHECKING:
    import optuna

    from autolora.core.tracking import ParentRun
    from autolora.tune.session import Session

ADAPTER_NAME = "autolora-confirm"


def confirm(
    session: Session, study: optuna.Study, parent: ParentRun | None, echo: Callable[[str], None] = print
) -> Confirmation | None:
    """Re-score the study's top trials on the confirmation seeds, record and return the result (None: off, or no
    feasible trial to confirm)."""
    import torch

    plan, cfg = session.plan, session.plan.config
    k, seeds = cfg.study.confirm_top_k, list(cfg.eval.confirm_seeds)
    top = candidates(study, k) if k else []
    top = [t for t in top if (adapter_dir(plan.run_dir, t.number) / "adapter.json").is_file()]
    if not top:
        return None
    conf, todo = begin(study, top, k, seeds, len(plan.prompts))
    objective = plan.objective
    if todo:
        t0 = time.perf_counter()
        base = session.base_samples_for(seeds, plan.run_dir / "cache")
        scorer = session.new_scorer(base)
        drawn = time.perf_counter() - t0
        echo(f"confirming the top {len(top)} trials on {len(seeds)} other seeds (base model drawn in {drawn:.1f}s)")
    for t in todo:
        t0 = time.perf_counter()
        kept = KeptAdapter.load(adapter_dir(plan.run_dir, t.number))
        method = kept_method(kept.configs)
        prompts = [method.prompt(p, cfg.data.trigger, cfg.data.identifier) for p in session.eval_prompts()]
        attached = load_kept(session.pipe, kept.configs, kept.state_dicts, ADAPTER_NAME)
        try:
            with torch.no_grad():
                images = session.draw(prompts, seeds)
        finally:
            method.detach(session.pipe, ADAPTER_NAME, attached)
        each = scorer.score_each(images)
        metrics = {name: sum(v) / len(v) for name, v in each.items()}
        per_seed = [_subset_mean(each, len(plan.prompts), len(seeds), i) for i in range(len(seeds))]
        conf.trials[t.number] = rescore(t, objective, metrics, per_seed, time.perf_counter() - t0)
    settle(study, conf, objective, top)
    if parent is not None:
        parent.log_confirmation(conf, objective.names)
    return conf


def _subset_mean(each: dict[str, list[float]], n_prompts: int, n_seeds: int, seed: int) -> dict[str, float]:
    """The metrics of one seed's samples (prompt-major order: sample ``p * n_seeds + seed``)."""
    idx = [p * n_seeds + seed for p in range(n_prompts)]
    return {k: sum(v[i] for i in idx) / len(idx) for k, v in each.items()}
