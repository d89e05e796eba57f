"""The arms a replay compares: a sampler, a pruner and what opens the study, each built by ``autolora``'s own
factories where ``tune`` has the setting, so the replay measures what ``tune`` runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

SAMPLERS = ("random", "optuna-tpe", "auto", "tpe-quarter", "tpe-10", "tpe-min", "gp")
PRUNERS = ("none", "median", "optuna-median", "successive_halving", "hyperband")
OPENINGS = ("none", "presets", "portfolio", "portfolio+presets")


@dataclass(frozen=True)
class Arm:
    """One way to search.

    ``sampler``: ``random``; ``optuna-tpe`` (optuna's TPE as it comes: 10 random trials, independent); ``auto``
    (``tune``'s ``sampler: auto``: multivariate TPE whose random start is ``autolora.tune.plan.auto_startup`` of
    the budget, as it stands); ``tpe-quarter`` (the rule ``auto`` had before this replay: a quarter of the budget,
    at least one after the opening trials, at most 10); ``tpe-10`` and ``tpe-min`` (the same TPE with optuna's
    fixed 10 random trials, or one random trial after the opening ones); ``gp`` (optuna's GPSampler: its 10 random
    trials count complete trials only). ``pruner``: ``median`` as ``tune`` sets it (``study.pruner_startup_trials``),
    ``optuna-median`` (optuna's own default pruner: 5 startup trials), ``successive_halving``, ``hyperband`` or
    ``none``. ``opening``: the first trials (the presets as ``tune`` projects them, the portfolio of the table's
    other styles, or both, portfolio first)."""

    name: str
    sampler: str
    pruner: str
    opening: str = "none"
    trials: int | None = None
    """A fixed number of trials whatever the budget (the presets alone: 2)."""
    eval_every: int | None = None
    """Steps between the pruner's rungs (None: ``tune``'s own, half the fewest steps a trial can have)."""
    extra: bool = False
    """Replayed only when named in ``--arms`` (GPSampler without a pruner: ~8 s a 40-trial study on this CPU, 100
    seeds x 6 styles would take an hour)."""

    def __post_init__(self) -> None:
        if "," in self.name:
            raise ValueError(f"arm {self.name!r}: a comma in the name (--arms is comma-separated)")
        for what, value, allowed in (
            ("sampler", self.sampler, SAMPLERS),
            ("pruner", self.pruner, PRUNERS),
            ("opening", self.opening, OPENINGS),
        ):
            if value not in allowed:
                raise ValueError(f"arm {self.name}: {what} {value!r}, expected one of {'|'.join(allowed)}")

    @property
    def per_budget(self) -> bool:
        """Whether the arm behaves differently under another budget (then each budget is replayed on its own;
        otherwise a budget's result is the prefix of the largest budget's study, as a user stopping it early)."""
        return self.sampler in ("auto", "tpe-quarter")

    def sampler_for(self, seed: int, budget: int, first: int, startup_trials: int) -> optuna.samplers.BaseSampler:
        import optuna

        from autolora.core.study import make_sampler
        from autolora.tune.plan import auto_startup

        if self.sampler == "optuna-tpe":
            return optuna.samplers.TPESampler(seed=seed)
        if self.sampler == "auto":
            return make_sampler("tpe", seed, startup=auto_startup(budget, first))
        if self.sampler == "tpe-quarter":
            return make_sampler("tpe", seed, startup=max(first + 1, min(10, budget // 4)))
        if self.sampler in ("tpe-10", "tpe-min"):
            return make_sampler("tpe", seed, startup=10 if self.sampler == "tpe-10" else first + 1)
        return make_sampler(self.sampler, seed)

    def pruner_for(self, startup_trials: int) -> optuna.pruners.BasePruner:
        import optuna

        from autolora.core.study import make_pruner

        if self.pruner == "optuna-median":
            return optuna.pruners.MedianPruner()
        return make_pruner(self.pruner, startup_trials, multi=False)


ARMS: tuple[Arm, ...] = (
    Arm("random", "random", "none"),
    Arm("random+median", "random", "median"),
    Arm("presets+random+median", "random", "median", "presets"),
    Arm("optuna-tpe", "optuna-tpe", "optuna-median"),
    Arm("default", "auto", "median", "presets"),
    Arm("quarter start", "tpe-quarter", "median", "presets"),
    Arm("tpe start 10", "tpe-10", "median", "presets"),
    Arm("tpe start 1", "tpe-min", "median", "presets", extra=True),
    Arm("auto no presets", "auto", "median"),
    Arm("auto no pruner", "auto", "none", "presets"),
    Arm("auto rungs 200", "auto", "median", "presets", eval_every=200),
    Arm("auto+halving", "auto", "successive_halving", "presets"),
    Arm("auto+hyperband", "auto", "hyperband", "presets"),
    Arm("gp+median", "gp", "median", "presets"),
    Arm("gp no pruner", "gp", "none", "presets", extra=True),
    Arm("tpe no pruner", "tpe-quarter", "none", "presets", extra=True),
    Arm("portfolio+auto", "auto", "median", "portfolio"),
    Arm("portfolio+presets+auto", "auto", "median", "portfolio+presets"),
    Arm("presets alone", "random", "none", "presets", trials=2),
)
"""Every arm of the issue: random search alone and with the median pruner (the sampler's gain apart from the
pruner's), optuna's TPE as it comes, the current default and its parts taken away one at a time, its startup
rule against the other two, the other pruners beside the median, GPSampler with and without one, a portfolio warm
start (alone and before the presets), and the presets alone."""
