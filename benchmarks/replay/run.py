"""One replayed study, and what it would export after each of its trials."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmarks.replay.lookup import Reading, StyleLookup

if TYPE_CHECKING:
    from benchmarks.replay.arms import Arm

CONFIRM_TOP_K = 3
"""``study.confirm_top_k``'s default: the top three feasible trials are confirmed."""
PRUNER_STARTUP = 2
"""``study.pruner_startup_trials``'s default."""
WARM_TOP = 3
"""How many configurations a warm start enqueues (``autolora.tune.presets.WARM_START_TOP``)."""


@dataclass(frozen=True)
class Trial:
    """A replayed trial: the configuration it snapped to, the steps it trained, and (complete ones) its best rung
    on the search seeds, as ``tune`` keeps a trial's best rung."""

    config: int
    steps: int
    pruned: bool
    step: int
    value: float
    feasible: bool
    distance: float
    """How far the sampler's proposal was from the configuration it got (Gower; 0: a table configuration)."""


@dataclass(frozen=True)
class Export:
    """What the study would export after its first trials: the confirmed best (None: nothing to export)."""

    steps: int
    config: int | None = None
    step: int | None = None
    confirmed: Reading | None = None

    @property
    def value(self) -> float:
        """The confirmed value; a study that exports nothing leaves the user the base model (0)."""
        return self.confirmed.value if self.confirmed else 0.0

    @property
    def usable(self) -> bool:
        return bool(self.confirmed and self.confirmed.usable)

    @property
    def progress(self) -> float:
        """The pixel style of the export; the base model's (0) when nothing is exported."""
        return self.confirmed.progress if self.confirmed else 0.0


def replay(
    arm: Arm, lookup: StyleLookup, seed: int, budget: int, portfolio: list[dict[str, Any]] | None = None
) -> list[Trial]:
    """Run ``arm`` for ``budget`` trials against ``lookup`` (seeded), as ``tune`` would run it."""
    import optuna

    from autolora.tune.presets import preset_trials
    from autolora.tune.trial import _rung_rank

    first: list[dict[str, Any]] = []
    if "portfolio" in arm.opening:
        first += portfolio or []
    if "presets" in arm.opening:
        first += [t.params for t in preset_trials("auto", lookup.compiled, "sd")]
    first = [p for i, p in enumerate(first) if p not in first[:i]]
    n = arm.trials or budget
    study = optuna.create_study(
        study_name=f"replay {arm.name} {lookup.style} {seed} {n}",  # Hyperband's brackets hash the study's name
        direction="maximize",
        sampler=arm.sampler_for(seed, n, len(first), PRUNER_STARTUP),
        pruner=arm.pruner_for(PRUNER_STARTUP),
    )
    for params in first:
        study.enqueue_trial(params)
    trials: list[Trial] = []
    top = max(lookup.rungs)

    def objective(trial: optuna.Trial) -> float:
        params = lookup.compiled.suggest(trial)
        config, distance = lookup.snap(params)
        steps = int(params.get("steps", lookup.compiled.fixed.get("steps", top)))
        best: tuple[tuple[float, ...], int, Reading] | None = None
        for step in lookup.reports(steps, arm.eval_every):
            r = lookup.search[(config, step)]
            rank = _rung_rank(["maximize"], [r.value], {"excess": r.excess})  # tune's own order of a trial's rungs
            if best is None or rank >= best[0]:
                best = (rank, step, r)
            trial.report(r.value - r.excess, step)  # what tune's pruner sees: the value less the excess
            if trial.should_prune():
                trials.append(Trial(config, step, True, step, r.value, r.feasible, distance))
                raise optuna.TrialPruned()
        assert best is not None
        _, step, r = best
        trials.append(Trial(config, lookup.rung(steps), False, step, r.value, r.feasible, distance))
        return r.value

    study.optimize(objective, n_trials=n)
    return trials


def export_after(trials: list[Trial], lookup: StyleLookup, top_k: int = CONFIRM_TOP_K) -> Export:
    """What ``tune`` exports after ``trials``: the top ``top_k`` feasible complete trials by search value
    (distinct adapters), re-scored on the confirmation seeds; the best of those still feasible there (none: no
    export)."""
    spent = sum(t.steps for t in trials)
    ranked = sorted(
        ((i, t) for i, t in enumerate(trials) if not t.pruned and t.feasible), key=lambda it: (-it[1].value, it[0])
    )
    # A configuration the sampler proposed again is the same trained adapter in the table, its values identical:
    # only its first trial counts, so the confirmed ones are distinct adapters, as a real study's near repeats are.
    seen: set[tuple[int, int]] = set()
    done = []
    for i, t in ranked:
        if (t.config, t.step) not in seen:
            seen.add((t.config, t.step))
            done.append((i, t))
    best: tuple[float, int, Trial, Reading] | None = None
    for i, t in done[:top_k]:
        c = lookup.confirm[(t.config, t.step)]
        if c.feasible and (best is None or (c.value, -i) > (best[0], -best[1])):
            best = (c.value, i, t, c)
    if best is None:
        return Export(spent)
    return Export(spent, best[2].config, best[2].step, best[3])


def curve(trials: list[Trial], lookup: StyleLookup) -> list[Export]:
    """The export after each trial (the anytime curve)."""
    return [export_after(trials[: k + 1], lookup) for k in range(len(trials))]


def portfolio(lookups: dict[str, StyleLookup], held_out: str, k: int) -> list[dict[str, Any]]:
    """The ``k`` (configuration, rung) pairs that ranked highest on the table's other styles (mean rank of the
    confirmed value, infeasible ones last), as params with ``steps`` at that rung: what a user's earlier studies of
    other styles would give ``--warm-start`` (leave-one-style-out: never the held-out style's own values)."""
    others = [lk for name, lk in lookups.items() if name != held_out]
    if not others:
        return []
    keys = [key for key in others[0].confirm if key[1] >= _fewest(others[0])]
    ranks: dict[tuple[int, int], float] = dict.fromkeys(keys, 0.0)
    for lk in others:
        order = sorted(keys, key=lambda key: (not lk.confirm[key].feasible, -lk.confirm[key].value))
        for r, key in enumerate(order):
            ranks[key] += r / len(others)
    chosen: list[tuple[int, int]] = []
    for c, step in sorted(keys, key=lambda key: (ranks[key], key)):  # distinct configurations, each at its best rung
        if len(chosen) < k and all(c != o for o, _ in chosen):
            chosen.append((c, step))
    return [{**others[0].params[c], "steps": step} for c, step in chosen]


def _fewest(lookup: StyleLookup) -> int:
    """The space's fewest steps (a trial never trains fewer); the first rung when steps is not searched."""
    dist = lookup.compiled.distributions.get("steps")
    return int(getattr(dist, "low", min(lookup.rungs)))
