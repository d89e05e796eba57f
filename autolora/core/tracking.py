"""A thin MLflow layer: one experiment per study, a parent run per study, a nested run per trial.

Uses ``MlflowClient`` only (no fluent active-run state), so several studies or threads can log at once.
mlflow, optuna and matplotlib are imported lazily: importing this module stays instant.
"""

from __future__ import annotations

import re
import shlex
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

from autolora.core.feasible import best as feasible_best
from autolora.core.feasible import complete, confirmation, infeasible_line, is_feasible, noise_line
from autolora.core.interrupts import DeferredClient
from autolora.core.locks import sqlite_init_lock
from autolora.core.plots import render, study_plots
from autolora.errors import UserError

if TYPE_CHECKING:
    import optuna
    from mlflow.tracking import MlflowClient
    from PIL import Image

    from autolora.core.confirm_record import Confirmation

PARENT_TAG = "mlflow.parentRunId"
_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
_MAX_KEY, _MAX_PARAM, _MAX_TAG, _MAX_BATCH, _MAX_PARAMS_BATCH = 250, 6000, 8000, 1000, 100  # mlflow.utils.validation


def _key(key: str) -> str:
    """Make ``key`` a valid MLflow param/metric/tag name (alphanumerics, ``_ - . / space``)."""
    return re.sub(r"[^\w./\- ]", "_", key).strip("/")[:_MAX_KEY]


def flatten(params: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings to dotted keys (``{"study": {"trials": 5}}`` -> ``{"study.trials": "5"}``)."""
    out: dict[str, str] = {}
    for k, v in params.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[_key(f"{prefix}{k}")] = str(v)[:_MAX_PARAM]
    return out


def _trial_info(t: optuna.trial.FrozenTrial, names: list[str]) -> dict[str, object]:
    values = dict(zip(names, t.values, strict=True))
    return {"number": t.number, "values": values, "params": t.params, "user_attrs": t.user_attrs}


class _Run:
    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str) -> None:
        self.client, self.run_id, self.experiment_id = client, run_id, experiment_id

    def _log_params(self, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), _MAX_PARAMS_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_PARAMS_BATCH])

    def _log_metrics(self, pairs: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_key(k), float(v), now, step) for k, v, step in pairs]
        for i in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _MAX_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics in one call. NaN is stored as NaN; MLflow clamps +-inf to +-1.797e308."""
        self._log_metrics([(k, v, step or 0) for k, v in metrics.items()])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags on the run (values truncated to MLflow's 8000-character limit)."""
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(_key(k), str(v)[:_MAX_TAG]) for k, v in tags.items()])

    def log_dict(self, data: Mapping[str, object], name: str) -> None:
        """Log ``data`` as a JSON artifact at ``name`` (MLflow stringifies objects JSON cannot encode)."""
        self.client.log_dict(self.run_id, dict(data), name)


