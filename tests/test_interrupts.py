"""Ctrl-C held for the length of a database write, then delivered (core.interrupts)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from autolora.core.interrupts import deferred
from autolora.core.tracking import Tracker


def test_a_sigint_during_the_block_comes_after_it() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_mlflow_writes_finish_before_the_interrupt_and_the_store_stays_writable(tmp_path: Path) -> None:
    from mlflow.entities import RunTag
    from sqlalchemy import event

    tracker = Tracker(f"sqlite:///{tmp_path}/m.db", "e")
    run = tracker.client.create_run(tracker.experiment_id)
    engine = tracker.client._client._tracking_client.store.engine  # type: ignore[attr-defined]

    def signal_mid_write(conn: object, cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("INSERT INTO tags"):  # the signal arrives inside the transaction
            os.kill(os.getpid(), signal.SIGINT)

    event.listen(engine, "before_cursor_execute", signal_mid_write)
    with pytest.raises(KeyboardInterrupt):
        tracker.client.log_batch(run.info.run_id, tags=[RunTag("k", "v")])
    event.remove(engine, "before_cursor_execute", signal_mid_write)
    assert tracker.client.get_run(run.info.run_id).data.tags["k"] == "v"  # the write was not cut short
    tracker.client.set_terminated(run.info.run_id, "KILLED")  # and left no lock behind
    assert tracker.client.get_run(run.info.run_id).info.status == "KILLED"


def test_a_worker_stops_on_the_first_sigint_ignores_the_next_and_restores_the_handler(tmp_path: Path) -> None:
    from autolora.cli import main
    from autolora.core.interrupts import first_interrupt_only

    with first_interrupt_only():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # delivered to this (main) thread at once
        os.kill(os.getpid(), signal.SIGINT)  # the second: ignored
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # A worker run in this process (here one refused at once) leaves the process's handler as it found it.
    assert main(["worker", "--storage", f"sqlite:///{tmp_path}/none.db", "--study-name", "s"]) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
