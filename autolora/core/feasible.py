"""Which trials can be best: feasibility under the objective recipe's constraints.

A trial records its constraints with optuna's ``Trial.set_constraint`` (optuna 5; ``constraints_func`` is
deprecated): a value <= 0 is feasible. TPE, GP and NSGA-II read them while sampling, and optuna's own
``Study.best_trial`` / ``best_trials`` return feasible trials only. ``best_trial`` raises when none is feasible,
and every place that shows, keeps, logs or exports "the best" must say so instead of crashing or quietly taking an
infeasible one: the helpers here are that one rule. A study without constraints has every trial feasible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

BROKEN_ATTR = "infeasible"
"""Trial user attribute: which constraints the trial broke, in words (``content_text_ratio 0.912 < 0.95``)."""


def is_feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def complete(study: optuna.Study) -> list[FrozenTrial]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials, best first by the first objective: feasible ones (a Pareto front's first), then the rest."""
    import optuna

    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    front = {t.number for t in study.best_trials} if len(study.directions) > 1 else set()
    return sorted(
        complete(study), key=lambda t: (not is_feasible(t), t.number not in front, sign * t.values[0], t.number)
    )


def best(study: optuna.Study) -> list[FrozenTrial]:
    """The best feasible trial (single objective) or the feasible Pareto set; empty when none is feasible."""
    if not complete(study):
        return []
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.number)
    return [t for t in ranked(study)[:1] if is_feasible(t)]


def infeasible_line(study: optuna.Study) -> str | None:
    """One line when complete trials exist and none is feasible (None otherwise): why, with the closest trial."""
    done = complete(study)
    if not done or best(study):
        return None
    closest = min(done, key=lambda t: (sum(max(v, 0.0) for v in t.constraints.values()), t.number))
    why = closest.user_attrs.get(BROKEN_ATTR) or "its constraints"
    return (
        f"no feasible trial: all {len(done)} complete trials broke the objective's constraints "
        f"(the closest, trial {closest.number}: {why}); nothing is best"
    )
