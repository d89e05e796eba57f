"""Workers that die, lose their database or are interrupted: no trial stays RUNNING, none is lost but the dead
one's."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import optuna
from conftest import DATA, running_in, wait_for
from postgres import Postgres
from workerkit import FINISHED, autolora, finish, slow_space, tune_args


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


def test_a_running_trial_that_never_beat_is_stale_after_the_grace_period(tmp_path: Path) -> None:
    """A worker killed before its heartbeat thread first wrote (a loaded machine makes that window wide) leaves a
    RUNNING trial with no heartbeat at all: ``show`` must still call it stale once the grace period has passed."""
    import optuna

    from autolora.core.reading import stale_trials
    from autolora.core.study import ATTR

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/beat.db", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="beat", storage=storage)
    study.set_user_attr(ATTR + "config", {"study": {"heartbeat_interval": 1, "grace_period": 0.001}})
    trial = study.ask()  # RUNNING, and no heartbeat thread ever ran for it
    deadline = (
        time.time() + 60
    )  # its age only grows: this waits for a state; the bound only ends a wait that never would
    while not stale_trials(study) and time.time() < deadline:
        time.sleep(0.01)
    assert list(stale_trials(study)) == [trial.number]
    study.set_user_attr(ATTR + "config", {"study": {"heartbeat_interval": 0, "grace_period": 0.001}})
    assert stale_trials(study) == {}  # heartbeats off: nothing can be told dead
