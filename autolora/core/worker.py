"""A worker: joins a study through its storage and runs trials until the budget is spent.

``autolora worker --storage URL --study-name NAME`` needs nothing else: the study stores the job
that made it (``tune``, ``fuse``) and its resolved config (base model, data, search space,
objective), so every worker runs the same experiment; a worker of another autolora version, or
whose search space compiles to another hash, is refused. A run of several studies (``fuse``: its
fixed baselines, linear fusion, then DLF, which starts from linear's best) is worked whole, in its run
order, whichever of its studies is named, with the models loaded once: a study may wait on an earlier
one (DLF on linear), so a worker that skipped the earlier ones could wait forever. ``--workers N``
and ``--process-per-trial`` start workers on this machine.

Dead workers: a trial whose worker dies stops beating; once its heartbeat is older than the grace
period any worker fails it (and Optuna's retry callback queues it again). A worker leaving a study
first waits for trials that may be dead (see ``_wait_for_the_dead``), so the last worker out never
leaves one RUNNING.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora import __version__
from autolora.config import config_from_dict
from autolora.core.checks import check_storage
from autolora.core.interrupts import first_interrupt_only
from autolora.core.job import signed, this_worker
from autolora.core.storage import BudgetSpent, fail_started, heartbeats, make_storage
from autolora.core.study import ATTR, open_study, run_order
from autolora.core.tracking import ParentRun, Tracker
from autolora.errors import UserError
from autolora.quiet import quiet_libraries

if TYPE_CHECKING:
    import optuna

    from autolora.core.job import Job

JobResolver = Callable[[str], "type[Job]"]


class StorageLost(Exception):
    """The storage stayed unreachable through every retry; the worker exits (code 3)."""


def study_attrs(storage: Any, storage_url: str, study_name: str) -> dict[str, Any]:
    """The user attributes stored with a study made by autolora, after checking the study and the version."""
    try:
        names = [s.study_name for s in storage.get_all_studies()]
    except Exception as e:
        raise UserError(f"storage {storage_url}: cannot be read ({type(e).__name__}: {str(e)[:120]})") from None
    if study_name not in names:
        raise UserError(f"storage {storage_url}: no study named '{study_name}' (studies: {', '.join(names) or 'none'})")
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name))
    if ATTR + "config" not in attrs:
        raise UserError(f"study '{study_name}' was not made by autolora tune or fuse (no stored config)")
    made_by = attrs.get(ATTR + "version")
    if made_by != __version__:
        raise UserError(
            f"study '{study_name}' was made by autolora {made_by}; this worker is autolora {__version__}: "
            f"run the same version everywhere"
        )
    return dict(attrs)


@first_interrupt_only()  # the first Ctrl-C stops the worker; later ones are ignored while it records that
def run_worker(
    storage_url: str,
    study_name: str,
    jobs: JobResolver,
    *,
    trials: int | None = None,
    device: str | None = None,
    timeout: float | None = None,
    mlflow_uri: str | None = None,
    parent_run_id: str | None = None,
    worker_index: int | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Run trials of the study (and of its run's later studies); return how many this worker finished.

    Args:
        jobs: Job kind (``tune``, ``fuse``) -> its Job class.
    """

    quiet_libraries()
    check_storage(storage_url, None, must_exist=True)
    reader = make_storage(storage_url, pool_size=1)
    attrs = study_attrs(reader, storage_url, study_name)
    job_class = jobs(str(attrs.get(ATTR + "job", "tune")))
    data = attrs[ATTR + "config"]
    data["study"]["storage"] = storage_url
    if device:
        data["model"]["device"] = device
    config = config_from_dict(data, f"study '{study_name}' config", job_class.config_class)
    job = job_class.plan(config)
    try:
        job.load()
        specs = run_order(job.studies())
        names = [s.name for s in specs]
        if study_name not in names:
            raise UserError(f"study '{study_name}': its stored config now makes studies {names}")
        # Read what the loop needs, then close this storage: the trials run on their own (one pool at a time).
        budgets = {
            s.name: bool(reader.get_study_user_attrs(reader.get_study_id_from_name(s.name)).get(ATTR + "budget"))
            for s in specs
        }
        reader.remove_session()
        reader.engine.dispose()
        job.prepare(job.run_dir / "cache")
        tracker = Tracker(mlflow_uri or attrs.get(ATTR + "mlflow_uri"), f"autolora/{config.study_name}")
        parent_id = parent_run_id or attrs.get(ATTR + "mlflow_parent_run_id")
        parent = ParentRun(tracker.client, parent_id, tracker.experiment_id) if parent_id else None
        salt = worker_index if worker_index is not None else os.getpid()
        done = 0
        t0 = time.perf_counter()
        for spec in specs:
            left = None if trials is None else trials - done
            if left is not None and left <= 0:
                break
            spent = time.perf_counter() - t0
            if timeout is not None and spent >= timeout:
                break
            budget = budgets[spec.name]
            objective = signed(job.objective(spec, parent, echo, False))
            done += _work(job, spec, objective, budget, salt, left, None if timeout is None else timeout - spent, echo)
    finally:
        job.close()
    return done


