"""The run folder: what a study keeps on disk beside its Optuna storage.

::

    runs/<study>/
      config.yaml          the resolved config (every default filled in)
      search_space.yaml    the search-space recipe as it was read
      objective.yaml       the objective recipe as it was read
      optuna.db            the default storage (sqlite) when --storage is not given
      cache/               latents, caption embeddings, base samples (once per study)
      adapters/trial_N/    kept adapters (the best K, or the Pareto set)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from autolora.core.feasible import best, ranked

if TYPE_CHECKING:
    import optuna


def adapter_dir(run_dir: Path, number: int) -> Path:
    return run_dir / "adapters" / f"trial_{number}"


def kept_numbers(run_dir: Path) -> list[int]:
    folder = run_dir / "adapters"
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        if p.name.startswith("trial_") and p.name[6:].isdigit() and (p / "adapter.json").exists():
            out.append(int(p.name[6:]))
    return sorted(out)


def best_numbers(study: optuna.Study, k: int) -> list[int]:
    """The trials worth keeping: the best ``k`` feasible ones (single objective) or the feasible Pareto set, at most
    ``k``; while no trial is feasible, the best ``k`` of the rest (what ``export --force`` takes)."""

    if len(study.directions) == 1:
        return [t.number for t in ranked(study)[:k]]
    import optuna

    front = best(study) or ranked(study)
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    return [t.number for t in sorted(front, key=lambda t: (sign * t.values[0], t.number))[:k]]


def prune_kept(run_dir: Path, keep: list[int]) -> None:
    for n in kept_numbers(run_dir):
        if n not in keep:
            shutil.rmtree(adapter_dir(run_dir, n), ignore_errors=True)
