"""The ``tune`` job: a study over adapter settings. Each trial attaches, trains, samples, scores and maybe keeps.

The way of a run: ``plan`` (validate everything, create nothing) -> ``session`` (pipeline + judge loaded
once) -> the study core creates the run folder, the study and the MLflow parent run -> per-study caches
-> trials (``trial.TrialRunner``) -> summary. The core (``autolora.core.run``) does the generic steps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.config import Config, RunConfig
from autolora.core.feasible import best, candidates, confirmation
from autolora.core.job import Job, Objective
from autolora.core.run import RunResult, run_job
from autolora.core.rundir import best_numbers, prune_kept
from autolora.errors import TrialFailed
from autolora.report.html import run_report
from autolora.sampling import grid
from autolora.tune.confirm import confirm
from autolora.tune.explain_best import explain_best, report_part
from autolora.tune.export import export_trial
from autolora.tune.plan import Plan, make_plan, study_spec
from autolora.tune.session import Session
from autolora.tune.trial import TrialRunner

if TYPE_CHECKING:
    import optuna
    from PIL import Image

    from autolora.core.findings import Finding
    from autolora.core.study import StudySpec
    from autolora.core.tracking import ParentRun


class TuneJob(Job):
    """``autolora tune`` on the study core."""

    kind = "tune"
    trial_errors = (TrialFailed,)
    config_class = Config

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan.config)
        self.the_plan = plan
        self.session: Session | None = None
        self.strict = plan.config.data.strict

    @classmethod
    def plan(cls, config: RunConfig) -> TuneJob:
        assert isinstance(config, Config), type(config)
        return cls(make_plan(config))

    def load(self) -> None:
        self.session = Session.load(self.the_plan)

    def diagnose(self) -> list[Finding]:
        import time

        t0 = time.perf_counter()
        findings = self._session().diagnose(self.run_dir / "cache")
        self._session().setup_seconds += time.perf_counter() - t0
        return findings

    def studies(self) -> list[StudySpec]:
        return [study_spec(self.the_plan)]

    def resolved_config(self) -> dict[str, Any]:
        resolved = self.config.to_dict()
        for key in ("style_images", "prompts"):
            if resolved["data"][key]:
                resolved["data"][key] = str(Path(resolved["data"][key]).resolve())
        return resolved

    def run_files(self) -> dict[str, str]:
        plan = self.the_plan
        return {"search_space.yaml": plan.space_text, "objective.yaml": plan.objective_text}

    def prepare(self, cache_dir: Path) -> str:
        s, plan = self._session(), self.the_plan
        s.prepare(cache_dir)
        self.setup_seconds = s.setup_seconds
        return (
            f"setup {s.setup_seconds:.1f}s: base model {plan.model.source} ({plan.model.arch}, "
            f"{plan.device}, {plan.resolution}px), judge {s.judge.name}, {len(plan.style.images)} style "
            f"images, {len(plan.prompts)} prompts x {len(self.config.eval.seeds)} seeds"
        )

    def study_images(self) -> dict[str, Image.Image]:
        from PIL import ImageOps

        s, plan = self._session(), self.the_plan
        side = max(plan.resolution, 64)
        refs = [ImageOps.fit(im, (side, side)) for im in plan.style.images[:32]]
        return {
            "base.png": grid(s.base_samples, rows=len(plan.prompts)),
            "references.png": grid(refs, rows=max(1, -(-len(refs) // 8))),
        }

    def objective(
        self, spec: StudySpec, parent: ParentRun | None, echo: Callable[[str], None], progress: bool
    ) -> Objective:
        return TrialRunner(self._session(), parent, echo=echo, progress=progress)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        prune_kept(self.run_dir, best_numbers(study, self.config.study.keep_top_k))

    def release(self) -> None:
        if self.session is not None:
            self.session.release()

    def summary(self, studies: dict[str, optuna.Study], parent: ParentRun | None) -> list[str]:
        study = studies["tune"]
        prune_kept(self.run_dir, best_numbers(study, self.config.study.keep_top_k))
        if self.config.study.confirm_top_k and not self.config.study.queue_only:
            self._confirm(study, parent)
        lines = []
        if self.config.study.explain and not self.config.study.queue_only:
            lines += self._explain(study, parent)
        if parent is not None:
            parent.log_summary(study, self.the_plan.objective.names)
        return [*lines, run_report(self, study, parent)]

    def _explain(self, study: optuna.Study, parent: ParentRun | None) -> list[str]:
        """The map of the best LoRA (``autolora.tune.explain_best``); a failure is a line, never a failed run."""
        if not best(study):
            return []
        try:
            if self.session is None or self.session.pipe is None:
                self.session = Session.load(self.the_plan)
                self.session.prepare(self.run_dir / "cache")
            line = explain_best(self.session, study, self.run_dir, parent, echo=lambda s: None)
        except Exception as e:  # the trials and the export stand without the map
            return [f"explain: not written ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"]
        return [line] if line else []

    @classmethod
    def report_parts(cls, study: optuna.Study, run_dir: Path | None) -> list[tuple[str, list[Any]]]:
        return report_part(run_dir)

    def _confirm(self, study: optuna.Study, parent: ParentRun | None) -> None:
        """The confirmation stage (``autolora.tune.confirm``); the models are loaded again if workers ran the trials."""

        if confirmation(study) is not None or not candidates(study, self.config.study.confirm_top_k):
            return  # confirmed already (nothing new at the top), or nothing feasible to confirm
        if self.session is None or self.session.pipe is None:
            from autolora.tune.session import Session

            self.session = Session.load(self.the_plan)
            self.session.prepare(self.run_dir / "cache")
        confirm(self.session, study, parent)

    @classmethod
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
        return export_trial(study, run_dir, number, out, name, force=force, rank=rank)

    def _session(self) -> Session:
        assert self.session is not None, "TuneJob.load first"
        return self.session


def run_tune(config: Config, echo: Callable[[str], None] = print, progress: bool = True) -> RunResult:
    """``autolora tune``: validate, load, run the trials (here or in workers), summarise."""

    return run_job(TuneJob.plan(config), echo=echo, progress=progress)
