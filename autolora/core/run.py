"""Running a job's studies: validate -> load -> diagnose -> run folder, studies, MLflow parent run -> trials -> summary.

The trials run in this process (``study.optimize``), or in local worker processes (``--workers N``,
``--process-per-trial``), or are only queued for ``autolora worker`` processes elsewhere (``--queue-only``);
in the last two cases the budget is queued in the storage first, so N trials means N.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora import __version__
from autolora.atomic import write_text
from autolora.core.artifacts import has_artifact, upload_image
from autolora.core.checks import check_existing_study
from autolora.core.findings import Finding, findings_metrics, show_findings, strict_failure
from autolora.core.job import Job, signed
from autolora.core.storage import enqueue_budget, make_storage
from autolora.core.study import ATTR, StudySpec, open_study, run_order
from autolora.core.tracking import Tracker
from autolora.errors import UserError
from autolora.quiet import quiet_libraries

if TYPE_CHECKING:
    import optuna

    from autolora.core.tracking import ParentRun


@dataclass
class RunResult:
    """What a run left: its studies (label -> study), where, and how to look at it."""

    studies: dict[str, Any]
    specs: list[StudySpec]
    run_dir: Path
    mlflow_ui: str
    parent_run_id: str | None
    n_new: int
    """Trials finished by this run, over all its studies."""
    lines: list[str] = field(default_factory=list)
    """The job's summary."""

    @property
    def study(self) -> Any:
        """The run's first (main) study."""
        return self.studies[self.specs[0].label]


def resolved_study_section(job: Job, mlflow_uri: str) -> dict[str, Any]:
    """The job's resolved config with the ``study`` section's name, folder, storage and MLflow URI made explicit."""
    resolved = job.resolved_config()
    cfg = job.config
    resolved["study"].update(name=cfg.study_name, out=str(job.run_dir), storage=cfg.storage_url, mlflow_uri=mlflow_uri)
    return resolved


def write_run_files(job: Job, resolved: dict[str, Any]) -> list[Path]:
    """``config.yaml`` (resolved) and the job's recipe files, written atomically into the run folder."""
    import yaml

    files = {"config.yaml": yaml.safe_dump(resolved, sort_keys=False), **job.run_files()}
    for name, text in files.items():
        write_text(job.run_dir / name, text)
    return [job.run_dir / name for name in files]


def run_job(job: Job, echo: Callable[[str], None] = print, progress: bool = True) -> RunResult:
    """Run a planned job: see the module docstring. ``job`` comes from ``JobClass.plan(config)``."""

    quiet_libraries()
    cfg = job.config
    try:
        job.load()
        specs = job.studies()
        for spec in specs:
            check_existing_study(cfg.storage_url, spec)
        findings = job.diagnose()
        failure = strict_failure(findings) if job.strict else None
        if failure:
            raise UserError(failure)
        # Inputs are valid and the models load: from here on we create things.
        job.run_dir.mkdir(parents=True, exist_ok=True)
        tracker = Tracker(cfg.study.mlflow_uri, f"autolora/{cfg.study_name}")
        resolved = resolved_study_section(job, tracker.uri)
        inputs = write_run_files(job, resolved)
        parent = tracker.start_parent(
            f"{job.kind}-{time.strftime('%Y%m%d-%H%M%S')}",
            cfg.to_dict(),
            inputs,
            tags={"autolora.study": cfg.study_name, "autolora.version": __version__, "autolora.kind": job.kind},
        )
        with parent:
            return _run(job, specs, resolved, tracker, parent, echo, progress, findings)
    finally:
        job.close()


