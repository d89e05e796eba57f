"""One trial: attach -> train (with evaluations the pruner sees) -> score -> log -> keep -> detach.

Steps are a resource, not a guess: a trial trains up to its step budget and is evaluated at fixed rungs (every
``plan.eval_every`` steps, the same for every trial, and after its last step). Its result is its best rung
(feasible rungs first, then the highest value; a Pareto objective takes the last rung): the values Optuna records,
the constraints, the adapter kept and exported and the samples all come from that rung, and the step is recorded as
``best_step`` (the adapter's metadata says ``steps`` = the best step, ``steps_budget`` = what it trained).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autolora.adapter import KeptAdapter, state_bytes
from autolora.core.artifacts import upload_image
from autolora.core.feasible import BROKEN_ATTR, is_feasible
from autolora.core.rundir import adapter_dir
from autolora.errors import TrialFailed
from autolora.sampling import grid, sample
from autolora.tune.presets import PRESET_ATTR, short_origin
from autolora.tune.session import PhaseTimer, Session
from autolora.tune.train import train_lora

if TYPE_CHECKING:
    import optuna

    from autolora.core.tracking import ParentRun
    from autolora.tune.search import LoraSpec

ADAPTER_NAME = "autolora"


def _flat_params(spec: LoraSpec) -> dict[str, Any]:
    v = dict(spec.values)
    v["alpha"] = v["alpha_ratio"] * v["rank"]
    v["n_modules"] = len(spec.modules)
    return {k: "+".join(x) if isinstance(x, list) else x for k, x in v.items()}


class TrialRunner:
    """The Optuna objective: one call trains, evaluates, logs and maybe keeps one adapter (``OneTrial``)."""

    def __init__(
        self, session: Session, parent: ParentRun | None, echo: Callable[[str], None] = print, progress: bool = True
    ) -> None:
        self.session = session
        self.parent = parent
        self.echo = echo
        self.progress = progress

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        return OneTrial(self, trial).run()


@dataclass
class Rung:
    """One evaluation of a trial: what the judge read at ``step``, and (for the best so far) the adapter's weights."""

    step: int
    rank: tuple[float, ...]
    metrics: dict[str, float]
    values: list[float]
    images: list[Any]
    weights: dict[str, Any] = field(default_factory=dict)


