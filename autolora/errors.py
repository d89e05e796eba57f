"""Errors that describe what the user did wrong, in one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input: the CLI prints the message as one line and exits with code 2."""


class TrialFailed(Exception):
    """A trial that cannot finish (NaN loss, out of memory): the study records the reason and goes on."""


def closest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest valid choice, or an empty string."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
