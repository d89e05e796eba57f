"""The confirmation stage of a fusion run: each study's top K feasible blends drawn again on other seeds.

As for ``tune`` (``autolora.tune.confirm``, the record in ``autolora.core.confirm_record``): the DLF study and its
linear baseline are both confirmed, so the side-by-side summary compares confirmed bests, and ``export`` takes the
confirmed best DLF blend. A blend is its coefficients: nothing needs keeping to draw it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from autolora.core.confirm_record import Confirmation, begin, rescore, settle
from autolora.core.feasible import candidates, is_feasible
from autolora.fuse.warm import starts
from autolora.scoring.styles import MultiStyleScorer

if TYPE_CHECKING:
    import optuna
    from PIL import Image

    from autolora.core.tracking import ParentRun
    from autolora.fuse.baselines import FixedSpace
    from autolora.fuse.session import FuseSession
    from autolora.fuse.space import CoefficientSpace


def confirm_fusion(
    session: FuseSession,
    study: optuna.Study,
    space: CoefficientSpace | FixedSpace,
    label: str,
    parent: ParentRun | None,
    echo: Callable[[str], None] = print,
) -> Confirmation | None:
    """Re-score the study's top blends on ``eval.confirm_seeds``; record and return the result (None: off, or none
    feasible)."""

    plan, cfg = session.plan, session.plan.config
    k, seeds = cfg.study.confirm_top_k, list(cfg.eval.confirm_seeds)
    top = candidates(study, k) if k else []
    if not top:
        return None
    # The starting points (plain stacking; DLF's copies of linear's best) are always confirmed too: DLF's confirmed
    # pick is then never below linear's, and no study's stacking trial goes unconfirmed.
    extra = [t for t in starts(study) if is_feasible(t) and t.number not in {c.number for c in top}]
    n_top, top = len(top), top + extra
    conf, todo = begin(study, top, k, seeds, len(plan.prompts))
    references = {name: style.images for name, style in plan.styles.items()}
    n_prompts = len(plan.prompts)
    scorers: list[MultiStyleScorer] = []
    if todo:
        base = session.base_samples_for(seeds, plan.run_dir / "cache")
        # All samples, then each seed's own (the spread over seeds is the noise): the fusion scorer's aggregates
        # (the weakest style's mean gain) are not means of per-sample values, so each seed is scored on its own.
        for subset in [None, *range(len(seeds))]:
            scorer = MultiStyleScorer(session.judge)
            picked = base if subset is None else _of_seed(base, n_prompts, len(seeds), subset)
            scorer.prepare(references, plan.prompts, len(seeds) if subset is None else 1, picked)
            scorers.append(scorer)
        also = f" and {len(extra)} starting point{'s' if len(extra) != 1 else ''}" if extra else ""
        echo(f"{label}: confirming the top {n_top} blends{also} on {len(seeds)} other seeds")
    for t in todo:
        t0 = time.perf_counter()
        images = session.draw(space.of_trial(t), seeds)
        metrics = scorers[0].score(images)
        per_seed = [scorers[1 + s].score(_of_seed(images, n_prompts, len(seeds), s)) for s in range(len(seeds))]
        conf.trials[t.number] = rescore(t, plan.objective, metrics, per_seed, time.perf_counter() - t0)
    settle(study, conf, plan.objective, top)
    if parent is not None:
        parent.log_confirmation(conf, plan.objective.names, label)
    return conf


def _of_seed(images: list[Image.Image], n_prompts: int, n_seeds: int, seed: int) -> list[Image.Image]:
    return [images[p * n_seeds + seed] for p in range(n_prompts)]
