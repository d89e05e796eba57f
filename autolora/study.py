"""The study: storage, sampler, pruner, search-space hash; the ``tune`` loop and its summary.

The way of a study: ``plan`` (validate everything, create nothing) -> ``session`` (load models
once) -> create the run folder, the Optuna study and the MLflow parent run -> per-study caches
-> trials (``trial.TrialRunner``) -> summary.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora import __version__
from autolora.config import Config
from autolora.errors import TrialFailed
from autolora.plan import ATTR, Plan, make_plan
from autolora.session import Session
from autolora.trial import TrialRunner

if TYPE_CHECKING:
    import optuna


def make_sampler(name: str, seed: int, multi: bool) -> optuna.samplers.BaseSampler:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.QMCSampler(seed=seed)


def make_pruner(name: str, startup: int, multi: bool) -> optuna.pruners.BasePruner:
    import optuna

    if name == "none" or multi:
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)


def open_study(plan: Plan) -> optuna.Study:
    """Create or resume the study, recording what it was made with."""
    import optuna

    cfg = plan.config
    multi = not plan.objective.is_scalar
    # A resumed study must not replay the first trials' random draws: offset the seed by the
    # number of trials already stored, which keeps runs reproducible from the same history.
    try:
        earlier = len(optuna.load_study(study_name=cfg.study_name, storage=cfg.storage_url).trials)
    except KeyError:
        earlier = 0
    study = optuna.create_study(
        study_name=cfg.study_name,
        storage=cfg.storage_url,
        sampler=make_sampler(cfg.study.sampler, cfg.study.seed + earlier, multi),
        pruner=make_pruner(cfg.study.pruner, cfg.study.pruner_startup_trials, multi),
        directions=plan.objective.directions,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    if ATTR + "search_space_hash" not in study.user_attrs:
        study.set_user_attr(ATTR + "search_space_hash", plan.compiled.fingerprint())
        study.set_user_attr(ATTR + "directions", plan.objective.directions)
        study.set_user_attr(ATTR + "objective_names", plan.objective.names)
        study.set_user_attr(ATTR + "version", __version__)
    study.set_user_attr(ATTR + "run_dir", str(plan.run_dir))
    study.set_user_attr(ATTR + "config", plan.config.to_dict())
    study.set_metric_names(plan.objective.names)
    return study


def write_run_files(plan: Plan, mlflow_uri: str) -> list[Path]:
    import yaml

    from autolora.store import write_text_atomic

    run_dir = plan.run_dir
    resolved = plan.config.to_dict()
    resolved["study"]["name"] = plan.config.study_name
    resolved["study"]["out"] = str(run_dir)
    resolved["study"]["storage"] = plan.config.storage_url
    resolved["study"]["mlflow_uri"] = mlflow_uri
    files = {
        "config.yaml": yaml.safe_dump(resolved, sort_keys=False),
        "search_space.yaml": plan.space_text,
        "objective.yaml": plan.objective_text,
    }
    paths = []
    for name, text in files.items():
        write_text_atomic(run_dir / name, text)
        paths.append(run_dir / name)
    return paths


@dataclass
class TuneResult:
    study: Any
    run_dir: Path
    mlflow_ui: str
    parent_run_id: str | None
    n_new: int


def run_tune(config: Config, echo: Callable[[str], None] = print, progress: bool = True) -> TuneResult:
    """``autolora tune``: validate, load, run the trials, summarise."""

    from autolora.quiet import quiet_libraries
    from autolora.store import best_numbers, prune_kept
    from autolora.tracking import Tracker

    quiet_libraries()
    plan = make_plan(config)
    session = Session.load(plan)
    cfg = plan.config
    # Inputs are valid and the models load: from here on we create things.
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(plan)
    tracker = Tracker(cfg.study.mlflow_uri, f"autolora/{cfg.study_name}")
    inputs = write_run_files(plan, tracker.uri)
    echo(f"study '{cfg.study_name}' in {plan.run_dir} ({len(study.trials)} earlier trials); storage {cfg.storage_url}")
    echo(f"MLflow: {tracker.ui_command()}")
    parent = tracker.start_parent(
        f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
        cfg.to_dict(),
        inputs,
        tags={"autolora.study": cfg.study_name, "autolora.version": __version__},
    )
    study.set_user_attr(ATTR + "mlflow_experiment_id", tracker.experiment_id)
    status = "FINISHED"
    n_before = len(study.trials)
    try:
        session.prepare(plan.run_dir / "cache")
        echo(
            f"setup {session.setup_seconds:.1f}s: base model {plan.model.source} ({plan.model.arch}, "
            f"{plan.device}, {plan.resolution}px), judge {session.judge.name}, {len(plan.style.images)} style "
            f"images, {len(plan.prompts)} prompts x {len(cfg.eval.seeds)} seeds"
        )
        study.set_user_attr(ATTR + "setup_seconds", session.setup_seconds)
        keep = cfg.study.keep_top_k

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            prune_kept(plan.run_dir, best_numbers(study, keep))
            if outer is not None:
                outer.update(1)

        outer = None
        if progress:
            from tqdm.auto import tqdm

            outer = tqdm(total=cfg.study.trials, desc="trials", unit="trial", disable=None)
        try:
            if cfg.study.process_per_trial:
                session.release()
                _run_isolated(plan, parent.run_id, cfg.study.trials, cfg.study.timeout, echo, outer)
                prune_kept(plan.run_dir, best_numbers(study, keep))
            else:
                runner = TrialRunner(session, parent, echo=_writer(echo, outer), progress=progress)
                study.optimize(
                    runner,
                    n_trials=cfg.study.trials,
                    timeout=cfg.study.timeout,
                    catch=(TrialFailed,),
                    callbacks=[after_trial],
                    gc_after_trial=False,
                )
        finally:
            if outer is not None:
                outer.close()
        parent.log_summary(study, plan.objective.names)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        parent.end(status)
    return TuneResult(study, plan.run_dir, tracker.ui_command(), parent.run_id, len(study.trials) - n_before)


def _writer(echo: Callable[[str], None], bar: Any) -> Callable[[str], None]:
    if bar is None:
        return echo

    def write(line: str) -> None:
        bar.write(line, file=sys.stdout)

    return write


def _run_isolated(
    plan: Plan, parent_run_id: str, n_trials: int, timeout: float | None, echo: Callable[[str], None], bar: Any
) -> None:
    """One fresh process per trial; each joins the study through the storage and runs one trial."""
    import subprocess

    t0 = time.perf_counter()
    for _ in range(n_trials):
        if timeout is not None and time.perf_counter() - t0 > timeout:
            break
        cmd = [sys.executable, "-m", "autolora.worker", str(plan.run_dir), "--parent-run", parent_run_id]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            _writer(echo, bar)(line)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
            raise RuntimeError(f"trial process exited with {proc.returncode}: {tail[0]}")
        if bar is not None:
            bar.update(1)