class Tracker:
    """Connects to an MLflow store and owns one experiment (one per study).

    Args:
        uri: Tracking URI. None: ``MLFLOW_TRACKING_URI``, else MLflow's default (``sqlite:///mlflow.db`` in the cwd).
        experiment: Experiment name; got or created.
        artifact_location: Where a *new* experiment stores artifacts. None: MLflow's choice (``./mlruns`` in the cwd
            for a SQLite store).

    Raises:
        UserError: The store cannot be opened (bad URI, MLflow 3's refused file store, missing database driver).
    """

    def __init__(self, uri: str | None, experiment: str, artifact_location: str | None = None) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri: str = uri or mlflow.get_tracking_uri()  # get_tracking_uri() reads MLFLOW_TRACKING_URI itself
        for attempt in range(5):
            try:
                with sqlite_init_lock(self.uri):  # another process may be creating the same store
                    # A stand-in with the client's methods, each run with Ctrl-C held (core.interrupts).
                    self.client = cast(MlflowClient, DeferredClient(MlflowClient(self.uri)))
                    exp = self.client.get_experiment_by_name(experiment)
                    if exp is None:
                        self.experiment_id: str = self.client.create_experiment(experiment, artifact_location)
                    else:
                        self.experiment_id = exp.experiment_id
                        if exp.lifecycle_stage == "deleted":
                            self.client.restore_experiment(exp.experiment_id)
                return
            except ImportError as e:  # missing database driver
                raise UserError(f"MLflow store {self.uri!r}: {str(e).strip().splitlines()[0]}") from e
            except Exception as e:  # bad URI, refused file store, or a race with another process
                # Two workers starting at once on a server store race to create the experiment; the
                # loser succeeds on a second look. Anything else (a bad URI) is reported at once.
                race = any(s in str(e) for s in ("already exists", "UNIQUE", "locked"))
                if attempt == 4 or not race:
                    raise UserError(f"MLflow store {self.uri!r}: {str(e).strip().splitlines()[0]}") from e
                time.sleep(0.5 + attempt)

    def ui_command(self) -> str:
        """Return the exact shell line that opens the dashboard for this store."""
        if self.uri.startswith(("http://", "https://")):
            return f"open {self.uri}"
        return f"mlflow ui --backend-store-uri {shlex.quote(self.uri)}"

    def start_parent(
        self, run_name: str, params: Mapping[str, object], artifacts: list[Path], tags: Mapping[str, str] | None = None
    ) -> ParentRun:
        """Start the study's parent run, log flattened ``params`` and copy ``artifacts`` under ``inputs/``."""
        run = self.client.create_run(self.experiment_id, run_name=run_name)
        parent = ParentRun(self.client, run.info.run_id, self.experiment_id)
        parent.set_tags(tags or {})
        parent._log_params(params)
        for path in map(Path, artifacts):
            if path.is_dir():
                self.client.log_artifacts(parent.run_id, str(path), f"inputs/{path.name}")
            else:
                self.client.log_artifact(parent.run_id, str(path), "inputs")
        return parent


