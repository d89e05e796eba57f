"""The studies of a fusion run, from its config alone (``show`` and ``export`` find them without loading a model)."""

from __future__ import annotations

from dataclasses import dataclass

from autolora.fuse.config import FuseRunConfig


@dataclass
class FuseStudy:
    """One study of a fusion run: ``dlf`` (the configured granularity and schedule) or ``linear``."""

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
    return specs
