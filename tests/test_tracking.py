"""autolora.core.tracking against a real SQLite-backed MLflow store and real Optuna studies (no mocks)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import optuna
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from autolora.core.tracking import PARENT_TAG, ParentRun, Tracker, flatten
from autolora.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)


def artifact(client: MlflowClient, run_id: str, name: str = "") -> Path:
    """The local path of a run's artifact (the stores here keep artifacts on local disk)."""
    uri = client.get_run(run_id).info.artifact_uri
    return Path(url2pathname(urlparse(uri).path)) / name


@dataclass
class Store:
    root: Path
    uri: str
    tracker: Tracker
    parent: ParentRun
    study: optuna.Study
    trial_runs: dict[int, str]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything MLflow writes relative to the cwd lands in tmp_path, and the env cannot pick the store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One 5-trial quadratic study (3 complete, 1 pruned, 1 failed) tracked end to end."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        uri = f"sqlite:///{root}/mlflow.db"
        tracker = Tracker(uri, "quadratic", artifact_location=(root / "artifacts").as_uri())
        (root / "config.yaml").write_text("study:\n  trials: 5\n")
        (root / "space").mkdir()
        (root / "space" / "space.yaml").write_text("x: [-3, 3]\n")
        params = {"study": {"trials": 5, "sampler": "random"}, "lr": 1e-4, "prompt": "p" * 7000, "bad:key!": 1}
        parent = tracker.start_parent("study-1", params, [root / "config.yaml", root / "space"], {"autolora": "1"})
        runs: dict[int, str] = {}

        def objective(trial: optuna.Trial) -> float:
            x, y = trial.suggest_float("x", -3, 3), trial.suggest_int("y", 0, 4)
            run = parent.start_trial(trial.number, trial.params, {"kind": "test", "odd key?": "ok"})
            runs[trial.number] = run.run_id
            value = (x - 1) ** 2 + y
            for step in (1, 2):
                run.log_metrics({"loss": value / step, "clip": float("nan") if step == 2 else 0.5}, step=step)
            run.log_curve("train_loss", [1.0 / i for i in range(1, 1501)])
            run.log_image(Image.new("RGB", (8, 8), "red"), "samples/step_0002.png")
            run.log_dict({"x": x, "path": root}, "eval.json")
            run.set_tags({"note": "n" * 9000})
            if trial.number == 1:
                run.end("FAIL", reason="NaN loss at step 3")
                raise RuntimeError("NaN loss at step 3")
            if trial.number == 3:
                run.end("PRUNED")
                raise optuna.TrialPruned()
            trial.set_user_attr("clip_score", 0.5)
            run.end("COMPLETE")
            return value

        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(objective, n_trials=5, catch=(RuntimeError,))
        parent.log_summary(study, ["loss"])
        parent.end()
        yield Store(root, uri, tracker, parent, study, runs)


def test_parent_params_tags_and_inputs(store: Store) -> None:
    run = store.tracker.client.get_run(store.parent.run_id)
    assert run.info.run_name == "study-1" and run.info.status == "FINISHED"
    assert run.data.params["study.trials"] == "5" and run.data.params["study.sampler"] == "random"
    assert run.data.params["lr"] == "0.0001"
    assert len(run.data.params["prompt"]) == 6000  # truncated to MLflow's limit
    assert run.data.params["bad_key_"] == "1"  # made a valid MLflow name
    assert run.data.tags["autolora"] == "1"
    assert (artifact(store.tracker.client, store.parent.run_id, "inputs/config.yaml")).read_text().startswith("study")
    assert (artifact(store.tracker.client, store.parent.run_id, "inputs/space/space.yaml")).is_file()


def test_artifacts_stay_under_artifact_location(store: Store) -> None:
    for run_id in [store.parent.run_id, *store.trial_runs.values()]:
        assert artifact(store.tracker.client, run_id).is_relative_to(store.root / "artifacts")
    assert not (store.root / "mlruns").exists()


