"""The studies of a fusion run, from its config alone (``show`` and ``export`` find them without loading a model)."""

from __future__ import annotations

from dataclasses import dataclass

from autolora.fuse.config import FuseRunConfig


@dataclass
class FuseStudy:
    """One study of a fusion run: ``dlf`` (the configured granularity and schedule), ``linear`` or ``fixed`` (the
    training-free baselines)."""

    label: str
    name: str
    granularity: str
    schedule: str


def study_specs(config: FuseRunConfig) -> list[FuseStudy]:
    """The run's studies: the configured one, and the linear baseline unless off or the same study."""
    fuse = config.fuse
    specs = [FuseStudy("dlf", config.study_name, fuse.granularity, fuse.schedule)]
    if fuse.has_baseline:
        specs.append(FuseStudy("linear", f"{config.study_name}-linear", "global", "constant"))
    if fuse.has_fixed:
        specs.append(FuseStudy("fixed", f"{config.study_name}-baselines", "fixed", "constant"))
    return specs


ORDER = {"fixed": 0, "linear": 1, "dlf": 2}
"""The order the studies run in: the baselines (cheap, fixed), linear fusion, then DLF starting from linear's best."""
