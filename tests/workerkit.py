"""What the worker tests share: starting autolora in a process and the tune and fuse studies they run (the
fixtures ``pg`` and ``fusion`` are in conftest.py). The worker tests are three files (budgets, faults, fuse) so
that the suite's two processes can share them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from conftest import DATA, FAST

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


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


def slow_space(tmp_path: Path, steps: int) -> Path:
    space = tmp_path / "slow.yaml"
    space.write_text((DATA / "tiny.yaml").read_text().replace("{low: 4, high: 8, step: 2}", str(steps)))
    return space


def fuse_studies(url: str, name: str) -> dict[str, optuna.Study]:
    return {n: optuna.load_study(study_name=n, storage=url) for n in (name, f"{name}-linear")}
