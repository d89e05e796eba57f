"""Many workers, one study: exact budgets and the storage's pop-only queue, on SQLite and on a real PostgreSQL
server started by the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from postgres import Postgres
from workerkit import FINISHED, autolora, distinct_params, finish, tune_args

from autolora.core.storage import BudgetSpent, enqueue_budget, fail_started, make_storage


def test_pop_only_storage_refuses_new_trials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/o.db"
    study = optuna.create_study(study_name="b", storage=make_storage(url))
    assert enqueue_budget(study, 3) == 3 and enqueue_budget(study, 3) == 0
    worker = optuna.load_study(study_name="b", storage=make_storage(url, pop_only=True))
    with pytest.raises(BudgetSpent):
        worker.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=10)
    assert [t.state for t in worker.trials] == [optuna.trial.TrialState.COMPLETE] * 3


class _InterruptedSampler(optuna.samplers.RandomSampler):
    """Ctrl-C inside ``study.ask``: the trial is already taken (RUNNING), the objective not yet called."""

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_while_a_trial_is_taken_leaves_none_running(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    study = optuna.create_study(study_name="k", storage=make_storage(url))
    enqueue_budget(study, 3)
    other = make_storage(url, pop_only=True)  # another worker's trial must stay its own
    optuna.load_study(study_name="k", storage=other).ask()
    storage = make_storage(url, pop_only=True)
    worker = optuna.load_study(study_name="k", storage=storage)
    worker.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # finished: not failed later
    worker.sampler = _InterruptedSampler()
    with pytest.raises(KeyboardInterrupt):
        worker.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    running = optuna.trial.TrialState.RUNNING
    assert [t.state for t in optuna.load_study(study_name="k", storage=url).trials].count(running) == 2
    assert fail_started(storage) == 1 and fail_started(storage) == 0
    states = {
        t.number: (t.state, t.user_attrs.get("fail_reason"))
        for t in optuna.load_study(study_name="k", storage=url).trials
    }
    assert states == {
        0: (running, None),
        1: (optuna.trial.TrialState.COMPLETE, None),
        2: (optuna.trial.TrialState.FAIL, "interrupted (Ctrl-C)"),
    }


POP = """
import sys, optuna
from autolora.core.storage import BudgetSpent, make_storage
study = optuna.load_study(study_name="race", storage=make_storage(sys.argv[1], pop_only=True))
n = 0
try:
    while True:
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        n += 1
except BudgetSpent:
    print(n)
"""


def test_sqlite_pop_is_atomic_across_processes(tmp_path: Path) -> None:
    # Plain pysqlite lets two processes take the same waiting trial ("Cannot tell a COMPLETE trial").
    url = f"sqlite:///{tmp_path}/race.db"
    enqueue_budget(optuna.create_study(study_name="race", storage=make_storage(url)), 60)
    procs = [subprocess.Popen([sys.executable, "-c", POP, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]  # fmt: skip
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-300:] for _, err in results]
    assert sum(int(out) for out, _ in results) == 60
    study = optuna.load_study(study_name="race", storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 60


def test_local_workers_share_an_exact_budget(tmp_path: Path) -> None:
    rc, out, err = finish(autolora(*tune_args(tmp_path, "loc", f"sqlite:///{tmp_path}/loc.db"), "--trials", "4",
                                   "--workers", "2", cwd=tmp_path))  # fmt: skip
    assert rc == 0, err
    study = optuna.load_study(study_name="loc", storage=f"sqlite:///{tmp_path}/loc.db")
    assert len(study.trials) == 4 and all(t.state in FINISHED for t in study.trials)
    assert distinct_params(study)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both workers took trials
    assert out.count("worker: ") == 2


def test_postgres_cluster_workers(tmp_path: Path, pg: Postgres) -> None:
    rc, out, err = finish(autolora(*tune_args(tmp_path, "pgq", pg.url), "--trials", "4", "--queue-only",
                                   cwd=tmp_path))  # fmt: skip
    assert rc == 0, err
    assert f"autolora worker --storage {pg.url} --study-name pgq" in out
    workers = [autolora("worker", "--storage", pg.url, "--study-name", "pgq", cwd=tmp_path) for _ in range(2)]
    results = [finish(w) for w in workers]
    assert all(r[0] == 0 for r in results), [r[2][-500:] for r in results]
    study = optuna.load_study(study_name="pgq", storage=pg.url)
    assert len(study.trials) == 4 and all(t.state in FINISHED for t in study.trials)
    assert distinct_params(study)
    rc, out, _ = finish(autolora("show", "--storage", pg.url, "--study-name", "pgq", cwd=tmp_path))
    assert rc == 0 and "study 'pgq': 4 trials" in out


def test_worker_refuses_a_study_it_cannot_run(tmp_path: Path, pg: Postgres) -> None:
    optuna.create_study(study_name="foreign", storage=pg.url)
    rc, _, err = finish(autolora("worker", "--storage", pg.url, "--study-name", "foreign", cwd=tmp_path))
    assert rc == 2 and "was not made by autolora tune" in err
    rc, _, err = finish(autolora("worker", "--storage", pg.url, "--study-name", "nope", cwd=tmp_path))
    assert rc == 2 and "no study named 'nope'" in err


def test_same_study_launched_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/twice.db"
    procs = [autolora(*tune_args(tmp_path, "twice", url), "--trials", "2", cwd=tmp_path) for _ in range(2)]
    results = [finish(p) for p in procs]
    assert all(r[0] == 0 for r in results), [r[2][-300:] for r in results]
    study = optuna.load_study(study_name="twice", storage=url)
    assert len(study.trials) == 4 and all(t.state in FINISHED for t in study.trials)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
