"""The confirmation record: the top trials re-scored on sample seeds the search never saw.

A search ranks trials by one evaluation on a few seeds (8 samples by default), so its best is partly the luckiest
draw. The confirmation stage (``autolora.tune.confirm``) re-scores the top K feasible trials on more, other seeds
and the confirmed best is the one exported. Optuna's trial values cannot change once a trial is complete, so the
record lives in the study's user attribute ``autolora.confirmation``::

    {"seeds": [100, ...], "top_k": 3, "samples": 24, "search_best": 5, "best": 2,
     "trials": {"5": {"values": [...], "search_values": [...], "metrics": {...}, "broken": "",
                      "style": 0.031, "style_se": 0.008, "seconds": 4.1}, ...}}

``style`` is the objective's style part (its terms on ``style_*`` metrics) on the confirmation samples and
``style_se`` its standard error over the confirmation seeds (the seed is what a re-draw changes; the prompts stay).
A best whose style is within ``NOISE_SIGMAS`` standard errors of zero has learnt no style that can be measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from autolora.core.study import ATTR

if TYPE_CHECKING:
    import optuna

    from autolora.scoring.objective import Objective

CONFIRM_ATTR = ATTR + "confirmation"
NOISE_SIGMAS = 2.0
"""A style part under this many standard errors (over the confirmation seeds) is noise, not a learnt style."""


@dataclass
class Rescore:
    """One trial's confirmation."""

    number: int
    values: list[float]
    """Objective values on the confirmation samples."""
    search_values: list[float]
    """The trial's values in the search (its last evaluation)."""
    metrics: dict[str, float]
    broken: str = ""
    """The constraints it broke on the confirmation samples, in words ("" when feasible)."""
    style: float | None = None
    """The objective's style part; None when the objective has no style term."""
    style_se: float | None = None
    seconds: float = 0.0
    run_id: str = ""
    """The trial's MLflow run (where ``confirm.*`` is logged)."""

    def within_noise(self) -> bool:
        """Whether the style part is not measurably above zero (no style term: False)."""
        if self.style is None or self.style_se is None:
            return False
        return self.style <= NOISE_SIGMAS * self.style_se

    def noise_text(self) -> str:
        if self.style is None or self.style_se is None:
            return ""
        return f"style {self.style:+.4f} ± {self.style_se:.4f}"


@dataclass
class Confirmation:
    seeds: list[int]
    top_k: int
    samples: int
    trials: dict[int, Rescore] = field(default_factory=dict)
    search_best: int | None = None
    """The search's best (single objective) before confirmation."""
    best: int | None = None
    """The confirmed best: the highest confirmed value among trials feasible on the confirmation samples."""

    @property
    def changed(self) -> bool:
        return self.best is not None and self.best != self.search_best

    def to_attr(self) -> dict[str, Any]:
        d = asdict(self)
        d["trials"] = {str(n): {k: v for k, v in asdict(r).items() if k != "number"} for n, r in self.trials.items()}
        return d

    @classmethod
    def from_attr(cls, data: Any) -> Confirmation | None:
        if not isinstance(data, dict) or "trials" not in data:
            return None
        trials = {int(n): Rescore(number=int(n), **r) for n, r in data["trials"].items()}
        return cls(
            seeds=list(data["seeds"]),
            top_k=int(data["top_k"]),
            samples=int(data["samples"]),
            trials=trials,
            search_best=data.get("search_best"),
            best=data.get("best"),
        )

    def lines(self, names: list[str]) -> list[str]:
        """What the confirmation found, for ``tune``'s summary and ``show``."""
        head = (
            f"confirmation: the top {len(self.trials)} feasible trials re-scored on {len(self.seeds)} other seeds "
            f"({self.samples} samples)"
        )
        out = [head]
        for r in sorted(self.trials.values(), key=lambda r: r.number):
            pairs = " ".join(
                f"{n} {a:+.4f} -> {b:+.4f}" for n, a, b in zip(names, r.search_values, r.values, strict=True)
            )
            extra = f" ({r.noise_text()})" if r.noise_text() else ""
            tail = f" [infeasible on confirmation: {r.broken}]" if r.broken else ""
            out.append(f"  trial {r.number}: {pairs}{extra}{tail}")
        if self.best is None and self.search_best is not None:
            out.append("  no trial stayed feasible on the confirmation seeds")
        elif self.changed:
            out.append(f"  confirmation changed the winner: trial {self.best} (the search had {self.search_best})")
        elif self.best is not None:
            out.append(f"  confirmation kept the winner: trial {self.best}")
        return out


def stored(study: optuna.Study) -> Confirmation | None:
    """The study's confirmation record, whatever trials it covers (``autolora.core.feasible.confirmation`` checks
    that it still covers the study's top trials)."""
    return Confirmation.from_attr(study.user_attrs.get(CONFIRM_ATTR))


def begin(
    study: optuna.Study, top: list[optuna.trial.FrozenTrial], top_k: int, seeds: list[int], n_prompts: int
) -> tuple[Confirmation, list[optuna.trial.FrozenTrial]]:
    """A new confirmation of ``top`` on ``seeds``, holding already what an earlier one scored on the same seeds, and
    the trials still to score (a resumed study confirms only what is new)."""
    earlier = stored(study)
    reuse = earlier.trials if earlier is not None and earlier.seeds == seeds else {}
    conf = Confirmation(seeds=list(seeds), top_k=top_k, samples=n_prompts * len(seeds))
    conf.trials = {t.number: reuse[t.number] for t in top if t.number in reuse}
    return conf, [t for t in top if t.number not in reuse]


def style_part(objective: Objective, metrics: dict[str, float]) -> float | None:
    """The objective's terms on style metrics (``style_*``) summed with their weights; None when it has none."""
    terms = [(m, w) for t in objective.targets for m, w in t.terms.items() if m.startswith("style")]
    return sum(w * metrics[m] for m, w in terms) if terms else None


def rescore(
    trial: optuna.trial.FrozenTrial,
    objective: Objective,
    metrics: dict[str, float],
    per_seed: list[dict[str, float]],
    seconds: float,
) -> Rescore:
    """A trial's confirmation from the metrics of all its confirmation samples and of each seed's samples."""
    parts = [style_part(objective, m) for m in per_seed]
    se = None
    if parts and all(p is not None for p in parts) and len(parts) > 1:
        xs = [float(p) for p in parts if p is not None]
        mu = sum(xs) / len(xs)
        se = math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1) / len(xs))
    return Rescore(
        number=trial.number,
        values=objective.values(metrics),
        search_values=list(trial.values),
        metrics=metrics,
        broken="; ".join(objective.broken(metrics)),
        style=style_part(objective, metrics),
        style_se=se,
        seconds=seconds,
        run_id=str(trial.user_attrs.get("mlflow_run_id") or ""),
    )


def settle(
    study: optuna.Study, conf: Confirmation, objective: Objective, top: list[optuna.trial.FrozenTrial]
) -> Confirmation:
    """Decide and keep the record with the study (MLflow's side: ``ParentRun.log_confirmation``). Single objective:
    the search's best (``top[0]``) and the confirmed best (the highest confirmed value among the trials still
    feasible; None when none is)."""
    if objective.is_scalar:
        sign = 1.0 if objective.directions[0] == "maximize" else -1.0
        conf.search_best = top[0].number
        ok = [r for r in conf.trials.values() if not r.broken]
        conf.best = max(ok, key=lambda r: (sign * r.values[0], -r.number)).number if ok else None
    study.set_user_attr(CONFIRM_ATTR, conf.to_attr())
    return conf
