"""DLF that cannot end worse than linear fusion: the DLF study starts from the linear study's best.

The linear study (one coefficient per LoRA) runs first. Its points are points of every DLF space too: each group
of a LoRA at that LoRA's linear weight. Before the DLF study's first trial, linear's best points -- the ones its
confirmation stage re-scores (``study.confirm_top_k``; the best alone when that is 0) -- are *copied* into it as
complete trials (``optuna.trial.create_trial`` with the linear trial's values, constraints and scores): the same
coefficients give bit-identical scales (``base * c``), the same prompts and seeds, so the same images and values,
and re-drawing them would spend trials on known answers. Copying all of linear's confirmation candidates, not only
its search best, matters: the confirmed linear pick can be a runner-up of the search. For a Pareto objective the
linear Pareto set (at most K) is copied. The copies are marked ``start = "linear"`` (trial 0, plain stacking, is
``start = "stacking"``): the summary says how much DLF added over its own starting point, and the confirmation
stage always re-scores the start points beside the DLF study's top trials, so the confirmed DLF pick is never below
the confirmed linear one.

CMA-ES (the scalar default) also takes the copied point as its initial mean (``CmaEsSampler(x0=...)``; its step
size stays optuna's default, a sixth of the coefficient range), so the search spreads around linear fusion's
best rather than around the middle of the box. TPE and GP read the copied trials as history.

Copying is idempotent: a start already in the study is not copied again. Workers may reach the DLF study while
the linear study's last trials still run: the copy waits for them. Two workers reaching it in the same instant
could both copy (optuna has no transaction for "add if absent"); a duplicate is the same point twice, harmless to
the ranking.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from autolora.core.feasible import candidates, complete
from autolora.fuse.config import SWITCH_RANGE

if TYPE_CHECKING:
    import optuna

    from autolora.fuse.space import CoefficientSpace

START_ATTR = "start"
"""Trial user attribute of a study's starting points: ``stacking`` (trial 0 of DLF and linear) or ``linear`` (DLF's
copies of linear's best). The confirmation always re-scores them."""


def broadcast(linear_params: dict[str, Any], linear: CoefficientSpace, dlf: CoefficientSpace) -> dict[str, float]:
    """The DLF parameters of a linear point: every group of a LoRA at its linear weight (both phases, switch in
    the middle of its range, for a two-phase space)."""

    fusion = linear.fusion(linear_params)
    weight = {lora: next(iter(groups.values())) for lora, groups in fusion.early.items()}
    out: dict[str, float] = {}
    for name in dlf.param_names():
        if name == "switch_at":
            out[name] = sum(SWITCH_RANGE) / 2
            continue
        lora = name.removeprefix("early.").removeprefix("late.").split(".", 1)[0]
        out[name] = min(max(weight[lora], dlf.low), dlf.high)
    return out


def wait_finished(study: optuna.Study, timeout: float, poll: float = 1.0) -> None:
    """Return when no trial of ``study`` runs (other workers finishing the linear study), or after ``timeout``
    seconds (a trial left RUNNING by a killed process would otherwise hold DLF forever; the copy then takes what is
    complete). Waiting trials are not waited for: a run with ``--trials 0`` or a timeout leaves them queued."""
    import optuna

    deadline = time.monotonic() + timeout
    while study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if time.monotonic() > deadline:
            return
        time.sleep(poll)


def starts(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The complete starting points of a study (stacking; in DLF also the copied linear best)."""

    return [t for t in complete(study) if START_ATTR in t.user_attrs]


def copy_linear_best(
    dlf: optuna.Study,
    linear: optuna.Study,
    dlf_space: CoefficientSpace,
    linear_space: CoefficientSpace,
    top_k: int = 1,
) -> list[dict[str, float]]:
    """Copy the linear study's top ``top_k`` feasible points (its confirmation candidates; at least the best) into
    ``dlf``, unless there already; return their DLF params, best first.

    Returns an empty list when the linear study has no feasible trial (nothing to start from)."""
    import optuna

    found = candidates(linear, max(top_k, 1))
    have = {t.user_attrs.get("copied_from") for t in complete(dlf) if t.user_attrs.get(START_ATTR) == "linear"}
    # A linear point already in the DLF study (plain stacking, trial 0, often linear's best) is not copied: the
    # same blend twice adds nothing. Enqueued trials keep their params in the system attrs until they run.
    known = [t.params or t.system_attrs.get("fixed_params", {}) for t in dlf.get_trials(deepcopy=False)]
    points = []
    distributions = dlf_space.distributions()
    for t in found:
        params = broadcast(t.params, linear_space, dlf_space)
        points.append(params)
        source = f"{linear.study_name}#{t.number}"
        if source in have or any(_same(params, k) for k in known):
            continue
        attrs = {k: v for k, v in t.user_attrs.items() if k.startswith("metric.") or k in ("infeasible", "timings")}
        attrs.update({START_ATTR: "linear", "copied_from": source})
        attrs["spec"] = dlf_space.fusion(params).summary()
        attrs["fusion"] = dlf_space.fusion(params).to_dict()
        copy = optuna.trial.create_trial(
            params=params,
            distributions=distributions,
            values=list(t.values),
            user_attrs=attrs,
            constraints=dict(t.constraints) or None,
        )
        dlf.add_trial(copy)
    return points


def _same(a: dict[str, float], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - float(b[k])) < 1e-12 for k in a)
