"""How many trials a DLF study needs for its number of coefficients, and the line ``fuse`` prints about it.

A DLF space has one coefficient per LoRA and group (``block``: UNet block groups and text encoders; ``layer``: one
per transformer unit), twice that plus ``switch_at`` for ``two-phase``. The budget it needs grows with that
number: CMA-ES (the scalar default) draws populations of ``4 + 3 ln n`` points and needs several of them to move
its mean; TPE and GP need history in every dimension.

``TRIALS_PER_COEFFICIENT`` is measured, not assumed: ``benchmarks/fuse_pairs.py`` records each DLF study's
best-so-far curve after its starting points (plain stacking and linear fusion's copied best) and reports after
how many sampled trials a study reached 90 % of what it gained over its start, divided by its number of
coefficients (median over the pairs, seeds and variants; docs/fuse.md has the figures). Those curves are cut at
the benchmark's budget (12 trials), so the figure is a lower bound when a study was still gaining at its end.

Measured (3 pairs x 5 seeds, 12 trials; medians of the studies that beat their start): block (10 coefficients)
4 trials, 0.45 per coefficient, 11 of its 14 within 1.0 per coefficient (3 still gaining at the budget's end);
layer (14) 7, 0.50, all 12 within 1.0; two-phase (21) 4, 0.21. The trials to 90 % did not grow with the dimension
at that budget. The figure used, 1.0 per coefficient, is what covers most studies at the default granularity, not
the median (2 seeds alone had put block's median at 1.0).
"""

from __future__ import annotations

import math

TRIALS_PER_COEFFICIENT = 1.0
"""Sampled trials per coefficient for 90 % of DLF's gain over its start in most studies (benchmarks/fuse_pairs.py)."""

MIN_TRIALS = 8
"""Never fewer: below this a study has hardly left its starting points, whatever its dimension."""


def recommended_trials(n_coefficients: int) -> int:
    """Trials to give a DLF study of ``n_coefficients`` coefficients."""
    if n_coefficients < 1:
        raise ValueError(f"n_coefficients must be >= 1, got {n_coefficients}")
    return max(MIN_TRIALS, math.ceil(TRIALS_PER_COEFFICIENT * n_coefficients))


def budget_lines(label: str, n_coefficients: int, trials: int) -> list[str]:
    """The setup's budget note for one DLF study, and a warning when ``trials`` is below the recommendation."""
    want = recommended_trials(n_coefficients)
    lines = [f"{label}: {n_coefficients} coefficients, recommended budget >= {want} trials"]
    if 0 < trials < want:
        lines.append(
            f"WARNING: --trials {trials} is below the {want} trials {label} needs for its {n_coefficients} "
            f"coefficients (measured: {TRIALS_PER_COEFFICIENT:g} per coefficient, benchmarks/fuse_pairs.py); its "
            f"pick may not beat its start (linear fusion's best). Fewer groups (--granularity block) or more trials"
        )
    return lines
