"""Study behaviour beyond the happy path: failed trials, Ctrl-C, process per trial, Pareto, keep-K."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from conftest import FAST, wait_for

from autolora.cli import main
from autolora.config import load_config, parse_override
from autolora.errors import TrialFailed


def config_args(tmp_path: Path, name: str) -> list[str]:
    return ["tune", "--out", str(tmp_path / "run"), "--study-name", name,
            "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db", *FAST]  # fmt: skip


def test_failed_trial_is_recorded_and_the_study_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from autolora.core.storage import make_storage
    from autolora.core.study import open_study
    from autolora.core.tracking import Tracker
    from autolora.tune.plan import make_plan, study_spec
    from autolora.tune.session import Session
    from autolora.tune.trial import TrialRunner

    monkeypatch.chdir(tmp_path)
    overrides = [parse_override(FAST[i + 1]) for i, flag in enumerate(FAST) if flag == "--set"]
    overrides += [("study", "search_space", FAST[1]), ("study", "out", str(tmp_path / "run"))]
    overrides += [("model", "base_model", "builtin:tiny-sd")]
    plan = make_plan(load_config(None, overrides))
    session = Session.load(plan)
    session.prepare(tmp_path / "cache")
    plan.run_dir.mkdir(parents=True)
    study = open_study(study_spec(plan), make_storage(plan.config.storage_url), plan.config.study, record={})
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "nan-test")
    parent = tracker.start_parent("p", {}, [])
    good = session.train_data
    nan = [m * float("nan") for m in good.latent_mean]
    session.train_data = type(good)(nan, good.latent_std, good.prompt_embeds, None, good.captions, good.resolution,
                                    good.members, good.buckets)  # fmt: skip
    runner = TrialRunner(session, parent, echo=lambda s: None, progress=False)
    study.optimize(runner, n_trials=1, catch=(TrialFailed,))
    session.train_data = good
    study.optimize(runner, n_trials=1, catch=(TrialFailed,))
    failed, ok = study.trials
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "loss is nan" in failed.user_attrs["fail_reason"]
    assert ok.state == optuna.trial.TrialState.COMPLETE
    run = MlflowClient(tracker.uri).get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "loss is nan" in run.data.tags["optuna.fail_reason"]


def test_ctrl_c_leaves_a_resumable_study(tmp_path: Path) -> None:
    space = tmp_path / "slow.yaml"
    space.write_text(
        "params:\n  rank: 4\n  steps: 40\n  init: gaussian\n  learning_rate: {low: 1.0e-4, high: 1.0e-3}\n"
    )
    args = [*config_args(tmp_path, "ctrlc"), "--set", "train.eval_every=40"]
    args[args.index(FAST[1])] = str(space)
    # Batches of 256 make a trial minutes long, so the signal lands mid-trial however busy the machine is;
    # the resumed run trains the same space at batch 1 (the batch size is not part of the study's identity).
    slow = [*args, "--set", "train.batch_size=256", "--trials", "5"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "autolora", *slow], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    db = tmp_path / "run" / "optuna.db"
    wait_for(f"sqlite:///{db}", "ctrlc", lambda ts: bool(ts) and ts[-1].state.name == "RUNNING", "a running trial")
    assert proc.poll() is None, f"the study ended before the signal: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, f"stdout:\n{out}\nstderr:\n{err}"
    assert "run the same command to resume" in err
    study = optuna.load_study(study_name="ctrlc", storage=f"sqlite:///{db}")
    assert study.trials and all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)
    assert study.trials[-1].user_attrs.get("fail_reason") == "interrupted (Ctrl-C)"
    rc = subprocess.run([sys.executable, "-m", "autolora", *args, "--trials", "1"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert rc.returncode == 0, rc.stderr
    study = optuna.load_study(study_name="ctrlc", storage=f"sqlite:///{db}")
    assert study.trials[-1].number == len(study.trials) - 1 >= 1
    assert study.trials[-1].state == optuna.trial.TrialState.COMPLETE


def test_process_per_trial(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main([*config_args(tmp_path, "iso"), "--trials", "2", "--process-per-trial"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert sum(1 for ln in out.splitlines() if ln.startswith("trial ")) == 2
    study = optuna.load_study(study_name="iso", storage=f"sqlite:///{tmp_path}/run/optuna.db")
    assert [t.number for t in study.trials] == [0, 1]
    assert all(t.state.is_finished() and "mlflow_run_id" in t.user_attrs for t in study.trials)


def test_pareto_objective_and_keep_top_k(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main([*config_args(tmp_path, "par"), "--trials", "3", "--objective", "pareto",
               "--set", "study.keep_top_k=1"])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    study = optuna.load_study(study_name="par", storage=f"sqlite:///{tmp_path}/run/optuna.db")
    assert len(study.directions) == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)  # never pruned
    assert "Pareto set" in out
    kept = list((tmp_path / "run" / "adapters").iterdir())
    assert len(kept) == 1
    assert int(kept[0].name.removeprefix("trial_")) in {t.number for t in study.best_trials}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mixed_precision(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for precision in ("bf16", "fp16"):
        rc = main([*config_args(tmp_path, f"gpu-{precision}"), "--trials", "2", "--device", "cuda",
                   "--set", f"model.mixed_precision={precision}"])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