class OneTrial:
    """One trial's way, in the order ``run`` takes it:

    1. ``__init__``: draw the configuration, record it, open the trial's MLflow run;
    2. ``attach``: the method's adapter on the pipeline (seeded), its size recorded;
    3. ``train``: train up to the step budget; at every rung ``evaluate`` samples, scores, logs, remembers the best
       rung and reports to the pruner, which may stop the trial (``optuna.TrialPruned``);
    4. ``conclude``: the trial's result is its best rung: its metrics, constraints and values, its adapter kept if it
       can be among the best;
    5. ``finish``: the trial's line and the end of its MLflow run, whatever the outcome; ``release`` detaches the
       adapter and frees memory, always.
    """

    def __init__(self, runner: TrialRunner, trial: optuna.Trial) -> None:
        self.session, self.echo, self.progress = runner.session, runner.echo, runner.progress
        self.plan = plan = runner.session.plan
        self.trial = trial
        self.timer = PhaseTimer()
        self.t_start = time.perf_counter()
        sampled = plan.compiled.suggest(trial)
        self.spec = spec = plan.compiled.spec(sampled, defaults=plan.spec_defaults())
        trial.set_user_attr("spec", spec.summary())
        origin = trial.user_attrs.get(PRESET_ATTR)
        tags = {PRESET_ATTR: origin} if origin else None
        self.run_log = runner.parent.start_trial(trial.number, _flat_params(spec), tags=tags) if runner.parent else None
        if self.run_log:
            trial.set_user_attr("mlflow_run_id", self.run_log.run_id)
        self.method = spec.method
        trigger, identifier = plan.config.data.trigger, plan.config.data.identifier
        self.prompts = [self.method.prompt(p, trigger, identifier) for p in runner.session.eval_prompts()]
        self.attached: list[str] = []
        self.last: Rung | None = None  # the last rung evaluated (a pruned trial's result)
        self.best: Rung | None = None  # the best rung so far (a completed trial's result)
        self.broken = ""  # the constraints the result broke, in words ("" when feasible)
        self.bar: Any = None

    def run(self) -> float | list[float]:
        import optuna

        try:
            self.attach()
            self.train()
            values = self.conclude()
            self.finish("COMPLETE", None, values)
            return values[0] if self.plan.objective.is_scalar else values
        except optuna.TrialPruned:
            last = self.last
            self.broken = self.record_constraints(last.metrics if last else {})
            self.trial.set_user_attr("timings", dict(self.timer.seconds))
            self.finish("PRUNED", None, last.values if last else None)
            raise
        except TrialFailed as e:
            self.trial.set_user_attr("fail_reason", str(e))
            self.finish("FAIL", str(e), None)
            raise
        except BaseException as e:
            reason = "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
            self.trial.set_user_attr("fail_reason", reason[:500])
            self.finish("FAIL", reason, None)
            raise
        finally:
            self.release()

    def attach(self) -> None:
        import torch

        spec, trial, pipe = self.spec, self.trial, self.session.pipe
        with self.timer("sample"):  # before the adapter: the base model's own pictures for the prior (cached)
            self.prior = self.session.prior_for(spec)
        with self.timer("adapter"):
            # peft draws the LoRA init from the global generator: seed it so a trial's result
            # depends on its params only, not on what ran before it in this process.
            torch.manual_seed(self.plan.config.train.seed)
            self.method.attach(pipe, spec, ADAPTER_NAME, self.attached)
            size = self.method.trainable_count(pipe, spec, self.attached)
            # The file's size follows from the shapes alone: known for every trial, pruned ones too.
            file_bytes = state_bytes(self.method.weights(pipe, ADAPTER_NAME, self.attached))
            trial.set_user_attr("method", str(spec["method"]))
            trial.set_user_attr("trainable_params", size)
            trial.set_user_attr("adapter_bytes", file_bytes)
            if self.run_log:
                self.run_log.log_metrics({"adapter.trainable_params": float(size), "adapter.bytes": float(file_bytes)})

    def train(self) -> None:
        import torch

        spec, plan, timer, method = self.spec, self.plan, self.timer, self.method
        cfg = plan.config
        if self.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=int(spec["steps"]), desc=f"trial {self.trial.number}", leave=False, unit="step", disable=None
            )

        def on_step(step: int, loss: float) -> None:
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        on_cuda = plan.device.startswith("cuda") and torch.cuda.is_available()
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        t_train = time.perf_counter()
        trigger, identifier = cfg.data.trigger, cfg.data.identifier
        try:
            self.losses = train_lora(
                self.session.pipe,
                spec,
                self.session.train_data,
                self.session.train_settings(),
                plan.device,
                on_step=on_step,
                on_eval=self.evaluate,
                eval_every=plan.eval_every,
                attached=self.attached,
                prompt=(lambda c: method.prompt(c, trigger, identifier)) if method.learns_tokens else None,
                prior=self.prior,
                prior_weight=float(spec["prior_weight"]),
            )
        except torch.OutOfMemoryError as e:
            raise TrialFailed(f"out of memory: {str(e).splitlines()[0][:160]}") from None
        finally:
            train_total = time.perf_counter() - t_train
            timer.seconds["train"] += (
                train_total - timer.seconds["sample"] - timer.seconds["score"] - timer.seconds["log"]
            )
        if on_cuda:  # the accelerator's peak while training and sampling (a CPU process has no per-trial peak)
            self.trial.set_user_attr("peak_memory_bytes", int(torch.cuda.max_memory_allocated()))
        self.trial.set_user_attr("seconds_per_step", timer.seconds["train"] / max(1, len(self.losses)))

    def evaluate(self, step: int) -> None:
        """A rung: sample the evaluation prompts, score, log, remember the best rung, report to the pruner."""
        import optuna

        plan, cfg, timer, trial, run = self.plan, self.plan.config, self.timer, self.trial, self.run_log
        with timer("sample"):
            images = sample(
                self.session.pipe,
                self.prompts,
                cfg.eval.seeds,
                steps=cfg.eval.inference_steps,
                guidance_scale=cfg.eval.guidance(),
                resolution=plan.resolution,
                batch_size=cfg.eval.batch_size,
            )
        with timer("score"):
            metrics = self.session.scorer.score(images)
            values = plan.objective.values(metrics)
            violations = plan.objective.violations(metrics)
        with timer("log"):
            picture = grid(images, rows=len(plan.prompts))
            upload_image(cfg.out_dir.resolve(), trial, picture, f"samples_step_{step:05d}.png")
            if run:
                named = {f"eval.{k}": v for k, v in metrics.items()}
                named.update({f"eval.objective.{n}": v for n, v in zip(plan.objective.names, values, strict=True)})
                named.update({f"eval.constraint.{n}": v for n, v in violations.items()})
                run.log_metrics(named, step=step)
                run.log_image(picture, f"samples/step_{step:05d}.png")
        rung = Rung(step, _rung_rank(plan.objective.directions, values, violations), metrics, values, images)
        self.last = rung
        if self.best is None or rung.rank >= self.best.rank:
            # A copy of this rung's adapter on the CPU (a few MB): the one kept if no later rung beats it.
            rung.weights = self.method.weights(self.session.pipe, ADAPTER_NAME, self.attached)
            self.best = rung
        if plan.objective.is_scalar:
            # Optuna's pruners know no constraints: unchanged, the median pruner keeps a trial that buys style
            # with the subject and stops a careful one. What it sees is the score less the constraints' excess
            # (in the constrained metric's units), so an infeasible trial ranks below the feasible ones.
            excess = sum(max(0.0, v) for v in violations.values())
            sign = 1.0 if plan.objective.directions[0] == "maximize" else -1.0
            trial.report(values[0] - sign * excess, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} with {values[0]:.4f}")

    def conclude(self) -> list[float]:
        """The trial's result is its best rung: logged, recorded, its constraints set, its adapter maybe kept."""
        top, trial, run = self.best, self.trial, self.run_log
        assert top is not None, "a trial is evaluated after its last step"
        trial.set_user_attr("best_step", top.step)
        with self.timer("log"):
            if run:
                run.log_curve("train.loss", self.losses)
                run.log_metrics({f"final.{k}": v for k, v in top.metrics.items()})
                run.log_metrics({"final.best_step": float(top.step)})
        for k, v in top.metrics.items():
            trial.set_user_attr(f"metric.{k}", v)
        self.broken = self.record_constraints(top.metrics)
        with self.timer("keep"):
            self.keep(top, self.broken)
        trial.set_user_attr("timings", dict(self.timer.seconds))
        return top.values

    def record_constraints(self, metrics: dict[str, float]) -> str:
        """Record the constraints of the trial's result (its best rung; a pruned trial's last rung): optuna takes a
        constraint once, so this runs once, after the last evaluation. Return what it broke, in words ("" when
        feasible).

        A pruned trial records them too: TPE learns from its feasibility; optuna's best_trial returns feasible ones.
        """
        objective = self.plan.objective
        if not metrics or not objective.constraints:
            return ""
        for name, violation in objective.violations(metrics).items():
            self.trial.set_constraint(name, violation)
        broken = "; ".join(objective.broken(metrics))
        if broken:
            self.trial.set_user_attr(BROKEN_ATTR, broken)
        return broken

    def keep(self, top: Rung, broken: str) -> None:
        """Save the best rung's adapter if it can be among the best K (or on the Pareto front)."""
        import optuna

        plan, trial, spec, values = self.plan, self.trial, self.spec, top.values
        study = trial.study
        k = plan.config.study.keep_top_k
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        # Feasible trials compete with feasible ones only; an infeasible trial is kept only while no trial is
        # feasible (so that ``export --force`` has the best of a study where nothing worked).
        feasible = [t for t in done if is_feasible(t)]
        if broken:
            if feasible:
                return
        else:
            done = feasible
        signs = [1 if d == "maximize" else -1 for d in plan.objective.directions]
        mine = [sg * v for sg, v in zip(signs, values, strict=True)]
        if plan.objective.is_scalar:
            better = sum(1 for t in done if signs[0] * t.values[0] > mine[0])
            if better >= k:
                return
        else:
            for t in done:
                theirs = [sg * v for sg, v in zip(signs, t.values, strict=True)]
                if all(a >= b for a, b in zip(theirs, mine, strict=True)) and theirs != mine:
                    return
        configs = spec.method.kept_configs(spec, list(top.weights))
        kept = KeptAdapter(
            configs=configs,
            state_dicts=top.weights,
            base=base_facts(self.session),
            info={
                "study": study.study_name,
                "trial": trial.number,
                "params": {**_flat_params(spec), "steps": top.step, "steps_budget": int(spec["steps"])},
                "values": values,
                "objective": plan.objective.name,
                "objective_names": plan.objective.names,
                "trigger": spec.method.spelled_trigger(plan.config.data.trigger, plan.config.data.identifier),
            },
        )
        metrics = {k2: v2 for k2, v2 in trial.user_attrs.items() if k2.startswith("metric.")}
        kept.info["metrics"] = {k2.removeprefix("metric."): v2 for k2, v2 in metrics.items()}
        kept.info["scores"] = dict(zip(plan.objective.names, values, strict=True))
        kept.info["infeasible"] = broken or None
        kept.samples = list(top.images)
        kept.sample_rows = len(plan.prompts)
        kept.save(adapter_dir(plan.run_dir, trial.number))

    def finish(self, state: str, reason: str | None, values: list[float] | None) -> None:
        """End the MLflow run and print the trial's line."""
        trial, run, spec = self.trial, self.run_log, self.spec
        broken = self.broken
        seconds = time.perf_counter() - self.t_start
        if run and self.plan.objective.constraints and state != "FAIL":
            run.set_tags({"autolora.feasible": "false" if broken else "true", "autolora.infeasible": broken})
        if run:
            with self.timer("log"):
                run.log_dict({"timings": dict(self.timer.seconds), "seconds": seconds}, "timings.json")
                run.end(state, reason)
        names = self.plan.objective.names
        shown = " ".join(f"{n}={v:+.4f}" for n, v in zip(names, values, strict=True)) if values else ""
        # The recipe's own terms, as the score adds them up (style_auto and content_choice_kept for the defaults).
        terms = dict.fromkeys(m for t in self.plan.objective.targets for m in t.terms)
        parts = [f"{m}={trial.user_attrs[f'metric.{m}']:+.4f}" for m in terms if f"metric.{m}" in trial.user_attrs]
        extra = f" ({' '.join(parts)})" if parts else ""
        why = f" [{reason}]" if reason else ""
        best_step = trial.user_attrs.get("best_step")
        if state == "COMPLETE" and best_step is not None and best_step != int(spec["steps"]):
            why += f" [best at step {best_step}]"
        if trial.user_attrs.get(PRESET_ATTR):
            why += f" [{short_origin(trial.user_attrs[PRESET_ATTR])}]"
        if state == "COMPLETE" and broken:
            why += f" [infeasible: {broken}]"
        self.echo(f"trial {trial.number:>3} {state:<8} {shown}{extra} | {spec.summary()} | {seconds:.1f}s{why}")

    def release(self) -> None:
        """Detach the adapter and free memory, whatever happened."""
        import torch

        if self.bar is not None:
            self.bar.close()
        with self.timer("adapter"):
            self.method.detach(self.session.pipe, ADAPTER_NAME, self.attached)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def base_facts(session: Session) -> dict[str, Any]:
    plan = session.plan
    return {
        "source": plan.model.source,
        "arch": plan.model.arch,
        "layers_per_block": plan.model.denoiser_config.get("layers_per_block", 2),
        "denoiser": plan.model.denoiser,
        "denoiser_config": dict(plan.model.denoiser_config),
        "resolution": plan.resolution,
        "prediction_type": session.pipe.scheduler.config.get("prediction_type", "epsilon"),
        "pipeline_class": plan.model.pipeline_class,
    }


def _rung_rank(directions: list[str], values: list[float], violations: dict[str, float]) -> tuple[float, ...]:
    """How a rung compares within its trial: feasible first, then less constraint excess, then the value (a later
    rung wins a tie). A Pareto objective has no single order: its later rungs always win (its result is its last)."""
    if len(directions) > 1:
        return (0.0,)
    excess = sum(max(0.0, v) for v in violations.values())
    sign = 1.0 if directions[0] == "maximize" else -1.0
    return (float(excess == 0), -excess, sign * values[0])