def test_nested_runs_carry_parent_and_trial_number(store: Store) -> None:
    client = store.tracker.client
    children = client.search_runs([store.tracker.experiment_id], f"tags.`{PARENT_TAG}` = '{store.parent.run_id}'")
    assert sorted(r.info.run_name for r in children) == [f"trial-{n}" for n in range(5)]
    for run in children:
        assert run.data.tags["optuna.trial_number"] == run.info.run_name.removeprefix("trial-")
        assert run.data.tags["kind"] == "test" and run.data.tags["odd key_"] == "ok"
        assert len(run.data.tags["note"]) == 8000
        assert set(run.data.params) == {"x", "y"}


def test_metrics_with_steps_curve_and_nan(store: Store) -> None:
    client, run_id = store.tracker.client, store.trial_runs[0]
    loss = client.get_metric_history(run_id, "loss")
    assert [m.step for m in loss] == [1, 2] and loss[0].value == pytest.approx(2 * loss[1].value)
    clip = sorted(client.get_metric_history(run_id, "clip"), key=lambda m: m.step)
    assert clip[0].value == 0.5 and math.isnan(clip[1].value)  # MLflow 3.17 stores NaN as NaN
    curve = client.get_metric_history(run_id, "train_loss")
    assert len(curve) == 1500  # two log_batch chunks
    assert sorted(m.step for m in curve) == list(range(1, 1501))
    assert {m.step: m.value for m in curve}[4] == 0.25


def test_inf_is_clamped_by_mlflow(store: Store) -> None:
    run = store.tracker.start_parent("inf", {}, []).start_trial(0, {})
    run.log_metrics({"big": float("inf")})
    (metric,) = store.tracker.client.get_metric_history(run.run_id, "big")
    assert metric.step == 0 and metric.value == sys.float_info.max
    run.end("COMPLETE")


def test_images_and_json_artifacts(store: Store) -> None:
    run_id = store.trial_runs[0]
    with Image.open(artifact(store.tracker.client, run_id, "samples/step_0002.png")) as img:
        assert img.size == (8, 8)
    data = json.loads(artifact(store.tracker.client, run_id, "eval.json").read_text())
    assert data["path"] == str(store.root)  # non-JSON objects are stringified


def test_trial_states_map_to_run_status(store: Store) -> None:
    client = store.tracker.client
    runs = {n: client.get_run(run_id) for n, run_id in store.trial_runs.items()}
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["optuna.state"] == "COMPLETE"
    assert "optuna.fail_reason" not in runs[0].data.tags
    assert runs[1].info.status == "FAILED" and runs[1].data.tags["optuna.state"] == "FAIL"
    assert runs[1].data.tags["optuna.fail_reason"] == "NaN loss at step 3"
    assert runs[3].info.status == "FINISHED" and runs[3].data.tags["optuna.state"] == "PRUNED"


def test_summary_best_trial_and_plots(store: Store) -> None:
    client, study = store.tracker.client, store.study
    run = client.get_run(store.parent.run_id)
    assert run.data.metrics["best.loss"] == pytest.approx(study.best_value)
    assert run.data.metrics["best.trial_number"] == study.best_trial.number
    assert run.data.params["best.x"] == str(study.best_params["x"])
    assert run.data.params["best.y"] == str(study.best_params["y"])
    summary = json.loads(artifact(client, store.parent.run_id, "summary.json").read_text())
    assert (summary["n_trials"], summary["n_complete"], summary["n_pruned"], summary["n_failed"]) == (5, 3, 1, 1)
    (best,) = summary["best_trials"]
    assert best["number"] == study.best_trial.number and best["values"] == {"loss": pytest.approx(study.best_value)}
    assert best["params"] == study.best_params and best["user_attrs"] == {"clip_score": 0.5}
    for name in ("optimization_history", "param_importances"):
        with Image.open(artifact(client, store.parent.run_id, f"plots/{name}.png")) as img:
            assert img.format == "PNG" and img.size[0] > 100
    assert not any(k.startswith("summary.") for k in run.data.tags)