def _run(
    job: Job,
    specs: list[StudySpec],
    resolved: dict[str, Any],
    tracker: Any,
    parent: ParentRun,
    echo: Callable[[str], None],
    progress: bool,
    findings: list[Finding],
) -> RunResult:
    cfg = job.config
    settings = cfg.study
    storage = make_storage(
        cfg.storage_url, settings.heartbeat_interval, settings.grace_period, settings.retry_failed, pool_size=2
    )
    record = {
        "job": job.kind,
        "config": resolved,
        "run_dir": str(job.run_dir),
        "run_studies": [s.name for s in specs],
        "mlflow_uri": tracker.uri,
        "mlflow_experiment_id": tracker.experiment_id,
        "mlflow_parent_run_id": parent.run_id,
    }

    studies = {s.label: open_study(s, storage, settings, record={**record, "label": s.label}) for s in specs}
    before = _finished(studies.values())
    names = ", ".join(f"'{s.name}' ({_finished([studies[s.label]])} earlier trials)" for s in specs)
    kind = "study" if len(specs) == 1 else "studies"
    echo(f"{job.kind} run in {job.run_dir}: {kind} {names}; storage {cfg.storage_url}")
    echo(f"MLflow: {tracker.ui_command()}")
    _record_findings(findings, studies.values(), parent, echo)
    echo(job.prepare(job.run_dir / "cache"))
    _keep_study_images(job, studies.values())
    for study in studies.values():
        study.set_user_attr(ATTR + "setup_seconds", job.setup_seconds)
    isolated = settings.workers > 0 or settings.process_per_trial or settings.queue_only
    if isolated:
        # The budget waits in the storage; workers may only take from it (N trials means N).
        job.release()
        for spec in specs:
            studies[spec.label].set_user_attr(ATTR + "budget", True)
            if not spec.fixed:  # a fixed study's trials wait already (its first trials)
                enqueue_budget(studies[spec.label], settings.trials)
        if settings.queue_only:
            echo(
                f"{settings.trials} trials queued per study; start workers with: autolora worker --storage "
                f"{cfg.storage_url} --study-name {run_order(specs)[0].name}"
            )
        elif settings.trials > 0:
            from autolora.core.launch import run_local_workers

            run_local_workers(job, specs, storage, parent.run_id, echo=echo, progress=progress)
    else:
        try:
            for spec in run_order(specs):
                _optimize(job, spec, studies[spec.label], storage, parent, echo, progress, len(specs) > 1)
        except KeyboardInterrupt:
            from autolora.core.storage import fail_started

            fail_started(storage)
            raise
    lines = job.summary(studies, parent)
    n_new = _finished(studies.values()) - before
    return RunResult(studies, specs, job.run_dir, tracker.ui_command(), parent.run_id, n_new, lines)


def _record_findings(
    findings: list[Finding], studies: Iterable[optuna.Study], parent: ParentRun, echo: Callable[[str], None]
) -> None:
    """Print the diagnostics, log them to the parent run and keep the warnings with each study (for ``show``)."""

    show_findings(findings, echo)
    if not findings:
        return
    parent.log_metrics(findings_metrics(findings))
    parent.log_dict({"findings": [f.to_dict() for f in findings]}, "diagnostics.json")
    for study in studies:
        study.set_user_attr(ATTR + "warnings", [f.line for f in findings if f.warning])
        study.set_user_attr(ATTR + "findings", [f.to_dict() for f in findings])


def _keep_study_images(job: Job, studies: Iterable[optuna.Study]) -> None:
    """The job's study pictures as Optuna artifacts of every study, once (a resumed run has them)."""

    pictures = job.study_images()
    for study in studies:
        for name, image in pictures.items():
            if not has_artifact(study, name):
                upload_image(job.run_dir, study, image, name)


def _optimize(
    job: Job,
    spec: StudySpec,
    study: optuna.Study,
    storage: Any,
    parent: ParentRun,
    echo: Callable[[str], None],
    progress: bool,
    several: bool,
) -> None:
    settings = job.config.study
    started = job.before_study(spec, study)
    if started is not spec:  # a warm start: the sampler begins where the job says
        spec, study = started, open_study(started, storage, settings)
    n_trials = waiting(study) if spec.fixed else settings.trials
    bar = None
    if progress:
        from tqdm.auto import tqdm

        desc = f"{spec.label} trials" if several else "trials"
        bar = tqdm(total=n_trials, desc=desc, unit="trial", disable=None)

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        job.after_trial(study, trial)
        if bar is not None:
            bar.update(1)

    try:
        study.optimize(
            signed(job.objective(spec, parent, _writer(echo, bar), progress)),
            n_trials=n_trials,
            timeout=settings.timeout,
            catch=job.trial_errors,
            callbacks=[after],
            gc_after_trial=False,
        )
    finally:
        if bar is not None:
            bar.close()


def waiting(study: optuna.Study) -> int:
    """How many trials wait in ``study`` (enqueued, not yet taken)."""
    import optuna

    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def _finished(studies: Iterable[optuna.Study]) -> int:
    return sum(sum(1 for t in st.get_trials(deepcopy=False) if t.state.is_finished()) for st in studies)


def _writer(echo: Callable[[str], None], bar: Any) -> Callable[[str], None]:
    """Lines printed above a progress bar, not through it."""
    if bar is None:
        return echo

    def write(line: str) -> None:
        bar.write(line, file=sys.stdout)

    return write
