"""One fusion trial: coefficients from the sampler -> one sampling pass -> scores -> MLflow."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from autolora.core.artifacts import upload_image
from autolora.core.feasible import BROKEN_ATTR
from autolora.explain.reading import Reading
from autolora.fuse.probes import READING_ATTR
from autolora.fuse.session import FuseSession
from autolora.fuse.space import CoefficientSpace
from autolora.sampling import grid

if TYPE_CHECKING:
    import optuna

    from autolora.core.tracking import ParentRun
    from autolora.fuse.baselines import FixedSpace


class FuseTrialRunner:
    """The Optuna objective of one fusion study (``label``: ``dlf`` or ``linear``)."""

    def __init__(
        self,
        session: FuseSession,
        space: CoefficientSpace | FixedSpace,
        label: str,
        parent: ParentRun | None,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.session, self.space, self.label, self.parent, self.echo = session, space, label, parent, echo

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        t0 = time.perf_counter()
        plan = self.session.plan
        objective = plan.objective
        fusion = self.space.suggest(trial)
        shown_spec = fusion.summary()
        if "baseline" in trial.params:  # a fixed trial: its name first
            shown_spec = f"{trial.params['baseline']}: {shown_spec}"
        trial.set_user_attr("spec", shown_spec)
        trial.set_user_attr("fusion", fusion.to_dict())
        run = None
        if self.parent:
            tags = {"autolora.fusion.study": self.label}
            run = self.parent.start_trial(trial.number, trial.params, tags, run_name=f"{self.label}-{trial.number}")
            trial.set_user_attr("mlflow_run_id", run.run_id)
        try:
            t_sample = time.perf_counter()
            images = self.session.draw(fusion)
            t_score = time.perf_counter()
            assert self.session.scorer is not None, "FuseSession.prepare first"
            metrics, each = self.session.scorer.score_and_each(images)
            # per seed, as ``explain`` reads them: the probes of the block prior are maps (``fuse.probes``)
            trial.set_user_attr(READING_ATTR, Reading.of(each, len(plan.config.eval.seeds)).per_seed)
            values = objective.values(metrics)
            violations = objective.violations(metrics)
            broken = "; ".join(objective.broken(metrics))
            for key, violation in violations.items():  # one evaluation: the constraint is set once, here
                trial.set_constraint(key, violation)
            if broken:
                trial.set_user_attr(BROKEN_ATTR, broken)
            t_log = time.perf_counter()
            picture = grid(images, rows=len(plan.prompts))
            upload_image(plan.config.out_dir.resolve(), trial, picture, "samples.png")
            if run:
                named = {f"eval.{k}": v for k, v in metrics.items()}
                named.update({f"eval.objective.{n}": v for n, v in zip(objective.names, values, strict=True)})
                named.update({f"eval.constraint.{n}": v for n, v in violations.items()})
                run.log_metrics(named)
                if objective.constraints:
                    run.set_tags({"autolora.feasible": "false" if broken else "true", "autolora.infeasible": broken})
                run.log_image(picture, "samples/grid.png")
                run.log_dict(fusion.to_dict(), "coefficients.json")
            for k, v in metrics.items():
                trial.set_user_attr(f"metric.{k}", v)
            timings = {"sample": t_score - t_sample, "score": t_log - t_score, "log": time.perf_counter() - t_log}
            trial.set_user_attr("timings", timings)
        except BaseException as e:
            reason = "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
            trial.set_user_attr("fail_reason", reason[:500])
            if run:
                run.end("FAIL", reason)
            raise
        if run:
            run.end("COMPLETE")
        shown = " ".join(f"{n}={v:+.4f}" for n, v in zip(objective.names, values, strict=True))
        gains = " ".join(f"{k.removeprefix('style_gain.')}={v:+.4f}" for k, v in metrics.items() if "gain." in k)
        self.echo(
            f"{self.label:<6} trial {trial.number:>3} {shown} (style_gain {gains}) | {shown_spec} | "
            f"{time.perf_counter() - t0:.1f}s" + (f" [infeasible: {broken}]" if broken else "")
        )
        return values[0] if objective.is_scalar else values
