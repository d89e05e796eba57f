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


def stored_trials(name: str, storage: optuna.storages.BaseStorage) -> int:
    """How many trials study ``name`` already has (0 when it does not exist yet)."""
    import optuna

    try:
        return len(optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:
        return 0


def open_study(plan: Plan, pop_only: bool = False, seed_salt: int = 0, record: bool = True) -> optuna.Study:
    """Create or resume the study (``record``: store what it was made with, as ``tune`` does)."""
    import optuna

    from autolora.storage import make_storage

    cfg = plan.config
    multi = not plan.objective.is_scalar
    storage = make_storage(
        cfg.storage_url, cfg.study.heartbeat_interval, cfg.study.grace_period, cfg.study.retry_failed, pop_only=pop_only
    )
    # A resumed study must not replay the first trials' random draws: offset the seed by the
    # number of trials already stored, which keeps runs reproducible from the same history.
    earlier = stored_trials(cfg.study_name, storage)
    study = optuna.create_study(
        study_name=cfg.study_name,
        storage=storage,
        sampler=make_sampler(cfg.study.sampler, cfg.study.seed + earlier + 7919 * seed_salt, multi),
        pruner=make_pruner(cfg.study.pruner, cfg.study.pruner_startup_trials, multi),
        directions=plan.objective.directions,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    if record:
        if ATTR + "search_space_hash" not in study.user_attrs:
            study.set_user_attr(ATTR + "search_space_hash", plan.compiled.fingerprint())
            study.set_user_attr(ATTR + "directions", plan.objective.directions)
            study.set_user_attr(ATTR + "objective_names", plan.objective.names)
            study.set_user_attr(ATTR + "version", __version__)
        study.set_user_attr(ATTR + "run_dir", str(plan.run_dir))
        study.set_metric_names(plan.objective.names)
    return study


def resolved_config(plan: Plan, mlflow_uri: str) -> dict[str, Any]:
    """The config with every default and path made explicit: what workers and resumes run."""
    resolved = plan.config.to_dict()
    resolved["study"].update(
        name=plan.config.study_name, out=str(plan.run_dir), storage=plan.config.storage_url, mlflow_uri=mlflow_uri
    )
    for key in ("style_images", "prompts"):
        if resolved["data"][key]:
            resolved["data"][key] = str(Path(resolved["data"][key]).resolve())
    return resolved


def write_run_files(plan: Plan, resolved: dict[str, Any]) -> list[Path]:
    import yaml

    from autolora.store import write_text_atomic

    files = {
        "config.yaml": yaml.safe_dump(resolved, sort_keys=False),
        "search_space.yaml": plan.space_text,
        "objective.yaml": plan.objective_text,
    }
    paths = []
    for name, text in files.items():
        write_text_atomic(plan.run_dir / name, text)
        paths.append(plan.run_dir / name)
    return paths


@dataclass
class TuneResult:
    study: Any
    run_dir: Path
    mlflow_ui: str
    parent_run_id: str | None
    n_new: int


def run_tune(config: Config, echo: Callable[[str], None] = print, progress: bool = True) -> TuneResult:
    """``autolora tune``: validate, load, run the trials (here or in workers), summarise."""
    from autolora.launch import run_local_workers
    from autolora.quiet import quiet_libraries
    from autolora.storage import enqueue_budget
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
    resolved = resolved_config(plan, tracker.uri)
    inputs = write_run_files(plan, resolved)
    echo(f"study '{cfg.study_name}' in {plan.run_dir} ({len(study.trials)} earlier trials); storage {cfg.storage_url}")
    echo(f"MLflow: {tracker.ui_command()}")
    parent = tracker.start_parent(
        f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
        cfg.to_dict(),
        inputs,
        tags={"autolora.study": cfg.study_name, "autolora.version": __version__},
    )
    study.set_user_attr(ATTR + "config", resolved)
    study.set_user_attr(ATTR + "mlflow_uri", tracker.uri)
    study.set_user_attr(ATTR + "mlflow_experiment_id", tracker.experiment_id)
    study.set_user_attr(ATTR + "mlflow_parent_run_id", parent.run_id)
    status = "FINISHED"
    n_before = len(study.trials)
    isolated = cfg.study.workers > 0 or cfg.study.process_per_trial or cfg.study.queue_only
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
            if isolated:
                # The budget waits in the storage; workers may only take from it (N trials means N).
                session.release()
                study.set_user_attr(ATTR + "budget", True)
                enqueue_budget(study, cfg.study.trials)
                if cfg.study.queue_only:
                    echo(
                        f"{cfg.study.trials} trials queued; start workers with: autolora worker --storage "
                        f"{cfg.storage_url} --study-name {cfg.study_name}"
                    )
                elif cfg.study.trials > 0:
                    run_local_workers(plan, parent.run_id, echo=_writer(echo, outer), bar=outer)
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
