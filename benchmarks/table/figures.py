"""What the table shows (README "The trial table"): filled in below."""

from __future__ import annotations

from pathlib import Path


def report(table: Path, json_out: Path | None) -> int:
    raise NotImplementedError
