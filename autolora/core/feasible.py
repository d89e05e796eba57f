"""Which trials can be best: feasibility under the objective recipe's constraints.

A trial records its constraints with optuna's ``Trial.set_constraint`` (optuna 5; ``constraints_func`` is
deprecated): a value <= 0 is feasible. TPE, GP and NSGA-II read them while sampling, and optuna's own
``Study.best_trial`` / ``best_trials`` return feasible trials only. ``best_trial`` raises when none is feasible,
and every place that shows, keeps, logs or exports "the best" must say so instead of crashing or quietly taking an
infeasible one: the helpers here are that one rule. A study without constraints has every trial feasible.

After the confirmation stage (``autolora.core.confirm_record``), the best is the confirmed best, as long as the record
still covers the study's top trials (a resumed study with a better new trial is ranked by the search again until it
is confirmed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autolora.core.confirm_record import NOISE_SIGMAS, stored
from autolora.core.study import ATTR

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from autolora.core.confirm_record import Confirmation

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


def candidates(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """What the search ranks highest: the top ``k`` feasible trials (single objective), or the feasible Pareto set
    (at most ``k``, by the first objective). These are the ones the confirmation stage re-scores."""
    if len(study.directions) == 1:
        return [t for t in ranked(study)[:k] if is_feasible(t)]
    import optuna

    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    return sorted(study.best_trials, key=lambda t: (sign * t.values[0], t.number))[:k] if complete(study) else []


def confirmation(study: optuna.Study) -> Confirmation | None:
    """The study's confirmation record while it covers the search's current top trials, else None."""

    found = stored(study)
    if found is None:
        return None
    return found if {t.number for t in candidates(study, found.top_k)} <= set(found.trials) else None


def best(study: optuna.Study) -> list[FrozenTrial]:
    """The best feasible trial (single objective) or the feasible Pareto set; empty when none is feasible.

    Confirmed: the confirmed best, or the Pareto set less the trials infeasible on the confirmation seeds.
    """
    if not complete(study):
        return []
    conf = confirmation(study)
    if len(study.directions) > 1:
        front = sorted(study.best_trials, key=lambda t: t.number)
        if conf is not None:
            front = [t for t in front if not (t.number in conf.trials and conf.trials[t.number].broken)]
        return front
    if conf is not None:
        return [study.get_trials(deepcopy=False)[conf.best]] if conf.best is not None else []
    return [t for t in ranked(study)[:1] if is_feasible(t)]


def infeasible_line(study: optuna.Study) -> str | None:
    """One line when complete trials exist and none is feasible (None otherwise): why, with the closest trial."""
    done = complete(study)
    if not done or best(study):
        return None
    conf = confirmation(study)
    if conf is not None and conf.trials:
        first = min(conf.trials.values(), key=lambda r: r.number)
        return (
            f"no confirmed trial: the top {len(conf.trials)} feasible trials all broke the objective's constraints "
            f"on {len(conf.seeds)} other seeds (trial {first.number}: {first.broken}); nothing is best"
        )
    closest = min(done, key=lambda t: (sum(max(v, 0.0) for v in t.constraints.values()), t.number))
    why = closest.user_attrs.get(BROKEN_ATTR) or "its constraints"
    return (
        f"no feasible trial: all {len(done)} complete trials broke the objective's constraints "
        f"(the closest, trial {closest.number}: {why}); nothing is best"
    )


def noise_line(study: optuna.Study) -> str | None:
    """One line when the confirmed best's style is within the measured noise of zero (None otherwise, or when
    nothing was confirmed): such a trial learnt no style that can be measured, however it ranks."""

    conf = confirmation(study)
    if conf is None or conf.best is None or len(study.directions) > 1:
        return None
    r = conf.trials[conf.best]
    if not r.within_noise():
        return None
    warnings = study.user_attrs.get(ATTR + "warnings") or []
    why = f"; the data diagnostics warned: {warnings[0]}" if warnings else ""
    return (
        f"no measurable style: the best, trial {r.number}, has {r.noise_text()} over {len(conf.seeds)} seeds, "
        f"within {NOISE_SIGMAS:g} standard errors of zero{why}"
    )


def refusal(study: optuna.Study) -> str | None:
    """Why the study's best must not be exported (or registered) without ``--force``; None when it may."""
    return infeasible_line(study) or noise_line(study)
