"""The confirmation stage: after the trials, the top K feasible trials are re-scored on other, more seeds.

Why: the search scores each trial once, on ``eval.seeds`` (8 samples by default), and a trial-to-trial difference
smaller than that evaluation's noise is a coin toss the search calls a win. Each kept adapter of the search's top
``study.confirm_top_k`` is loaded again, draws ``eval.confirm_seeds`` (the base model draws them too, as the
yardstick), and is scored by the same judge; its constraints are checked again. The confirmed best (highest
confirmed value among trials still feasible) is what ``export`` takes (see ``autolora.core.confirmed``).

Recorded in Optuna (study attribute ``autolora.confirmation``) and in MLflow (each trial run gets ``confirm.*``
metrics and an ``autolora.confirmed`` tag; the parent run ``confirm.changed`` and ``confirm.best_trial``).
A trial confirmed before on the same seeds is not scored again (a resumed study confirms only what is new).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autolora.core.confirmed import CONFIRM_ATTR, Confirmation, Rescore, stored

if TYPE_CHECKING:
    import optuna

    from autolora.core.tracking import ParentRun
    from autolora.scoring.objective import Objective
    from autolora.tune.session import Session

ADAPTER_NAME = "autolora-confirm"


def style_part(objective: Objective, metrics: dict[str, float]) -> float | None:
    """The objective's terms on style metrics (``style_*``) summed with their weights; None when it has none."""
    terms = [(m, w) for t in objective.targets for m, w in t.terms.items() if m.startswith("style")]
    return sum(w * metrics[m] for m, w in terms) if terms else None


def seed_spread(objective: Objective, each: dict[str, list[float]], n_prompts: int, n_seeds: int) -> float | None:
    """Standard error of the style part over seeds: the mean over prompts per seed, their sd / sqrt(seeds)."""
    per_seed = []
    for s in range(n_seeds):
        idx = [p * n_seeds + s for p in range(n_prompts)]
        metrics = {k: sum(v[i] for i in idx) / len(idx) for k, v in each.items()}
        part = style_part(objective, metrics)
        if part is None:
            return None
        per_seed.append(part)
    mean = sum(per_seed) / n_seeds
    var = sum((x - mean) ** 2 for x in per_seed) / (n_seeds - 1)
    return math.sqrt(var / n_seeds)


def confirm(
    session: Session, study: optuna.Study, parent: ParentRun | None, echo: Callable[[str], None] = print
) -> Confirmation | None:
    """Re-score the study's top trials on the confirmation seeds, record and return the result (None: off, or no
    feasible trial to confirm)."""
    import torch

    from autolora.adapter import KeptAdapter, detach, load_into
    from autolora.core.feasible import candidates
    from autolora.core.rundir import adapter_dir
    from autolora.scoring.clip import ClipStyleContentScorer

    plan, cfg = session.plan, session.plan.config
    k, seeds = cfg.study.confirm_top_k, list(cfg.eval.confirm_seeds)
    top = candidates(study, k) if k else []
    top = [t for t in top if (adapter_dir(plan.run_dir, t.number) / "adapter.json").is_file()]
    if not top:
        return None
    earlier = stored(study)
    reuse = earlier.trials if earlier is not None and earlier.seeds == seeds else {}
    conf = Confirmation(seeds=seeds, top_k=k, samples=len(plan.prompts) * len(seeds))
    objective = plan.objective
    todo = [t for t in top if t.number not in reuse]
    if todo:
        t0 = time.perf_counter()
        base = session.base_samples_for(seeds, plan.run_dir / "cache")
        scorer = ClipStyleContentScorer(session.judge)
        scorer.prepare(plan.style.images, plan.prompts, len(seeds), base, session.anchors)
        drawn = time.perf_counter() - t0
        echo(f"confirming the top {len(top)} trials on {len(seeds)} other seeds (base model drawn in {drawn:.1f}s)")
    for t in top:
        if t.number in reuse:
            conf.trials[t.number] = reuse[t.number]
            continue
        t0 = time.perf_counter()
        kept = KeptAdapter.load(adapter_dir(plan.run_dir, t.number))
        attached = []
        try:
            with torch.no_grad():
                for comp, config in kept.configs.items():
                    load_into(getattr(session.pipe, comp), config, kept.state_dicts[comp], ADAPTER_NAME)
                    attached.append(comp)
                images = session.draw(session.eval_prompts(), seeds)
        finally:
            for comp in attached:
                detach(getattr(session.pipe, comp), ADAPTER_NAME)
        each = scorer.score_each(images)
        metrics = {name: sum(v) / len(v) for name, v in each.items()}
        conf.trials[t.number] = Rescore(
            number=t.number,
            values=objective.values(metrics),
            search_values=list(t.values),
            metrics=metrics,
            broken="; ".join(objective.broken(metrics)),
            style=style_part(objective, metrics),
            style_se=seed_spread(objective, each, len(plan.prompts), len(seeds)),
            seconds=time.perf_counter() - t0,
        )
        _log_trial(parent, t, conf.trials[t.number], objective)
    if objective.is_scalar:
        sign = 1.0 if objective.directions[0] == "maximize" else -1.0
        conf.search_best = top[0].number
        ok = [r for r in conf.trials.values() if not r.broken]
        conf.best = max(ok, key=lambda r: (sign * r.values[0], -r.number)).number if ok else None
    study.set_user_attr(CONFIRM_ATTR, conf.to_attr())
    if parent is not None:
        parent.log_metrics({"confirm.changed": float(conf.changed), "confirm.trials": float(len(conf.trials))})
        parent.set_tags({"autolora.confirmed_best": "none" if conf.best is None else str(conf.best)})
    return conf


def _log_trial(parent: ParentRun | None, trial: optuna.trial.FrozenTrial, r: Rescore, objective: Objective) -> None:
    """``confirm.*`` metrics and the ``autolora.confirmed`` tag on the trial's own MLflow run."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if parent is None or not run_id:
        return
    from autolora.core.tracking import TrialRun

    run = TrialRun(parent.client, run_id, parent.experiment_id)
    named: dict[str, Any] = {f"confirm.{k}": v for k, v in r.metrics.items()}
    named.update({f"confirm.objective.{n}": v for n, v in zip(objective.names, r.values, strict=True)})
    if r.style is not None and r.style_se is not None:
        named.update({"confirm.style": r.style, "confirm.style_se": r.style_se})
    run.log_metrics(named)
    run.set_tags({"autolora.confirmed": "infeasible" if r.broken else "feasible", "autolora.confirm_broken": r.broken})
