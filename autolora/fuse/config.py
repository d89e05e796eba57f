"""The ``autolora fuse`` run: the ``fuse`` section, and the run config that adds it to the shared sections.

``model``, ``data`` (``prompts``, ``trigger``, ``prompt_template``, ``resolution``), ``eval`` and ``study``
(``name``, ``out``, ``storage``, ``mlflow_uri``, ``trials``, ``seed``) mean what they mean for ``tune``; there is no
``train`` section, and ``study``'s search space, objective, sampler and pruner are ``tune``'s (a fusion's are in
``fuse``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from autolora.config import RunConfig, _check, split_named
from autolora.errors import UserError, closest
from autolora.loras.groups import GRANULARITIES

BASELINE_KINDS = ("klora", "block-prior")
"""Training-free baseline families ``fuse.baselines`` may name (``autolora.fuse.baselines``)."""

SCHEDULES = ("constant", "two-phase")
FUSE_SAMPLERS = ("auto", "cmaes", "tpe", "gp", "random", "qmc", "nsga2")
_NAME = re.compile(r"[A-Za-z0-9_-]+")
SWITCH_RANGE = (0.2, 0.8)
"""Where a searched two-phase switch may fall, as a fraction of the denoising steps."""


@dataclass
class FuseSection:
    """Which LoRAs to fuse, against which styles, and how the coefficients are searched."""

    loras: list[str] = field(default_factory=list)
    """LoRA files (diffusers/PEFT or kohya ``.safetensors``) as ``PATH`` or ``NAME=PATH``. NAME (letters, digits,
    ``_``, ``-``) defaults to the file's stem with other characters made ``_``."""
    style_images: list[str] = field(default_factory=list)
    """``NAME=DIR``: the reference images of LoRA NAME's style. A LoRA without an entry is scored against the
    built-in style set, which exists only for built-in base models."""
    granularity: str = "block"
    """``global`` (one coefficient per LoRA: linear fusion), ``block`` (per UNet block group and text encoder) or
    ``layer`` (per transformer unit and text-encoder layer)."""
    schedule: str = "constant"
    """``constant`` or ``two-phase`` (separate early/layout and late/detail coefficients, plus where to switch)."""
    low: float = 0.0
    """Smallest coefficient searched."""
    high: float = 1.5
    """Largest coefficient searched."""
    switch_at: float | None = None
    """Two-phase only: the fraction of the steps after which the late set applies. None: searched in 0.2-0.8."""
    objective: str = "fuse-balanced"
    """Built-in fusion recipe (``fuse-balanced``, ``fuse-pareto``) or a YAML file with ``scorer: fusion``."""
    sampler: str = "auto"
    """``auto`` (CMA-ES for a scalar objective, TPE for a Pareto one), cmaes, tpe, gp, random, qmc or nsga2."""
    baseline: bool = True
    """Also run a linear-fusion study (global, constant) with the same budget, for the side-by-side summary; it
    runs first and the DLF study starts from its best (``autolora.fuse.warm``)."""
    baselines: list[str] = field(default_factory=lambda: ["klora", "block-prior"])
    """Training-free fusions run as fixed trials (study ``<name>-baselines``, ``autolora.fuse.baselines``):
    ``klora``, ``block-prior``; ``[]`` for none. Two or more LoRAs only."""
    klora_k: int | None = None
    """K-LoRA's K (elements summed per layer); None: the LoRA's rank x the larger side of its update."""

    def validate(self, where: str) -> None:
        _check(bool(self.loras), f"{where}.loras", "at least one LoRA file (--lora)", self.loras)
        _check(self.granularity in GRANULARITIES, f"{where}.granularity", "|".join(GRANULARITIES), self.granularity)
        _check(self.schedule in SCHEDULES, f"{where}.schedule", "|".join(SCHEDULES), self.schedule)
        _check(self.sampler in FUSE_SAMPLERS, f"{where}.sampler", "|".join(FUSE_SAMPLERS), self.sampler)
        _check(self.high > self.low, f"{where}.high", f"a number above low ({self.low})", self.high)
        if self.switch_at is not None:
            _check(0 < self.switch_at < 1, f"{where}.switch_at", "a fraction in (0, 1) or null", self.switch_at)
        for kind in self.baselines:
            _check(
                kind in BASELINE_KINDS, f"{where}.baselines", f"a list of {', '.join(BASELINE_KINDS)}", self.baselines
            )
        if self.klora_k is not None:
            _check(self.klora_k >= 1, f"{where}.klora_k", "a positive integer or null", self.klora_k)
        names = [name for name, _ in self.entries()]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise UserError(f"{where}.loras: names {repeated} repeat; name the files apart with --lora NAME=PATH")
        for entry in self.style_images:
            name, folder = split_named(entry)
            if name is None or not folder:
                raise UserError(f"{where}.style_images: expected NAME=DIR, got {entry!r}")
            if name not in names:
                raise UserError(f"{where}.style_images: {entry!r} names no LoRA{closest(name, names)}; LoRAs: {names}")

    def entries(self) -> list[tuple[str, Path]]:
        """(name, file) of every LoRA, in the order given."""
        out = []
        for entry in self.loras:
            name, path = split_named(entry)
            if name is not None and not _NAME.fullmatch(name):
                raise UserError(f"fuse.loras: LoRA name {name!r} in {entry!r}: use letters, digits, '_' and '-' only")
            out.append((name or re.sub(r"[^A-Za-z0-9_-]", "_", Path(path).stem), Path(path)))
        return out

    def style_folders(self) -> dict[str, Path]:
        """LoRA name -> its style folder, for the LoRAs that have one."""
        return {name: Path(folder) for name, folder in map(split_named, self.style_images) if name}

    @property
    def has_fixed(self) -> bool:
        """Whether the run has fixed baseline trials: some asked for, and two or more LoRAs."""
        return bool(self.baselines) and len(self.loras) >= 2

    @property
    def has_baseline(self) -> bool:
        """Whether a linear baseline runs: asked for, and the main study is not linear itself."""
        return self.baseline and not (self.granularity == "global" and self.schedule == "constant")


@dataclass
class FuseRunConfig(RunConfig):
    """A whole ``autolora fuse`` run: the shared sections and ``fuse``."""

    fuse: FuseSection = field(default_factory=FuseSection)

    path_list_keys = frozenset({("fuse", "loras"), ("fuse", "style_images")})
    legacy_sections = frozenset({"train"})  # fuse runs before session 22 stored tune's training section, unused

    @property
    def study_name(self) -> str:
        if self.study.name:
            return self.study.name
        return "fuse-" + "-".join(name for name, _ in self.fuse.entries())
