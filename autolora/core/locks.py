"""A lock file beside a SQLite database, held while a store creates or migrates its tables.

Two processes starting on a new SQLite file (the same study launched twice, several local
workers) both run the store's table creation; with alembic's batch migrations that can leave
half-made temporary tables behind (MLflow: ``table _alembic_tmp_latest_metrics already exists``).
Holding an exclusive ``flock`` on ``.<db>.lock`` while the store is opened serialises that.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def sqlite_init_lock(url: str) -> Iterator[None]:
    """Hold the lock of the SQLite database behind ``url``; a no-op for other databases."""
    if not url.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    db = Path(url.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f".{db.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
