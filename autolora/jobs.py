"""The jobs that run on the study core, by kind: what ``autolora worker``, ``show`` and ``export`` dispatch on.

Named as import paths, so that naming them imports nothing (``autolora --help`` stays instant).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from autolora.errors import UserError

if TYPE_CHECKING:
    from autolora.core.job import Job

JOBS = {"tune": "autolora.tune.job:TuneJob", "fuse": "autolora.fuse.job:FuseJob"}


def job_class(kind: str) -> type[Job]:
    """The Job class of ``kind`` (``tune``, ``fuse``)."""
    if kind not in JOBS:
        raise UserError(f"study made by an unknown autolora job '{kind}' (known: {', '.join(JOBS)})")
    module, name = JOBS[kind].split(":")
    cls: type[Job] = getattr(importlib.import_module(module), name)
    return cls


def kind_of(study: object) -> str:
    """The job kind a study was made by (studies of autolora 0.1 before the core record only ``autolora.fusion``)."""
    attrs = getattr(study, "user_attrs", {})
    return str(attrs.get("autolora.job") or ("fuse" if "autolora.fusion" in attrs else "tune"))
