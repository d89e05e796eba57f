"""What a job finds about its inputs before the first trial: one line each, a warning or a plain fact.

A job's ``diagnose`` returns ``Finding``s once its models are loaded and before anything is created; the core
prints them, logs them to the MLflow parent run (metrics ``data.<check>.<name>`` and ``diagnostics.json``),
records the warnings on the study (``show`` repeats them) and, under ``--strict``, stops on a warning with
nothing written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Finding:
    """One diagnostic: ``check`` (a short name), the line a user reads, whether it warns, and its figures."""

    check: str
    line: str
    warning: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    kind: str = "data"
    """What was checked: ``data`` (the style set) or ``judge`` (the judge's self-check); the line's prefix and the
    MLflow metrics' (``<kind>.<check>.<name>``)."""

    def shown(self) -> str:
        return f"{'WARNING' if self.warning else self.kind}: {self.line}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "kind": self.kind,
            "line": self.line,
            "warning": self.warning,
            "metrics": dict(self.metrics),
        }


def strict_failure(findings: list[Finding]) -> str | None:
    """The one-line error ``--strict`` stops with, or None when nothing warns."""
    warned = [f for f in findings if f.warning]
    if not warned:
        return None
    more = f" (and {len(warned) - 1} more warning{'s' if len(warned) > 2 else ''})" if len(warned) > 1 else ""
    return f"--strict: {warned[0].line}{more}; nothing was created (drop --strict to run anyway)"


def show_findings(findings: list[Finding], echo: Callable[[str], None]) -> None:
    for f in findings:
        echo(f.shown())


def findings_metrics(findings: list[Finding]) -> dict[str, float]:
    return {f"{f.kind}.{f.check}.{k}": v for f in findings for k, v in f.metrics.items()}
