"""A worker: joins a study through its storage and runs trials until the budget is spent.

``autolora worker --storage URL --study-name NAME`` needs nothing else: the study stores the
resolved config of the ``autolora tune`` that made it (base model, data, search space,
objective), so every worker runs the same experiment; a worker of another autolora version, or
whose search space compiles to another hash, is refused. ``tune --workers N`` and
``tune --process-per-trial`` start workers on this machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from autolora import __version__
from autolora.errors import UserError
from autolora.plan import ATTR


class StorageLost(Exception):
    """The storage stayed unreachable through every retry; the worker exits (code 3)."""


def study_config(storage_url: str, study_name: str) -> dict[str, Any]:
    """The resolved config stored with a study, after checking the study and the version."""
    import optuna

    from autolora.plan import check_storage

    check_storage(storage_url, None)
    try:
        summaries = optuna.study.get_all_study_names(storage=storage_url)
    except Exception as e:
        raise UserError(f"storage {storage_url}: cannot be read ({type(e).__name__}: {str(e)[:120]})") from None
    if study_name not in summaries:
        raise UserError(
            f"storage {storage_url}: no study named '{study_name}' (studies: {', '.join(summaries) or 'none'})"
        )
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    attrs = study.user_attrs
    if ATTR + "config" not in attrs:
        raise UserError(f"study '{study_name}' was not made by autolora tune (no stored config)")
    made_by = attrs.get(ATTR + "version")
    if made_by != __version__:
        raise UserError(
            f"study '{study_name}' was made by autolora {made_by}; this worker is autolora {__version__}: "
            f"run the same version everywhere"
        )
    return dict(attrs)


def run_worker(
    storage_url: str,
    study_name: str,
    *,
    trials: int | None = None,
    device: str | None = None,
    timeout: float | None = None,
    mlflow_uri: str | None = None,
    parent_run_id: str | None = None,
    worker_index: int | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Run trials of the study; return how many this worker finished."""
    from autolora.config import config_from_dict
    from autolora.errors import TrialFailed
    from autolora.plan import make_plan
    from autolora.quiet import quiet_libraries
    from autolora.session import Session
    from autolora.storage import BudgetSpent
    from autolora.store import best_numbers, prune_kept
    from autolora.study import open_study
    from autolora.tracking import ParentRun, Tracker
    from autolora.trial import TrialRunner

    quiet_libraries()
    attrs = study_config(storage_url, study_name)
    data = attrs[ATTR + "config"]
    data["study"]["storage"] = storage_url
    if device:
        data["model"]["device"] = device
    config = config_from_dict(data, f"study '{study_name}' config")
    plan = make_plan(config)
    session = Session.load(plan)
    session.prepare(plan.run_dir / "cache")
    pop_only = bool(attrs.get(ATTR + "budget"))
    salt = worker_index if worker_index is not None else os.getpid()
    tracker = Tracker(mlflow_uri or attrs.get(ATTR + "mlflow_uri"), f"autolora/{study_name}")
    parent_id = parent_run_id or attrs.get(ATTR + "mlflow_parent_run_id")
    parent = ParentRun(tracker.client, parent_id, tracker.experiment_id) if parent_id else None
    runner = TrialRunner(session, parent, echo=echo, progress=False)
    keep = config.study.keep_top_k
    done = 0

    def after(study: Any, trial: Any) -> None:
        nonlocal done
        done += 1
        prune_kept(plan.run_dir, best_numbers(study, keep))

    failures = 0
    while True:
        try:
            # A different sampler seed per worker: same-seeded workers would draw the same params.
            study = open_study(plan, pop_only=pop_only, seed_salt=salt, record=False)
            study.optimize(
                runner,
                n_trials=None if trials is None else trials - done,
                catch=(TrialFailed,),
                callbacks=[after],
                gc_after_trial=False,
                timeout=timeout,
            )
            break
        except BudgetSpent:
            if not _wait_for_the_dead(plan, study, config.study.heartbeat_interval):
                break
        except Exception as e:
            if not _is_connection_error(e):
                raise
            failures += 1
            if failures > config.study.storage_retries:
                raise StorageLost(
                    f"lost the connection to storage {storage_url} ({type(e).__name__}); gave up after "
                    f"{config.study.storage_retries} retries. Finished trials are safe in the study; "
                    f"restart the worker when the database is back"
                ) from None
            wait = min(60.0, 2.0**failures)
            echo(
                f"worker: storage unreachable ({type(e).__name__}); retry {failures}/"
                f"{config.study.storage_retries} in {wait:.0f}s"
            )
            time.sleep(wait)
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


def _wait_for_the_dead(plan: Any, study: Any, interval: int) -> bool:
    """The budget is taken, but trials still run: wait until they finish, or until one whose
    worker died is failed by the heartbeat check and queued again (then return True: work again).

    Without this, the last worker alive would leave a dead worker's trial RUNNING for ever.
    """
    import optuna

    if interval <= 0:
        return False
    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if any(t.state == optuna.trial.TrialState.WAITING for t in trials):
            return True
        if not any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
            return False
        time.sleep(min(interval, 2))