class ParentRun(_Run):
    """The study's run; trials are nested under it. A context manager: an exception ends it FAILED/KILLED."""

    def start_trial(
        self,
        number: int,
        params: Mapping[str, object],
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
    ) -> TrialRun:
        """Start the nested run ``run_name`` (default ``trial-{number}``) and log its flattened ``params``."""
        base = {PARENT_TAG: self.run_id, "optuna.trial_number": str(number)}
        run = self.client.create_run(self.experiment_id, run_name=run_name or f"trial-{number}", tags=base)
        trial = TrialRun(self.client, run.info.run_id, self.experiment_id)
        trial.set_tags(tags or {})
        trial._log_params(params)
        return trial

    def log_summary(self, study: optuna.Study, metric_names: list[str]) -> None:
        """Log the best trial(s), ``summary.json``, history/Pareto/importance plots. Call once per parent run.

        Single objective: ``best.<metric>``, ``best.trial_number`` metrics and ``best.<param>`` params. Multi-objective:
        the best value of each objective over the Pareto set as ``best.<metric>``, ``best.pareto_size``, and the Pareto
        trial numbers as param ``best.trials`` (their params are in ``summary.json``). Plots that cannot be drawn are
        skipped with a ``summary.<plot>_skipped`` tag.
        """

        multi = len(study.directions) > 1
        names = [metric_names[i] if i < len(metric_names) else f"objective_{i}" for i in range(len(study.directions))]
        best = feasible_best(study)
        done = complete(study)
        counts = Counter(t.state.name.lower() for t in study.trials)
        summary = {
            "study_name": study.study_name,
            "directions": [d.name for d in study.directions],
            "metrics": names,
            "n_trials": len(study.trials),
            "n_complete": counts["complete"],
            "n_pruned": counts["pruned"],
            "n_failed": counts["fail"],
            "n_feasible": sum(is_feasible(t) for t in done),
            "best_trials": [_trial_info(t, names) for t in best],
            "no_feasible_trial": infeasible_line(study),
            "no_measurable_style": noise_line(study),
        }
        conf = confirmation(study)
        if conf is not None:
            summary["confirmation"] = conf.to_attr()
        self.log_dict(summary, "summary.json")
        if summary["no_feasible_trial"]:
            self.set_tags({"autolora.no_feasible_trial": str(summary["no_feasible_trial"])})
        if summary["no_measurable_style"]:
            self.set_tags({"autolora.no_measurable_style": str(summary["no_measurable_style"])})
        if len(best) == 1 and not multi:
            self._log_metrics([(f"best.{names[0]}", best[0].values[0], 0), ("best.trial_number", best[0].number, 0)])
            self._log_params({f"best.{k}": v for k, v in best[0].params.items()})
        elif best:
            pick = [min if d.name == "MINIMIZE" else max for d in study.directions]
            self._log_metrics([(f"best.{n}", pick[i](t.values[i] for t in best), 0) for i, n in enumerate(names)])
            self._log_metrics([("best.pareto_size", len(best), 0)])
            self._log_params({"best.trials": ",".join(str(t.number) for t in best)})
        self._plots(study, names, done)

    def log_confirmation(self, conf: Confirmation, names: list[str], label: str = "") -> None:
        """The confirmation stage (``autolora.core.confirm_record``): each confirmed trial's run gets ``confirm.*``
        metrics and an ``autolora.confirmed`` tag; this run ``confirm.changed``, ``confirm.trials`` and the tag
        ``autolora.confirmed_best`` (with a ``label``, ``confirm.<label>.*`` and ``autolora.confirmed_best.<label>``,
        for a run of several studies)."""
        for r in conf.trials.values():
            if not r.run_id:
                continue
            run = TrialRun(self.client, r.run_id, self.experiment_id)
            named: dict[str, float] = {f"confirm.{k}": v for k, v in r.metrics.items()}
            named.update({f"confirm.objective.{n}": v for n, v in zip(names, r.values, strict=True)})
            if r.style is not None and r.style_se is not None:
                named.update({"confirm.style": r.style, "confirm.style_se": r.style_se})
            run.log_metrics(named)
            verdict = "infeasible" if r.broken else "feasible"
            run.set_tags({"autolora.confirmed": verdict, "autolora.confirm_broken": r.broken})
        at = f".{label}" if label else ""
        n = float(len(conf.trials))
        self.log_metrics({f"confirm{at}.changed": float(conf.changed), f"confirm{at}.trials": n})
        self.set_tags({f"autolora.confirmed_best{at}": "none" if conf.best is None else str(conf.best)})

    def _plots(self, study: optuna.Study, names: list[str], done: list[optuna.trial.FrozenTrial]) -> None:
        import matplotlib.pyplot as plt

        plots, skipped = study_plots(study, names)
        if skipped:
            self.set_tags({"summary.importances_skipped": skipped})
        for plot in plots:
            try:
                fig = render(plot)
                try:
                    self.client.log_figure(self.run_id, fig, plot.path)
                finally:
                    plt.close(fig)
            except Exception as e:  # a plot is never worth losing the study over
                self.set_tags({f"summary.{plot.what}_skipped": f"{type(e).__name__}: {e}"})

    def end(self, status: str = "FINISHED") -> None:
        """End the run with MLflow status ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(self.run_id, status)

    def __enter__(self) -> ParentRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.end("FINISHED" if kind is None else "FAILED" if issubclass(kind, Exception) else "KILLED")


class TrialRun(_Run):
    """One trial's nested run."""

    def log_curve(self, key: str, values: list[float], start_step: int = 1) -> None:
        """Log a whole curve (e.g. the loss per step) with ``log_batch``, in chunks of MLflow's 1000-metric limit."""
        self._log_metrics([(key, v, start_step + i) for i, v in enumerate(values)])

    def log_image(self, image: Image.Image, name: str) -> None:
        """Log a PIL image as the artifact ``name`` (e.g. ``samples/step_0040.png``)."""
        self.client.log_image(self.run_id, image, artifact_file=name)

    def end(self, state: str, reason: str | None = None) -> None:
        """End the run from the Optuna trial state: COMPLETE/PRUNED -> FINISHED, FAIL -> FAILED, others -> KILLED."""
        state = str(getattr(state, "name", state)).upper()
        self.set_tags({"optuna.state": state, **({"optuna.fail_reason": reason} if reason else {})})
        self.client.set_terminated(self.run_id, _STATUS.get(state, "KILLED"))


__all__ = ["ParentRun", "Tracker", "TrialRun", "flatten"]
