"""Ctrl-C that never lands inside a database write.

A SIGINT that arrives while pysqlite executes a statement raises ``KeyboardInterrupt`` out of the middle of the
transaction; neither MLflow's session maker nor Optuna's storage rolls back on a ``BaseException``, and the
interrupted connection keeps SQLite's write lock, so the next write (ending the MLflow runs, failing the trial)
waits out the busy timeout and fails with "database is locked" instead of stopping cleanly (measured: about one
stop in ten with the signal sent at random during MLflow writes). ``deferred`` holds the signal for the few
milliseconds a write takes and raises it right after, where Optuna and autolora handle it.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def deferred() -> Iterator[None]:
    """Run the block with SIGINT held; a SIGINT that came during it is delivered when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals (and may set handlers)
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN or previous is None:
        yield
        return
    held: list[Any] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            if callable(previous):
                previous(signal.SIGINT, held[0])
            else:  # SIG_DFL: the process would have died of the signal
                raise KeyboardInterrupt


@contextmanager
def first_interrupt_only() -> Iterator[None]:
    """Within the block the first SIGINT raises ``KeyboardInterrupt`` and the ones after it are ignored; the
    previous handler is back after the block.

    Ctrl-C in a terminal reaches a local worker twice: from the terminal (same process group) and from the
    ``tune --workers`` process that forwards it. A second ``KeyboardInterrupt`` landing while Optuna records the
    first trial as failed would leave it RUNNING. A worker exits within moments of the first; ``tune --workers``
    kills one that does not (``launch.STOP_GRACE``), and SIGTERM still works.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def without_interrupts(method: F) -> F:
    """``method`` run under ``deferred``."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with deferred():
            return method(*args, **kwargs)

    return run  # type: ignore[return-value]


class DeferredClient:
    """An ``MlflowClient`` whose every call runs under ``deferred`` (see the module docstring)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        return without_interrupts(value) if callable(value) else value
