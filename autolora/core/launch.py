"""Local worker processes for ``--workers N`` and ``--process-per-trial`` (``tune`` and ``fuse``).

Each worker is ``python -m autolora worker`` on the study's storage, with a device taken
round-robin from ``study.devices``. Their trial lines go to this terminal; Ctrl-C here is passed
on to every worker, which fails its running trial cleanly and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from autolora.core.job import Job, this_worker
from autolora.core.study import StudySpec, run_order

STOP_GRACE = 300.0
"""Seconds a worker has after Ctrl-C to fail its trial and exit before it is killed."""


class WorkersFailed(RuntimeError):
    """One or more local workers exited with an error."""


def _count(studies: list[Any]) -> tuple[int, int]:
    """(waiting, finished) trials over the run's studies."""
    import optuna

    waiting = finished = 0
    for study in studies:
        trials = study.get_trials(deepcopy=False)
        waiting += sum(1 for t in trials if t.state == optuna.trial.TrialState.WAITING)
        finished += sum(1 for t in trials if t.state.is_finished())
    return waiting, finished


def _command(job: Job, study_name: str, parent_run_id: str, device: str, index: int, one_trial: bool) -> list[str]:
    cfg = job.config
    cmd = [
        sys.executable,
        "-m",
        "autolora",
        "worker",
        "--storage",
        cfg.storage_url,
        "--study-name",
        study_name,
        "--device",
        device,
        "--parent-run",
        parent_run_id,
        "--worker-index",
        str(index),
    ]
    if cfg.study.timeout is not None:
        cmd += ["--timeout", str(cfg.study.timeout)]
    return cmd + (["--trials", "1"] if one_trial else [])


def run_local_workers(
    job: Job,
    specs: list[StudySpec],
    storage: Any,
    parent_run_id: str,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> None:
    """Run workers until the waiting trials of every study are gone; raise ``WorkersFailed`` if any worker failed.

    A worker starts on the run's first study and goes on to the later ones (``autolora worker``).
    """
    import optuna

    cfg = job.config.study
    slots = max(1, cfg.workers)
    devices = cfg.devices or [job.config.model.device]
    one_trial = cfg.process_per_trial
    studies = [optuna.load_study(study_name=s.name, storage=storage) for s in specs]
    total, finished_before = _count(studies)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="trials", unit="trial", disable=None)
        echo = _above(bar)
    procs: dict[int, subprocess.Popen[str]] = {}
    errors: list[str] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def start(slot: int) -> None:
        device = devices[slot % len(devices)]
        env = dict(os.environ)
        if device in ("cpu", "auto") and "OMP_NUM_THREADS" not in env:
            # Workers sharing the CPU: torch's default of one thread per core each oversubscribes it.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // slots))
        proc = subprocess.Popen(
            _command(job, run_order(specs)[0].name, parent_run_id, device, slot, one_trial),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        procs[slot] = proc

        def forward() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                with lock:
                    echo(line.rstrip("\n"))

        threading.Thread(target=forward, daemon=True).start()

    try:
        for slot in range(slots):
            start(slot)
        while procs:
            time.sleep(0.5)
            for slot, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[slot]
                stderr = proc.stderr.read() if proc.stderr else ""
                if code != 0:
                    last = (stderr.strip().splitlines() or ["(no message)"])[-1]
                    errors.append(f"worker {slot} ({devices[slot % len(devices)]}) exited with {code}: {last}")
                    continue
                timed_out = cfg.timeout is not None and time.perf_counter() - t0 > cfg.timeout
                if one_trial and not timed_out and _count(studies)[0] > 0:
                    start(slot)  # process per trial: a fresh process for the next waiting trial
            if bar is not None:
                bar.n = _count(studies)[1] - finished_before
                bar.refresh()
    except KeyboardInterrupt:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        # A worker fails its running trial cleanly and exits; on a loaded machine that takes a while.
        deadline = time.time() + STOP_GRACE
        killed = []
        for proc in procs.values():
            try:
                proc.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed.append(proc.pid)
        _fail_trials_of(storage, studies, killed)
        raise
    finally:
        if bar is not None:
            bar.close()
    if errors:
        raise WorkersFailed("; ".join(errors))


def _fail_trials_of(storage: Any, studies: list[Any], pids: list[int]) -> None:
    """Fail the RUNNING trials of workers that had to be killed, so that none stays RUNNING."""
    import optuna

    host = this_worker().rpartition(":")[0]
    owners = {f"{host}:{pid}" for pid in pids}
    for study in studies:
        study_id = storage.get_study_id_from_name(study.study_name)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if t.user_attrs.get("worker") in owners:
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
                storage.set_trial_user_attr(trial_id, "fail_reason", "interrupted (Ctrl-C); worker killed")
                storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)


def _above(bar: Any) -> Callable[[str], None]:
    def write(line: str) -> None:
        bar.write(line, file=sys.stdout)

    return write
