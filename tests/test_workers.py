"""Many workers, one study: exact budgets, dead workers, lost databases, Ctrl-C; on SQLite and on
a real PostgreSQL server started by the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import DATA, FAST, fuse_args, fusion_inputs, require, running_in, wait_for
from postgres import Postgres, available, postgres

from autolora.core.storage import BudgetSpent, enqueue_budget, fail_started, make_storage

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    require(available(), "PostgreSQL's server binaries (Debian's postgresql)")
    with postgres() as server:
        yield server


def autolora(*args: str, cwd: Path, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "autolora", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )  # type: ignore[call-overload]


def finish(proc: subprocess.Popen[str], timeout: float = 900) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def tune_args(tmp_path: Path, name: str, storage: str, *extra: str) -> list[str]:
    return ["tune", "--out", str(tmp_path / name), "--study-name", name, "--storage", storage,
            "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db", *FAST, *extra]  # fmt: skip


def distinct_params(study: optuna.Study) -> bool:
    done = [tuple(sorted(t.params.items())) for t in study.trials if t.state in FINISHED]
    return len(done) == len(set(done))


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


def test_kill_9_costs_one_trial(tmp_path: Path, pg: Postgres) -> None:
    space = tmp_path / "slow.yaml"
    space.write_text((DATA / "tiny.yaml").read_text().replace("{low: 4, high: 8, step: 2}", "60"))
    args = tune_args(tmp_path, "k9", pg.url, "--trials", "4", "--queue-only", "--search-space", str(space),
                     "--set", "study.heartbeat_interval=1", "--set", "study.grace_period=3")  # fmt: skip
    rc, _, err = finish(autolora(*args, cwd=tmp_path))
    assert rc == 0, err
    victim = autolora("worker", "--storage", pg.url, "--study-name", "k9", cwd=tmp_path)
    trials = wait_for(pg.url, "k9", running_in(victim), "the victim to start a trial")
    running = [t for t in trials if running_in(victim)([t])]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = autolora("worker", "--storage", pg.url, "--study-name", "k9", cwd=tmp_path)
    rc, _, err = finish(survivor)
    assert rc == 0, err
    study = optuna.load_study(study_name="k9", storage=pg.url)
    states = {t.number: t.state for t in study.trials}
    killed = running[0].number
    assert states[killed] == optuna.trial.TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].state in FINISHED  # queued again once, with the same params
    assert retried[0].params == study.trials[killed].params
    others = [t for t in study.trials if t.number != killed]
    assert len(others) == 4 and all(t.state in FINISHED for t in others)


def test_lost_database_stops_the_worker_cleanly(tmp_path: Path, pg: Postgres) -> None:
    space = tmp_path / "slow.yaml"
    space.write_text((DATA / "tiny.yaml").read_text().replace("{low: 4, high: 8, step: 2}", "40"))
    args = tune_args(tmp_path, "lost", pg.url, "--trials", "6", "--queue-only", "--search-space", str(space),
                     "--set", "study.storage_retries=2")  # fmt: skip
    rc, _, err = finish(autolora(*args, cwd=tmp_path))
    assert rc == 0, err
    worker = autolora("worker", "--storage", pg.url, "--study-name", "lost", cwd=tmp_path)
    trials = wait_for(pg.url, "lost", lambda ts: any(t.state in FINISHED for t in ts), "a finished trial")
    done = [t for t in trials if t.state in FINISHED]
    pg.stop()
    try:
        rc, out, err = finish(worker, timeout=600)
    finally:
        pg.start()
    assert rc == 3, err
    assert "lost the connection to storage" in err and "restart the worker" in err
    assert "retry 1/2" in out
    study = optuna.load_study(study_name="lost", storage=pg.url)
    assert sum(1 for t in study.trials if t.state in FINISHED) >= len(done)


def test_ctrl_c_stops_all_workers(tmp_path: Path) -> None:
    space = tmp_path / "slow.yaml"
    # Long trials (40 steps of 256 pictures): whenever the signal comes, it lands mid-trial.
    space.write_text((DATA / "tiny.yaml").read_text().replace("{low: 4, high: 8, step: 2}", "40"))
    url = f"sqlite:///{tmp_path}/c.db"
    args = tune_args(tmp_path, "cc", url, "--search-space", str(space), "--set", "train.batch_size=256")
    proc = autolora(*args, "--trials", "6", "--workers", "2", cwd=tmp_path)
    running = optuna.trial.TrialState.RUNNING
    wait_for(url, "cc", lambda ts: sum(t.state == running for t in ts) == 2, "both workers to run a trial")
    assert proc.poll() is None, f"the study ended before the signal: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc, timeout=900)
    assert rc == 130, err
    study = optuna.load_study(study_name="cc", storage=url)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    # Each worker fails the trial it was running; one caught between two trials has none to fail.
    assert sum(1 for t in study.trials if t.user_attrs.get("fail_reason") == "interrupted (Ctrl-C)") >= 1
    out = subprocess.run(["pgrep", "-f", "--study-name cc"], capture_output=True, text=True).stdout
    assert not out.strip(), "a worker outlived Ctrl-C"


def test_same_study_launched_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/twice.db"
    procs = [autolora(*tune_args(tmp_path, "twice", url), "--trials", "2", cwd=tmp_path) for _ in range(2)]
    results = [finish(p) for p in procs]
    assert all(r[0] == 0 for r in results), [r[2][-300:] for r in results]
    study = optuna.load_study(study_name="twice", storage=url)
    assert len(study.trials) == 4 and all(t.state in FINISHED for t in study.trials)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]


def slow_space(tmp_path: Path, steps: int) -> Path:
    space = tmp_path / "slow.yaml"
    space.write_text((DATA / "tiny.yaml").read_text().replace("{low: 4, high: 8, step: 2}", str(steps)))
    return space


def test_last_worker_out_fails_a_dead_trial_without_a_budget(tmp_path: Path) -> None:
    # The study has no budget (made with --trials 0); workers come with their own --trials. The survivor
    # finishes its trial well within the grace period of the victim's, so it has to wait for it before leaving.
    url = f"sqlite:///{tmp_path}/nb.db"
    args = tune_args(tmp_path, "nb", url, "--trials", "0", "--search-space", str(slow_space(tmp_path, 60)),
                     "--set", "study.heartbeat_interval=1", "--set", "study.grace_period=20")  # fmt: skip
    rc, _, err = finish(autolora(*args, cwd=tmp_path))
    assert rc == 0, err
    victim = autolora("worker", "--storage", url, "--study-name", "nb", "--trials", "3", cwd=tmp_path)
    trials = wait_for(url, "nb", running_in(victim), "the victim to start a trial")
    killed = next(t.number for t in trials if running_in(victim)([t]))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    rc, out, err = finish(autolora("worker", "--storage", url, "--study-name", "nb", "--trials", "1", cwd=tmp_path))
    assert rc == 0, err
    study = optuna.load_study(study_name="nb", storage=url)
    assert study.trials[killed].state == optuna.trial.TrialState.FAIL
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert sum(1 for t in study.trials if t.state in FINISHED and t.number != killed) >= 1


def test_show_marks_a_dead_workers_trial_stale(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/st.db"
    args = tune_args(tmp_path, "st", url, "--trials", "2", "--queue-only", "--search-space",
                     str(slow_space(tmp_path, 60)), "--set", "study.heartbeat_interval=1",
                     "--set", "study.grace_period=3")  # fmt: skip
    rc, _, err = finish(autolora(*args, cwd=tmp_path))
    assert rc == 0, err
    victim = autolora("worker", "--storage", url, "--study-name", "st", cwd=tmp_path)
    wait_for(url, "st", running_in(victim), "the victim to start a trial")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    deadline = time.time() + 900
    out = ""
    while time.time() < deadline and "STALE" not in out:
        rc, out, err = finish(autolora("show", str(tmp_path / "st"), cwd=tmp_path))
        assert rc == 0, err
    stale = [ln for ln in out.splitlines() if " STALE " in ln]
    assert len(stale) == 1 and "its worker is probably dead" in stale[0], out


@pytest.fixture(scope="module")
def fusion(tiny_sd: object, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return fusion_inputs(tiny_sd, tmp_path_factory.mktemp("fusion"))


def fuse_studies(url: str, name: str) -> dict[str, optuna.Study]:
    return {n: optuna.load_study(study_name=n, storage=url) for n in (name, f"{name}-linear")}


def test_fuse_local_workers_share_an_exact_budget(tmp_path: Path, fusion: dict[str, object]) -> None:
    url = f"sqlite:///{tmp_path}/fw.db"
    args = [*fuse_args(fusion, tmp_path / "fw"), "--study-name", "fw", "--storage", url, "--trials", "3",
            "--workers", "2", "--set", "fuse.baselines=[klora]"]  # fmt: skip
    rc, out, err = finish(autolora(*args, cwd=tmp_path))
    assert rc == 0, err
    studies = fuse_studies(url, "fw")
    for study in studies.values():
        run = [t for t in study.trials if t.user_attrs.get("start") != "linear"]
        assert len(run) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        assert set(study.trials[0].params.values()) == {1.0}  # plain stacking first, as in-process
        assert distinct_params(study)
        assert all(t.user_attrs.get("worker") for t in run)  # run by the workers
    # The workers ran linear fusion first; the one reaching DLF copied linear's best in as its start, once (not
    # when linear's best is its trial 0, plain stacking: DLF's own trial 0 is that blend already).
    copies = [t for t in studies["fw"].trials if t.user_attrs.get("start") == "linear"]
    linear_best = studies["fw-linear"].best_trial
    assert len(copies) == (linear_best.number != 0)
    for copy in copies:
        assert copy.values == linear_best.values and copy.user_attrs["copied_from"] == f"fw-linear#{linear_best.number}"
    fixed = optuna.load_study(study_name="fw-baselines", storage=url).trials  # its fixed trials, no more
    assert sorted(t.params["baseline"] for t in fixed) == ["klora:ink", "klora:water"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("worker") for t in fixed)
    assert out.count("worker: ") == 2  # both started, joined and left cleanly (which took trials is the race's)
    n_dlf = 3 + len(copies)
    assert f"dlf     fw: {n_dlf} complete" in out and "linear  fw-linear: 3 complete" in out
    rc, out, err = finish(autolora("show", str(tmp_path / "fw"), cwd=tmp_path))
    assert rc == 0 and f"[dlf] study 'fw': {n_dlf} trials" in out and "[linear] study 'fw-linear': 3 trials" in out


def test_fuse_workers_on_postgres_survive_kill_9(tmp_path: Path, pg: Postgres, fusion: dict[str, object]) -> None:
    args = [*fuse_args(fusion, tmp_path / "fk"), "--study-name", "fk", "--storage", pg.url, "--trials", "4",
            "--queue-only", "--set", "eval.inference_steps=150", "--set", "study.heartbeat_interval=1",
            "--set", "study.grace_period=3"]  # fmt: skip
    rc, out, err = finish(autolora(*args, cwd=tmp_path))
    assert rc == 0, err
    assert f"autolora worker --storage {pg.url} --study-name fk" in out
    victim = autolora("worker", "--storage", pg.url, "--study-name", "fk", cwd=tmp_path)
    trials = wait_for(pg.url, "fk", running_in(victim), "the victim to start a fusion trial")
    killed = next(t.number for t in trials if running_in(victim)([t]))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    rc, out, err = finish(autolora("worker", "--storage", pg.url, "--study-name", "fk", cwd=tmp_path))
    assert rc == 0, err
    studies = fuse_studies(pg.url, "fk")
    dlf = studies["fk"]
    assert dlf.trials[killed].state == optuna.trial.TrialState.FAIL
    retried = [t for t in dlf.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    assert retried[0].params == dlf.trials[killed].params
    for study in studies.values():  # every study of the run got exactly its budget (DLF: and its copied start)
        others = [t for t in study.trials if not (study is dlf and t.number == killed)]
        others = [t for t in others if t.user_attrs.get("start") != "linear"]
        assert len(others) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in others)
    n_copies = studies["fk-linear"].best_trial.number != 0  # linear's best; none when that is plain stacking
    assert len([t for t in dlf.trials if t.user_attrs.get("start") == "linear"]) == n_copies  # not copied again
    rc, out, err = finish(autolora("show", "--storage", pg.url, "--study-name", "fk", cwd=tmp_path))
    assert rc == 0 and f"[dlf] study 'fk': {5 + n_copies} trials" in out, err
    assert "[linear] study 'fk-linear': 4 trials" in out


def test_ctrl_c_stops_all_fuse_workers(tmp_path: Path, fusion: dict[str, object]) -> None:
    url = f"sqlite:///{tmp_path}/fc.db"
    # Fusion trials of 400 denoising steps: whenever the signal comes, it lands mid-trial.
    args = [*fuse_args(fusion, tmp_path / "fc"), "--study-name", "fc", "--storage", url, "--trials", "4",
            "--workers", "2", "--set", "eval.inference_steps=400"]  # fmt: skip
    proc = autolora(*args, cwd=tmp_path)
    running = optuna.trial.TrialState.RUNNING
    # linear fusion runs first (DLF starts from its best)
    two = lambda ts: sum(t.state == running and bool(t.params) for t in ts) == 2  # noqa: E731
    wait_for(url, "fc-linear", two, "two fusion trials")
    assert proc.poll() is None, f"the run ended before the signal: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc, timeout=900)
    assert rc == 130, err
    trials = [t for s in fuse_studies(url, "fc").values() for t in s.trials]
    assert not [t for t in trials if t.state == running]
    assert sum(1 for t in trials if str(t.user_attrs.get("fail_reason", "")).startswith("interrupted (Ctrl-C)")) >= 1
    out = subprocess.run(["pgrep", "-f", "--study-name fc"], capture_output=True, text=True).stdout
    assert not out.strip(), "a worker outlived Ctrl-C"
