"""Content as a constraint: a trial that breaks the objective's constraints is infeasible and never best; a study
where nothing is feasible says so and ``export`` refuses without ``--force``. Real SQLite storage and MLflow store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from conftest import FAST

from autolora.cli import main
from autolora.core.feasible import best, infeasible_line, ranked
from autolora.core.reading import choose_trial
from autolora.errors import UserError
from autolora.scoring.objective import load_objective, parse_objective

BASE = "clip: {model: auto, pretrained: null}\nobjectives:\n  - {name: score, terms: {style_gain: 1.0}}\n"


def _recipe(tmp_path: Path, constraints: str) -> Path:
    path = tmp_path / "objective.yaml"
    path.write_text(BASE + constraints)
    return path


def test_recipes_parse_constraints_and_name_bad_ones(tmp_path: Path) -> None:
    obj, _ = load_objective("balanced")
    content, subject = obj.constraints
    assert (content.metric, content.min, content.max) == ("content_text_kept", 0.94, None)
    assert (subject.metric, subject.min, subject.max) == ("content_choice_kept", -0.15, None)
    kept = {"content_text_kept": 0.97, "content_choice_kept": -0.02}
    assert obj.broken({**kept, "content_text_kept": 0.9}) == ["content_text_kept 0.9000 < 0.94"]
    assert obj.broken(kept) == []
    assert obj.violations({**kept, "content_choice_kept": -0.3})["subject"] == pytest.approx(0.15)
    two = parse_objective(
        {
            "objectives": [{"name": "s", "terms": {"style_gain": 1}}],
            "constraints": [{"name": "band", "metric": "content_base", "min": 0.5, "max": 0.9}],
        },  # fmt: skip
        "x",
        "x.yaml",
    )
    assert two.violations({"content_base": 0.95})["band"] == pytest.approx(0.05)
    assert two.violations({"content_base": 0.7})["band"] < 0
    bad = {
        "- {metric: content_txt_ratio, min: 1}": "unknown metric 'content_txt_ratio'",
        "- {metric: content_text_ratio}": "expected min, max or both",
        "- {metric: content_text_ratio, min: 1, max: 0.5}": "min 1 is above max 0.5",
        "- {metric: content_text_ratio, min: high}": "constraints[0].min: expected a number, got 'high'",
        "- {metric: content_text_ratio, min: 1, floor: 2}": "unknown key 'floor'",
        "{metric: content_text_ratio}": "expected a list",
    }
    for text, message in bad.items():
        with pytest.raises(UserError, match="objective.yaml: constraints") as e:
            load_objective(str(_recipe(tmp_path, f"constraints:\n  {text}\n")))
        assert message in str(e.value), (text, str(e.value))
    fuse = tmp_path / "fuse.yaml"
    fuse.write_text(
        "scorer: fusion\nobjectives:\n  - {name: s, terms: {style_gain_min: 1}}\n"
        "constraints:\n  - {metric: style_gain_min, min: 0}\n"
    )
    fused, _ = load_objective(str(fuse), scorer="fusion")  # fuse records constraints too (tests/test_fuse.py)
    assert fused.constraints[0].metric == "style_gain_min"
    (c,) = load_objective("fuse-balanced", scorer="fusion")[0].constraints
    assert (c.metric, c.min) == ("content_text_ratio", 0.95)


def test_an_infeasible_trial_is_never_best(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", direction="maximize", study_name="s")
    for value, violation in ((0.9, 0.2), (0.3, -0.1), (0.5, 0.0), (0.7, 0.01)):
        trial = study.ask()
        trial.set_constraint("content", violation)
        if violation > 0:
            trial.set_user_attr("infeasible", f"content_text_ratio short by {violation}")
        study.tell(trial, value)
    assert [t.number for t in best(study)] == [2]  # 0.5 at the bound is feasible; 0.9 and 0.7 are not
    assert [t.number for t in ranked(study)] == [2, 1, 0, 3]
    assert choose_trial(study, None) == 2
    with pytest.raises(UserError, match=r"--trial 0 is infeasible \(content_text_ratio short by 0.2\)"):
        choose_trial(study, 0)
    assert choose_trial(study, 0, force=True) == 0
    assert infeasible_line(study) is None


def _tune(tmp_path: Path, objective: Path, name: str, capsys: Any) -> tuple[int, str, Path]:
    os.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["--out", name, "--study-name", "s", "--mlflow-uri", uri, "--objective", str(objective)]
    rc = main(["tune", "--trials", "2", *args, *FAST])
    out, err = capsys.readouterr()
    return rc, out + err, tmp_path / name


def test_nothing_feasible_is_said_and_export_refuses_without_force(tmp_path: Path, capsys: Any) -> None:
    # No LoRA can double the base's prompt agreement: every trial is infeasible.
    objective = _recipe(tmp_path, "constraints:\n  - {name: content, metric: content_text_ratio, min: 2.0}\n")
    rc, out, run = _tune(tmp_path, objective, "run", capsys)
    assert rc == 0, out
    complete = [ln for ln in out.splitlines() if ln.startswith("trial ") and " COMPLETE " in ln]
    assert complete and all("[infeasible: content_text_ratio " in ln and "< 2]" in ln for ln in complete), out
    assert "no feasible trial: all" in out and "nothing is best" in out and "best: trial" not in out
    assert "Export anyway (not advised):" in out and "--force" in out
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{run}/optuna.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for t in done:  # the constraint is the last evaluation's (optuna keeps the first value it is given)
        assert len(t.intermediate_values) > 1
        assert t.constraints["content"] == pytest.approx(2.0 - t.user_attrs["metric.content_text_ratio"])
    rc = main(["show", str(run)])
    shown = capsys.readouterr().out
    assert rc == 0 and "infeasible: content_text_ratio" in shown and "no feasible trial" in shown
    rc = main(["export", str(run), "--out", str(tmp_path / "exported")])
    err = capsys.readouterr().err
    assert rc == 2 and "no feasible trial" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "exported").exists()
    rc = main(["export", str(run), "--out", str(tmp_path / "forced"), "--force"])
    capsys.readouterr()
    assert rc == 0 and list((tmp_path / "forced").glob("*.safetensors"))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("autolora/s").experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent and "no feasible trial" in parent[0].data.tags.get("autolora.no_feasible_trial", "")
    finished = [r for r in runs if r.data.tags.get("optuna.state") == "COMPLETE"]
    assert finished and all(r.data.tags["autolora.feasible"] == "false" for r in finished)
    assert all("eval.constraint.content" in r.data.metrics for r in finished)


def test_a_satisfied_constraint_changes_nothing(tmp_path: Path, capsys: Any) -> None:
    objective = _recipe(tmp_path, "constraints:\n  - {name: sane, metric: content_text_ratio, max: 100}\n")
    rc, out, run = _tune(tmp_path, objective, "run", capsys)
    assert rc == 0 and "best: trial" in out and "infeasible" not in out, out
    rc = main(["export", str(run), "--out", str(tmp_path / "exported")])
    capsys.readouterr()
    assert rc == 0 and list((tmp_path / "exported").glob("*.safetensors"))
