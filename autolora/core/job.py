"""The interface a job (``tune``, ``fuse``) implements to run on the study core.

The core owns the run folder, the storage, opening and resuming studies, MLflow, local workers,
``autolora worker``, Ctrl-C and finding studies for ``show``/``export``; it knows nothing of LoRA
training or fusion. A job supplies its plan (validated inputs), its session (what is loaded once),
its trial function and its summary. The core calls, in this order (* = a job must implement it; the
others have defaults that do nothing)::

    job = JobClass.plan(config)      * validate every input; create and load nothing
    job.load()                       * load models once (bad weights: UserError, still nothing created)
    job.studies()                    * the studies to run (their fingerprints may need what load() loaded)
    job.diagnose()                     checks of the inputs that need the models (--strict stops on a warning)
    job.resolved_config()            * the config with every default made explicit (config.yaml, workers)
    job.run_files()                    more files for the run folder (the recipes as read)
        -- the core checks stored studies, creates the run folder, the studies and the MLflow parent run --
    job.prepare(cache_dir)           * per-study caches (latents, base samples); returns the setup line
    job.study_images()                 pictures every study keeps (the base model's grid...)
    job.release()                      free the models when workers, not this process, run the trials
    job.before_study(spec, study)      before a study's first trial here (may seed it from an earlier study)
    job.objective(spec, parent, ...) * once per study: the Optuna objective of its trials
    job.after_trial(study, trial)      after every finished trial (keep the best adapters...)
    job.summary(studies, parent)       after the trials: lines for the terminal, the report last
    job.close()                        always, at the end

Reading a finished run: ``show`` (its table), ``report_parts`` (the job's sections of the HTML report),
``export`` (*). Declarations, not hooks: ``kind``, ``config_class``, ``trial_errors``, ``strict``.

A worker (``autolora worker``) rebuilds the job from the config stored with the study
(``JobClass.config_class``) and goes through the same steps, then takes trials from the storage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from autolora.core.reading import print_table

if TYPE_CHECKING:
    import optuna
    from PIL import Image

    from autolora.config import RunConfig
    from autolora.core.findings import Finding
    from autolora.core.study import StudySpec
    from autolora.core.tracking import ParentRun

Objective = Callable[["optuna.Trial"], "float | list[float]"]


def this_worker() -> str:
    """``host:pid`` of this process, stored with every trial it runs (user attribute ``worker``)."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def signed(objective: Objective) -> Objective:
    """``objective`` that records which process runs the trial (user attribute ``worker``: ``show``, fault
    handling and tests read it), and that marks a trial stopped by Ctrl-C as such wherever the signal lands
    (drawing parameters, starting its MLflow run...), not only inside the job's own handler."""

    def run(trial: optuna.Trial) -> float | list[float]:
        try:
            trial.set_user_attr("worker", this_worker())
            return objective(trial)
        except KeyboardInterrupt:
            if "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            raise

    return run


class Job(ABC):
    """One kind of study run. Subclasses set ``kind`` and ``config_class`` and implement the abstract methods."""

    kind: ClassVar[str]
    """Stored with every study the job makes (``autolora.job``); ``autolora worker`` finds the job by it."""
    config_class: ClassVar[type[RunConfig]]
    """The config dataclass the job runs from (a ``RunConfig`` subclass: ``Config``, ``FuseRunConfig``)."""
    trial_errors: ClassVar[tuple[type[Exception], ...]] = ()
    """Exceptions that fail one trial (recorded as FAIL) and let the study go on."""
    setup_seconds: float = 0.0
    """Seconds ``load`` and ``prepare`` took (stored with the studies as ``autolora.setup_seconds``)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    @classmethod
    @abstractmethod
    def plan(cls, config: RunConfig) -> Job:
        """Validate every input in order of cost and return the job; raise ``UserError`` on the first bad one.

        Nothing is created or loaded here (``JSON`` configs and file headers only).
        """

    @property
    def run_dir(self) -> Path:
        """The run folder (absolute)."""
        return self.config.out_dir.resolve()

    @abstractmethod
    def load(self) -> None:
        """Load what every trial of this process reuses (base model, judge...). Called once per process."""

    @abstractmethod
    def studies(self) -> list[StudySpec]:
        """The studies of this run, the main one first (they run in ``StudySpec.order``). Called after ``load``."""

    @abstractmethod
    def resolved_config(self) -> dict[str, Any]:
        """The config with every default and path made explicit: what workers and resumes run."""

    strict: bool = False
    """Stop on a warning of ``diagnose`` (``--strict``) instead of running anyway."""

    def diagnose(self) -> list[Finding]:
        """Checks of the inputs that need the loaded models (see ``core.findings``). Called after ``load`` and
        before anything is created, so ``--strict`` can still stop cleanly."""
        return []

    def run_files(self) -> dict[str, str]:
        """Extra files (name -> text) written into the run folder beside ``config.yaml`` (recipes as read)."""
        return {}

    def study_images(self) -> dict[str, Image.Image]:
        """Pictures every study of the run keeps as an Optuna artifact after ``prepare`` (``base.png``: the base
        model's grid of the evaluation prompts and seeds, which ``autolora report`` puts beside the trials')."""
        return {}

    @abstractmethod
    def prepare(self, cache_dir: Path) -> str:
        """Compute what every trial of the study shares (cached in ``cache_dir``); return the setup line."""

    @abstractmethod
    def objective(
        self, spec: StudySpec, parent: ParentRun | None, echo: Callable[[str], None], progress: bool
    ) -> Objective:
        """The Optuna objective for the trials of study ``spec`` (one call runs one trial)."""

    def before_study(self, spec: StudySpec, study: optuna.Study) -> StudySpec:
        """Called before this process runs trials of ``spec`` (the studies before it in run order have run; a
        worker may find them still finishing). May add trials to ``study`` (a warm start from an earlier study)
        and return ``spec`` changed (``x0``): the study is then reopened with that spec's sampler."""
        return spec

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Called after every finished trial, in the process that ran it."""
        return None

    def release(self) -> None:
        """Free the loaded models (the trials run in worker processes instead)."""
        return None

    def close(self) -> None:
        """Called once at the end, whatever happened (undo what ``load`` attached)."""
        return None

    def summary(self, studies: dict[str, optuna.Study], parent: ParentRun | None) -> list[str]:
        """Lines printed after the trials (and logged to the parent run by the job if it wants)."""
        return []

    # -- reading a finished run: ``autolora show`` and ``autolora export`` --------------------------

    @classmethod
    def show(cls, study: optuna.Study, run_dir: Path | None) -> None:
        """Print the run of ``study`` (its trial table by default)."""

        print_table(study, run_dir)

    @classmethod
    def report_parts(cls, study: optuna.Study, run_dir: Path | None) -> list[tuple[str, list[Any]]]:
        """The job's own sections of ``autolora report``: (title, items), an item a line of text or a PIL image."""
        return []

    @classmethod
    @abstractmethod
    def export(
        cls,
        study: optuna.Study,
        run_dir: Path | None,
        number: int | None,
        out: Path,
        name: str | None,
        rank: int | None,
        force: bool = False,
    ) -> dict[str, Path]:
        """Write trial ``number`` (None: the best feasible) of the run into ``out``; return kind -> path.

        ``force`` takes an infeasible trial (``autolora.core.reading.choose_trial``)."""
