"""Fuse studies run by many workers: exact budgets, kill -9 on PostgreSQL, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import optuna
from conftest import fuse_args, running_in, wait_for
from postgres import Postgres
from workerkit import autolora, distinct_params, finish, fuse_studies


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