def test_multi_objective_summary_logs_pareto(store: Store) -> None:
    tracker = Tracker(store.uri, "two-objectives", artifact_location=(store.root / "artifacts2").as_uri())
    parent = tracker.start_parent("mo", {}, [])
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1) - t.params["a"]), n_trials=8)
    parent.log_summary(study, ["loss", "clip score"])
    run = tracker.client.get_run(parent.run_id)
    pareto = study.best_trials
    assert run.data.metrics["best.loss"] == pytest.approx(min(t.values[0] for t in pareto))
    assert run.data.metrics["best.clip score"] == pytest.approx(max(t.values[1] for t in pareto))
    assert run.data.metrics["best.pareto_size"] == len(pareto)
    assert run.data.params["best.trials"] == ",".join(str(t.number) for t in pareto)
    summary = json.loads(artifact(tracker.client, parent.run_id, "summary.json").read_text())
    assert [t["number"] for t in summary["best_trials"]] == [t.number for t in pareto]
    assert set(summary["best_trials"][0]["values"]) == {"loss", "clip score"}
    names = {f.path for f in tracker.client.list_artifacts(parent.run_id, "plots")}
    expected = ["optimization_history", "pareto_front", "param_importances_loss", "param_importances_clip score"]
    assert names == {f"plots/{n}.png" for n in expected}
    assert not any(k.startswith("summary.") for k in run.data.tags)


@pytest.mark.parametrize(
    ("n_trials", "constant", "reason"),
    [(0, False, "0 complete trial(s)"), (1, False, "1 complete trial(s)"), (3, True, "no parameter varies")],
)
def test_importances_skipped_not_crashing(store: Store, n_trials: int, constant: bool, reason: str) -> None:
    tracker = Tracker(store.uri, "quadratic")  # reuses the experiment
    parent = tracker.start_parent(f"small-{n_trials}", {}, [])
    study = optuna.create_study()
    space = ["only"] if constant else ["a", "b"]
    study.optimize(lambda t: len(t.suggest_categorical("c", space)), n_trials=n_trials)
    parent.log_summary(study, ["loss"])
    parent.end()
    run = tracker.client.get_run(parent.run_id)
    assert run.data.tags["summary.importances_skipped"].startswith(reason)
    assert json.loads(artifact(tracker.client, parent.run_id, "summary.json").read_text())["n_trials"] == n_trials
    plots = {f.path for f in tracker.client.list_artifacts(parent.run_id, "plots")}
    assert plots == {"plots/optimization_history.png"}
    assert ("best.loss" in run.data.metrics) == (n_trials > 0)


def test_parent_context_manager_marks_failure(store: Store) -> None:
    with pytest.raises(ValueError), store.tracker.start_parent("crash", {}, []) as parent:
        raise ValueError("boom")
    assert store.tracker.client.get_run(parent.run_id).info.status == "FAILED"


def test_env_uri_and_mlflow_default(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    assert Tracker(None, "quadratic").experiment_id == store.tracker.experiment_id
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    default = Tracker(None, "default-store")  # MLflow's default: ./mlflow.db, artifacts in ./mlruns (here: tmp_path)
    assert default.uri == f"sqlite:///{tmp_path}/mlflow.db" and (tmp_path / "mlflow.db").is_file()
    run = default.start_parent("p", {}, [])
    run.log_dict({"a": 1}, "a.json")
    assert artifact(default.client, run.run_id, "a.json").is_relative_to(tmp_path / "mlruns")


def test_ui_command_and_bad_store(tmp_path: Path) -> None:
    tracker = Tracker.__new__(Tracker)
    tracker.uri = f"sqlite:///{tmp_path}/my runs.db"
    assert tracker.ui_command() == f"mlflow ui --backend-store-uri 'sqlite:///{tmp_path}/my runs.db'"
    tracker.uri = "https://mlflow.example.com"
    assert tracker.ui_command() == "open https://mlflow.example.com"
    with pytest.raises(UserError, match="MLflow store .*maintenance mode"):
        Tracker(str(tmp_path / "mlruns"), "x")  # MLflow 3 refuses the plain file store
    with pytest.raises(UserError, match="MLflow store 'weird://x': .*unsupported URI"):
        Tracker("weird://x", "x")


def test_flatten() -> None:
    nested = {"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None, "f/g": "x" * 7000}
    assert flatten(nested) == {"a.b.c": "1", "a.d": "[1, 2]", "e": "None", "f/g": "x" * 6000}


def test_import_does_not_load_heavy_modules() -> None:
    code = (
        "import autolora.core.tracking, sys; print([m for m in ('mlflow', 'optuna', 'matplotlib') if m in sys.modules])"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