def _work(
    job: Job,
    spec: Any,
    objective: Any,
    budget: bool,
    salt: int,
    trials: int | None,
    timeout: float | None,
    echo: Callable[[str], None],
) -> int:
    """Run trials of one study until its budget is spent (or ``trials``, ``timeout``); then see to the dead."""

    settings = job.config.study
    url = job.config.storage_url
    done = 0

    def after(study: Any, trial: Any) -> None:
        nonlocal done
        done += 1
        job.after_trial(study, trial)

    failures = 0
    storage = None
    while True:
        try:
            if storage is None:
                storage = make_storage(
                    url, settings.heartbeat_interval, settings.grace_period, settings.retry_failed, pop_only=budget
                )
            # A different sampler seed per worker: same-seeded workers would draw the same params.
            study = open_study(spec, storage, settings, seed_salt=salt)
            started = job.before_study(spec, study)
            if started is not spec:  # a warm start (see Job.before_study)
                spec, study = started, open_study(started, storage, settings, seed_salt=salt)
            study.optimize(
                objective,
                n_trials=None if trials is None else trials - done,
                catch=job.trial_errors,
                callbacks=[after],
                gc_after_trial=False,
                timeout=timeout,
            )
            # Done here (trials, timeout): leave no dead worker's trial RUNNING behind.
            _wait_for_the_dead(study, storage, settings.heartbeat_interval, budget=False)
            break
        except BudgetSpent:
            if not _wait_for_the_dead(study, storage, settings.heartbeat_interval, budget=True):
                break
        except KeyboardInterrupt:
            if storage is not None:  # a trial taken but not yet in its objective is failed here, not left RUNNING
                fail_started(storage)
            raise
        except Exception as e:
            if not _is_connection_error(e):
                raise
            failures += 1
            if failures > settings.storage_retries:
                raise StorageLost(
                    f"lost the connection to storage {url} ({type(e).__name__}); gave up after "
                    f"{settings.storage_retries} retries. Finished trials are safe in the study; "
                    f"restart the worker when the database is back"
                ) from None
            wait = min(60.0, 2.0**failures)
            tries = settings.storage_retries
            echo(f"worker: storage unreachable ({type(e).__name__}); retry {failures}/{tries} in {wait:.0f}s")
            time.sleep(wait)
    if storage is not None:  # this study is done: its pool goes before the next study's opens
        storage.remove_session()
        storage.engine.dispose()
    return done


def _is_connection_error(e: BaseException) -> bool:
    import optuna
    import sqlalchemy.exc

    seen: BaseException | None = e
    while seen is not None:
        if isinstance(
            seen,
            (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, optuna.exceptions.StorageInternalError),
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _wait_for_the_dead(study: optuna.Study, storage: Any, interval: int, budget: bool) -> bool:
    """Before leaving the study, see that no dead worker's trial stays RUNNING; True: there is work again.

    A trial's heartbeat is fresh for up to the grace period after its worker died, so a dead trial
    cannot be told from a live one by its age. Budgeted study (no trial left to pop): wait until every
    running trial has finished or been failed as stale (a failed trial queued again is work: return
    True), since the budget is spent only once every trial is done. Otherwise (per-worker ``--trials``,
    a timeout): wait only for trials that may be dead. A trial is alive when its worker is a live
    autolora process on this machine, or when its heartbeat moves; one whose heartbeat stands still is
    waited for until it finishes or goes stale and is failed (and queued again) by Optuna.
    """
    import optuna

    if interval <= 0:
        return False
    study_id = storage.get_study_id_from_name(study.study_name)
    first_seen: dict[int, Any] = {}
    alive: set[int] = set()
    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if budget and any(t.state == optuna.trial.TrialState.WAITING for t in trials):
            return True
        running = {
            storage.get_trial_id_from_study_id_trial_number(study_id, t.number): t
            for t in trials
            if t.state == optuna.trial.TrialState.RUNNING
        }
        if not running:
            return False
        if not budget:
            beats = heartbeats(storage, study_id)[1]
            for tid, t in running.items():
                if _runs_here(str(t.user_attrs.get("worker", ""))) or (
                    tid in first_seen and beats.get(tid) != first_seen[tid]
                ):
                    alive.add(tid)
                first_seen.setdefault(tid, beats.get(tid))
            if alive >= set(running):
                return False
        time.sleep(min(interval, 2))


def _runs_here(worker: str) -> bool:
    """Whether ``host:pid`` is a live autolora process on this machine (False when it cannot be told)."""

    host, _, pid = worker.rpartition(":")
    if host != this_worker().rpartition(":")[0] or not pid.isdigit():
        return False
    try:
        return b"autolora" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no such process, or no /proc: not known to be alive
        return False
