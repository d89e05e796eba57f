"""The confirmation stage: the top trials re-scored on other seeds; the confirmed best is the one shown, logged and
exported; a best whose style is within the measured noise of zero is said and refused without ``--force``.
Real SQLite storage, MLflow store and the tiny pipeline."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from conftest import FAST

from autolora.cli import main
from autolora.core.confirm_record import CONFIRM_ATTR, Confirmation, Rescore
from autolora.core.feasible import best, confirmation, infeasible_line, noise_line, refusal
from autolora.core.reading import choose_trial
from autolora.errors import UserError


def _study(tmp_path: Path, values: list[float]) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", direction="maximize", study_name="s")
    for v in values:
        trial = study.ask()
        trial.set_constraint("content", -0.01)
        study.tell(trial, v)
    return study


def _record(study: optuna.Study, rescored: dict[int, tuple[float, str, float, float]]) -> None:
    """Trial -> (confirmed value, broken, style, style standard error)."""
    trials = {
        n: Rescore(n, [v], list(study.trials[n].values), {"style_gain": s}, broken, s, se)
        for n, (v, broken, s, se) in rescored.items()
    }
    ok = [r for r in trials.values() if not r.broken]
    conf = Confirmation(
        seeds=[100, 101, 102],
        top_k=len(rescored),
        samples=12,
        trials=trials,
        search_best=min(rescored, key=lambda n: -study.trials[n].values[0]),
        best=max(ok, key=lambda r: r.values[0]).number if ok else None,
    )
    study.set_user_attr(CONFIRM_ATTR, conf.to_attr())


def test_the_confirmed_best_is_best_while_it_covers_the_top(tmp_path: Path) -> None:
    study = _study(tmp_path, [0.30, 0.50, 0.10, 0.45])
    assert [t.number for t in best(study)] == [1]
    _record(study, {1: (0.20, "", 0.20, 0.01), 3: (0.40, "", 0.40, 0.01)})  # the search's best was lucky
    assert confirmation(study) is not None and confirmation(study).changed  # type: ignore[union-attr]
    assert [t.number for t in best(study)] == [3] and choose_trial(study, None) == 3
    assert refusal(study) is None
    trial = study.ask()  # a resumed study finds a better trial: the record no longer covers the top two
    trial.set_constraint("content", -0.01)
    study.tell(trial, 0.9)
    assert confirmation(study) is None and [t.number for t in best(study)] == [4]


def test_when_confirmation_breaks_every_top_trial_nothing_is_best(tmp_path: Path) -> None:
    study = _study(tmp_path, [0.30, 0.50])
    _record(
        study,
        {1: (0.4, "content_text_ratio 0.901 < 0.95", 0.3, 0.01), 0: (0.2, "content_text_ratio 0.9 < 0.95", 0.2, 0.01)},
    )
    assert best(study) == []
    line = infeasible_line(study)
    assert line and line.startswith("no confirmed trial: the top 2 feasible trials") and "trial 0: content" in line
    with pytest.raises(UserError, match="no confirmed trial"):
        choose_trial(study, None)
    assert choose_trial(study, None, force=True) == 1


def test_a_best_within_the_noise_is_said_and_refused_without_force(tmp_path: Path) -> None:
    study = _study(tmp_path, [0.30, 0.50])
    study.set_user_attr("autolora.warnings", ["3 style pictures are near-duplicates"])
    _record(study, {1: (0.02, "", 0.004, 0.003), 0: (0.01, "", 0.002, 0.003)})
    line = noise_line(study)
    assert line and "no measurable style: the best, trial 1, has style +0.0040 ± 0.0030 over 3 seeds" in line
    assert "near-duplicates" in line  # and why, when the data diagnostics had a warning
    assert refusal(study) == line
    with pytest.raises(UserError, match="no measurable style"):
        choose_trial(study, None)
    assert choose_trial(study, None, force=True) == 1 and choose_trial(study, 0) == 0


def test_confirmation_settings_are_checked(tmp_path: Path, capsys: Any) -> None:
    for setting, message in (
        ("eval.confirm_seeds=[0,7]", "eval.confirm_seeds: expected seeds not in eval.seeds (shared: [0])"),
        ("eval.confirm_seeds=[7]", "eval.confirm_seeds: expected a list of 2 or more different integers"),
        ("study.confirm_top_k=5", "study.confirm_top_k: expected an integer from 0 to keep_top_k (3)"),
    ):
        rc = main(["tune", "--trials", "1", "--out", "bad", *FAST, "--set", setting])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, (setting, err)
        assert not (tmp_path / "bad").exists()


def test_tune_confirms_records_and_exports_the_confirmed_best(tmp_path: Path, capsys: Any) -> None:
    objective = tmp_path / "style.yaml"
    objective.write_text(
        "clip: {model: auto, pretrained: null}\nobjectives:\n  - {name: score, terms: {style_gain: 1.0}}\n"
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["--out", "run", "--study-name", "s", "--mlflow-uri", uri, "--objective", str(objective), *FAST]
    args += ["--set", "study.confirm_top_k=2", "--set", "eval.confirm_seeds=[5,6,7]"]
    rc = main(["tune", "--trials", "3", *args])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "confirming the top 2 trials on 3 other seeds" in out
    assert "confirmation: the top 2 feasible trials re-scored on 3 other seeds (12 samples)" in out
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/run/optuna.db")
    record = study.user_attrs[CONFIRM_ATTR]
    assert record["seeds"] == [5, 6, 7] and len(record["trials"]) == 2
    conf = confirmation(study)
    assert conf is not None and conf.best is not None
    winner = conf.trials[conf.best]
    assert all(r.style_se is not None and r.style_se > 0 for r in conf.trials.values())
    assert winner.values[0] == pytest.approx(winner.metrics["style_gain"])  # the same judge, on other samples
    assert winner.values != winner.search_values
    assert f"best: trial {conf.best} score=" in out and "on 3 other seeds)" in out

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("autolora/s").experiment_id])
    confirmed = {r.data.tags["optuna.trial_number"]: r for r in runs if "autolora.confirmed" in r.data.tags}
    assert set(confirmed) == {str(n) for n in conf.trials}
    for n, r in confirmed.items():
        assert r.data.metrics["confirm.objective.score"] == pytest.approx(conf.trials[int(n)].values[0])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.tags["autolora.confirmed_best"] == str(conf.best)
    assert parent.data.metrics["confirm.changed"] == float(conf.changed)
    summary = json.loads(Path(client.download_artifacts(parent.info.run_id, "summary.json", str(tmp_path))).read_text())
    assert summary["best_trials"][0]["number"] == conf.best and summary["confirmation"]["best"] == conf.best

    rc = main(["show", "run"])
    shown = capsys.readouterr().out
    assert rc == 0 and "confirmation: the top 2" in shown and f"best: trial {conf.best}" in shown
    report = (tmp_path / "run" / "report.html").read_text()
    assert "Best trial (confirmed)" in report and "re-scored on 3 other seeds" in report

    flags = [] if refusal(study) is None else ["--force"]  # a tiny random model may learn nothing measurable
    if flags:
        rc = main(["export", "run", "--out", "refused"])
        assert rc == 2 and "no measurable style" in capsys.readouterr().err and not Path("refused").exists()
    rc = main(["export", "run", "--out", "exported", *flags])
    capsys.readouterr()
    assert rc == 0 and list(Path("exported").glob(f"s-trial{conf.best}*.safetensors"))

    # Resumed: trials confirmed on the same seeds are not scored again.
    os.chdir(tmp_path)
    rc = main(["tune", "--trials", "1", *args])
    capsys.readouterr()
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/run/optuna.db")
    again = study.user_attrs[CONFIRM_ATTR]["trials"]
    assert rc == 0
    for n, r in record["trials"].items():
        if n in again:
            assert again[n]["seconds"] == r["seconds"] and again[n]["values"] == r["values"]
