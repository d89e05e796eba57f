"""The coefficients of one LoRA's groups for each reading: none, all, one group alone, all but one, a subset.

Group keys are ``autolora.loras.groups``'s (``down.1``, ``mid``, ``up.0``, ``text_encoder``...; per transformer
unit at ``layer``). A coefficient multiplies the scale the LoRA was loaded with, so 1 is the LoRA as its file
gives it and 0 the base model, exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

Coefficients = dict[str, float]
"""Group key -> coefficient, for one LoRA."""


def constant(keys: Iterable[str], value: float) -> Coefficients:
    return {k: value for k in keys}


def alone(keys: Iterable[str], group: str) -> Coefficients:
    """``group`` at full strength, every other group off."""
    return {k: 1.0 if k == group else 0.0 for k in keys}


def without(keys: Iterable[str], group: str) -> Coefficients:
    """Every group at full strength but ``group``."""
    return {k: 0.0 if k == group else 1.0 for k in keys}


def subset(keys: Iterable[str], kept: Iterable[str]) -> Coefficients:
    """The groups in ``kept`` at full strength, the others off."""
    on = set(kept)
    return {k: 1.0 if k in on else 0.0 for k in keys}
