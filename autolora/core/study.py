"""Opening an Optuna study the way every autolora job does: a fingerprint, directions, sampler and pruner.

A study records what it was made with (``autolora.*`` user attributes): the job kind, the fingerprint of
its search space (a hash of optuna distributions), the directions, the resolved config and the version.
Adding trials to a study made with another space would corrupt it (optuna issues 2564, 2199), so a
mismatch is refused by ``autolora.core.checks.check_existing_study`` before anything is created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autolora import __version__

if TYPE_CHECKING:
    import optuna

    from autolora.config import StudyConfig

ATTR = "autolora."
"""Prefix of every study user attribute autolora writes."""


@dataclass
class StudySpec:
    """One Optuna study a job runs (``tune`` has one, ``fuse`` its DLF study and a linear baseline)."""

    label: str
    """The job's name for it (``tune``; ``dlf`` or ``linear``)."""
    name: str
    """Optuna study name."""
    fingerprint: str
    """Hash of the search space; a stored study with another one is refused."""
    directions: list[str]
    metric_names: list[str]
    objective: str
    """Objective recipe name (for messages)."""
    space_kind: str = "search space"
    """What the fingerprint hashes, in messages (``search space``, ``coefficient space``)."""
    sampler: str = "tpe"
    """Sampler name (see ``make_sampler``), already resolved from ``auto``."""
    sampler_startup: int | None = None
    """TPE's random trials before it models (None: optuna's 10)."""
    constant_liar: bool = False
    """TPE: treat running trials as bad (workers side by side then do not all draw the same point)."""
    pruner: str = "none"
    pruner_startup_trials: int = 2
    first_trials: list[dict[str, Any]] = field(default_factory=list)
    """Params enqueued when the study is new (they count towards the budget)."""
    first_trial_attrs: list[dict[str, Any]] = field(default_factory=list)
    """User attributes of those trials (same order; may be shorter)."""
    attrs: dict[str, Any] = field(default_factory=dict)
    """Extra user attributes (without the ``autolora.`` prefix) set when the study is new."""
    order: int = 0
    """Studies run in ascending order (ties in list order); the list's first is still the run's main study."""
    fixed: bool = False
    """Runs only its ``first_trials`` (fixed points, e.g. training-free baselines): no budget of ``--trials``."""
    x0: dict[str, float] | None = None
    """CMA-ES: the initial mean (a warm start); None: the middle of the space."""


def run_order(specs: list[StudySpec]) -> list[StudySpec]:
    """``specs`` in the order their trials run (``StudySpec.order``)."""
    return sorted(specs, key=lambda s: s.order)


def make_sampler(
    name: str,
    seed: int,
    startup: int | None = None,
    constant_liar: bool = False,
    x0: dict[str, float] | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (tpe, random, cmaes, gp, nsga2, qmc), seeded; ``startup``: TPE's random trials;
    ``x0``: CMA-ES's initial mean."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            constant_liar=constant_liar,
            n_startup_trials=10 if startup is None else startup,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return _cmaes(seed, x0)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")


def _cmaes(seed: int, x0: dict[str, float] | None) -> optuna.samplers.BaseSampler:
    """CMA-ES, from ``x0`` when given. optuna 4.9 deprecated ``x0`` (removal planned for 6.0) without a like
    replacement: its ``source_trials`` (warm-starting CMA-ES) wants a population of trials of the same space, and a
    fusion's warm start is one point of another study. So the warning is silenced here, and an optuna that no
    longer takes ``x0`` starts from the middle (the copied start trial still bounds the result)."""
    import warnings

    import optuna

    if x0 is None:
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, x0=x0)
        except TypeError:
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def make_pruner(name: str, startup: int, multi: bool) -> optuna.pruners.BasePruner:
    """``median``, ``successive_halving``, ``hyperband`` or ``none``; multi-objective studies never prune
    (``Trial.report`` refuses them)."""
    import optuna

    if name == "none" or multi:
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)


def stored_trials(name: str, storage: optuna.storages.BaseStorage) -> int:
    """How many trials study ``name`` already has (0 when it does not exist yet)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


def open_study(
    spec: StudySpec,
    storage: optuna.storages.BaseStorage,
    settings: StudyConfig,
    *,
    seed_salt: int = 0,
    record: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create or resume the study of ``spec`` in ``storage``.

    Args:
        spec: The study.
        storage: An open storage (``autolora.core.storage.make_storage``); reused, never opened here.
        settings: The ``study`` config section (seed).
        seed_salt: Added to the sampler seed (workers: same-seeded samplers would draw the same params).
        record: User attributes (without prefix) to store, as the process that makes the study does;
            None for a worker joining it.
    """
    import optuna

    # A resumed study must not replay the first trials' random draws: offset the seed by the
    # number of trials already stored, which keeps runs reproducible from the same history.
    earlier = stored_trials(spec.name, storage)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=make_sampler(
            spec.sampler,
            settings.seed + earlier + 7919 * seed_salt,
            spec.sampler_startup,
            spec.constant_liar,
            spec.x0,
        ),
        pruner=make_pruner(spec.pruner, spec.pruner_startup_trials, len(spec.directions) > 1),
        directions=spec.directions,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    if record is None:
        return study
    if ATTR + "search_space_hash" not in study.user_attrs:
        study.set_user_attr(ATTR + "search_space_hash", spec.fingerprint)
        study.set_user_attr(ATTR + "directions", spec.directions)
        study.set_user_attr(ATTR + "objective_names", spec.metric_names)
        study.set_user_attr(ATTR + "version", __version__)
        for key, value in spec.attrs.items():
            study.set_user_attr(ATTR + key, value)
        study.set_metric_names(spec.metric_names)
        for i, params in enumerate(spec.first_trials):
            attrs = spec.first_trial_attrs[i] if i < len(spec.first_trial_attrs) else None
            study.enqueue_trial(params, user_attrs=attrs)
    for key, value in record.items():
        study.set_user_attr(ATTR + key, value)
    return study
