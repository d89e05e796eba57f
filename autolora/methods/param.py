"""A searchable setting: what a search space may set, its default and its valid values.

Declared where it is read: a method's own settings in its class (``Method.params``), the settings every trial
reads in ``autolora.tune.search``, which assembles both into the table of parameters a search space can set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One searchable setting: its kind, default and valid values."""

    kind: str  # int | float | bool | choice | subset | word | text
    default: Any
    check: Callable[[Any], bool] = lambda v: True
    expected: str = ""
    allowed: tuple[str, ...] = ()
    help: str = ""
    methods: tuple[str, ...] = ()
    """The adapter methods that read this setting (empty: all); sampled only in their trials. Filled in from the
    methods' declarations (``Method.params``, ``Method.reads``) by ``autolora.tune.search``."""


def positive(v: Any) -> bool:
    return bool(v > 0)
