"""Optuna storage for one process or many: heartbeats, retries of dead trials, an exact budget.

Many workers share a study through Optuna's RDB storage (SQLite locally, PostgreSQL or MySQL
for clusters). Two things Optuna leaves to us:

- An exact trial budget across workers. ``autolora tune --workers``/``--trials`` enqueues the
  budget as WAITING trials; workers then run in *pop-only* mode, where the storage refuses to
  create a trial that was not enqueued, so ``study.ask`` can only take a waiting one. Optuna's
  pop is atomic through a row lock on PostgreSQL; on SQLite only with ``BEGIN IMMEDIATE``
  transactions, which ``make_storage`` sets up. N trials means N.
- A dead worker's trial: with a heartbeat, a trial silent for the grace period is failed by the
  next worker that starts a trial, and Optuna's retry callback queues it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from autolora.core.interrupts import deferred, without_interrupts
from autolora.core.locks import sqlite_init_lock

if TYPE_CHECKING:
    import optuna


T = TypeVar("T")


class BudgetSpent(Exception):
    """A pop-only worker found no waiting trial: the study's budget is used up."""


def make_storage(
    url: str,
    heartbeat_interval: int = 0,
    grace_period: int | None = None,
    retry_failed: int = 0,
    pop_only: bool = False,
    pool_size: int = 2,
) -> optuna.storages.RDBStorage:
    """An ``RDBStorage`` for ``url`` with autolora's heartbeat, retry and budget settings.

    Open one per process and reuse it: every ``RDBStorage`` has its own connection pool. On a database
    server a process holds at most ``pool_size`` + 1 connections (the trial's thread and Optuna's
    heartbeat thread each take one, one more may overflow briefly), so N workers need about 3N of
    the server's ``max_connections``.
    """
    import optuna
    from optuna.storages import RDBStorage

    class _Storage(RDBStorage):
        started: set[int]
        """Trials this process set RUNNING and has not finished (see ``fail_started``)."""

        # Enqueued trials are created with a template, ask() creates one without. Optuna's
        # _CachedStorage (which wraps every RDBStorage) calls the private _create_new_trial, so
        # that is the one place to refuse; tests/test_workers.py fails if Optuna changes it.
        def _create_new_trial(self, study_id: int, template_trial: Any = None) -> Any:
            if pop_only and template_trial is None:
                raise BudgetSpent()
            with deferred():
                frozen = super()._create_new_trial(study_id, template_trial)
            if frozen.state == optuna.trial.TrialState.RUNNING:
                self.started.add(frozen._trial_id)
            return frozen

        # A waiting trial is taken (popped) by setting it RUNNING; the trial ends by a finished state.
        def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
            with deferred():
                done = super().set_trial_state_values(trial_id, state, values)
            if done and state == optuna.trial.TrialState.RUNNING:
                self.started.add(trial_id)
            elif state.is_finished():
                self.started.discard(trial_id)
            return bool(done)

        # Ctrl-C inside a SQLite write would leave the write lock held (core.interrupts): hold it for the write.
        set_trial_param = without_interrupts(RDBStorage.set_trial_param)
        set_trial_user_attr = without_interrupts(RDBStorage.set_trial_user_attr)
        set_trial_system_attr = without_interrupts(RDBStorage.set_trial_system_attr)
        set_trial_intermediate_value = without_interrupts(RDBStorage.set_trial_intermediate_value)
        set_study_user_attr = without_interrupts(RDBStorage.set_study_user_attr)
        set_study_system_attr = without_interrupts(RDBStorage.set_study_system_attr)

    engine: dict[str, Any] = {"pool_pre_ping": True, "pool_size": pool_size, "max_overflow": 1}
    sqlite = url.startswith("sqlite")
    if sqlite:
        # Several local processes on one SQLite file: wait for the lock instead of failing, and
        # let SQLAlchemy (not pysqlite) start transactions, so that they can be made IMMEDIATE.
        engine = {"connect_args": {"timeout": 60, "isolation_level": None}}
    kwargs: dict[str, Any] = {}
    if heartbeat_interval > 0:
        kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
        if retry_failed:
            try:  # Optuna >= 4.9 renamed the callback and its argument
                from optuna.storages import RetryHeartbeatStaleTrialCallback

                kwargs["heartbeat_stale_trial_callback"] = RetryHeartbeatStaleTrialCallback(max_retry=retry_failed)
            except ImportError:
                from optuna.storages import RetryFailedTrialCallback

                kwargs["failed_trial_callback"] = RetryFailedTrialCallback(max_retry=retry_failed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with sqlite_init_lock(url):
        storage = with_retries(lambda: _Storage(url, engine_kwargs=engine, **kwargs))
    storage.started = set()
    if sqlite:
        _immediate_transactions(storage.engine)
    return storage


def _immediate_transactions(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it starts.

    pysqlite runs a SELECT outside any transaction, so two processes can both read a trial as
    WAITING and both take it (Optuna's pop relies on SELECT ... FOR UPDATE, which SQLite
    ignores). ``BEGIN IMMEDIATE`` serialises read-check-update: SQLAlchemy's documented recipe
    for transactional pysqlite.
    """
    from sqlalchemy import event

    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    engine.dispose()


def with_retries(open_storage: Callable[[], T], attempts: int = 5) -> T:
    """Open a storage, retrying when another process is creating its tables at the same moment.

    Two ``tune`` runs started together on a new database both try to create Optuna's tables
    and its alembic version row; the loser gets an integrity or lock error and succeeds on a
    second look. A URL that cannot work fails the same way every time and is re-raised.
    """
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return open_storage()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def fail_started(storage: optuna.storages.RDBStorage, reason: str = "interrupted (Ctrl-C)") -> int:
    """Fail the trials this process took and left RUNNING; return how many.

    Optuna fails a trial interrupted inside the objective, but not one interrupted while ``study.ask``
    takes it from the queue or samples its parameters (a waiting trial is RUNNING from the moment it is
    popped): Ctrl-C there would leave it RUNNING, owned by no live process, until its heartbeat goes
    stale (or forever without one). Call this where the process stops on ``KeyboardInterrupt``.
    """
    import optuna

    failed = 0
    for trial_id in sorted(getattr(storage, "started", ())):
        trial = storage.get_trial(trial_id)
        if trial.state != optuna.trial.TrialState.RUNNING:
            continue
        if "fail_reason" not in trial.user_attrs:
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        failed += 1
    return failed


def enqueue_budget(study: optuna.Study, n: int) -> int:
    """Make sure ``n`` trials wait in the study (leftovers of an interrupted run count); return how many were added."""
    import optuna

    waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    for _ in range(max(0, n - waiting)):
        study.enqueue_trial({}, user_attrs={"autolora.budget": True})
    return max(0, n - waiting)


def heartbeats(storage: optuna.storages.RDBStorage, study_id: int) -> tuple[Any, dict[int, Any]]:
    """The database's time now and the last heartbeat of each RUNNING trial of the study that has one.

    Optuna keeps heartbeats in its own table and exposes only "stale or not" (``fail_stale_trials``);
    ``show`` and a leaving worker need the beats. This reads Optuna's ``trial_heartbeats`` table through
    its SQLAlchemy models, the one place that does (tests/test_workers.py fails if the schema changes).
    The database's clock is used on both sides, as Optuna does.
    """
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.trial import TrialState
    from sqlalchemy import orm

    with orm.Session(storage.engine) as session:
        now = session.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        rows = session.execute(
            sqlalchemy.select(models.TrialHeartbeatModel.trial_id, models.TrialHeartbeatModel.heartbeat)
            .join(models.TrialModel, models.TrialModel.trial_id == models.TrialHeartbeatModel.trial_id)
            .where(models.TrialModel.study_id == study_id, models.TrialModel.state == TrialState.RUNNING)
        ).all()
    return now, {int(tid): beat for tid, beat in rows}


def heartbeat_ages(storage: optuna.storages.RDBStorage, study_id: int) -> dict[int, float]:
    """Seconds since the last heartbeat of each RUNNING trial that has one (trial id -> age)."""
    now, beats = heartbeats(storage, study_id)
    if now is None:
        return {}
    now = now.replace(tzinfo=None)
    return {tid: (now - beat.replace(tzinfo=None)).total_seconds() for tid, beat in beats.items()}
