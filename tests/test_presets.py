"""A new study's first trials: the trainers' presets projected onto the study's space, and the best of an earlier
study (``--warm-start``); ``sampler: auto`` scales TPE's random start to the budget. Real SQLite and MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from conftest import FAST

from autolora.cli import main
from autolora.config import load_config
from autolora.tune.plan import auto_startup, make_plan, study_spec

PRESETS_ON = [*FAST, "--set", "study.presets=auto"]


def _trials(run: Path, name: str = "s") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{run}/optuna.db").trials


def test_a_new_study_starts_from_the_presets_projected_onto_its_space(tmp_path: Path, capsys: Any) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rc = main(["tune", "--trials", "3", "--out", "run", "--study-name", "s", "--mlflow-uri", uri, *PRESETS_ON])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = [ln for ln in out.splitlines() if ln.startswith("trial ")]
    assert "[preset diffusers-default]" in lines[0] and "[preset kohya-like]" in lines[1]
    assert "[preset" not in lines[2]
    first, second, third = _trials(tmp_path / "run")
    # tests/data/tiny.yaml: lr 1e-3..1e-2, steps 4..8, rank 2..8; the presets' lr 1e-4 and 500 steps are clipped.
    assert first.params["rank"] == 4 and first.params["learning_rate"] == pytest.approx(1e-3)
    assert second.params["rank"] == 8 and first.params["steps"] == 8
    assert "learning_rate 0.0001 -> 0.001" in first.user_attrs["autolora.preset"]
    assert (
        "rank 32 -> 8" in second.user_attrs["autolora.preset"]
        and "of the modules in common" in (second.user_attrs["autolora.preset"])
    )
    assert "autolora.preset" not in third.user_attrs
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("autolora/s").experiment_id])
    trial_runs = [r for r in runs if "optuna.trial_number" in r.data.tags]
    tagged = {r.data.tags["optuna.trial_number"]: r.data.tags.get("autolora.preset", "") for r in trial_runs}
    assert tagged["0"].startswith("preset diffusers-default") and tagged["2"] == ""
    rc = main(["show", "run"])
    assert rc == 0 and "[preset kohya-like (rank 32 -> 8" in capsys.readouterr().out
    rc = main(["tune", "--trials", "1", "--out", "run", "--study-name", "s", "--mlflow-uri", uri, *PRESETS_ON])
    capsys.readouterr()
    resumed = _trials(tmp_path / "run")
    assert rc == 0 and len(resumed) == 4 and "autolora.preset" not in resumed[3].user_attrs  # enqueued once


def test_warm_start_takes_an_earlier_studys_best_on_the_same_base(tmp_path: Path, capsys: Any) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rc = main(["tune", "--trials", "3", "--out", "first", "--study-name", "a", "--mlflow-uri", uri, *FAST])
    capsys.readouterr()
    assert rc == 0
    earlier = optuna.load_study(study_name="a", storage=f"sqlite:///{tmp_path}/first/optuna.db")
    done = sorted(
        (t for t in earlier.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: -t.values[0]
    )
    from autolora.core.feasible import best

    top = (best(earlier) or done)[0]  # the earlier study's best: confirmed and feasible when any is
    args = ["--out", "second", "--study-name", "b", "--mlflow-uri", uri, "--warm-start", "first", *FAST]
    rc = main(["tune", "--trials", "2", *args])
    out = capsys.readouterr().out
    assert rc == 0, out
    started = _trials(tmp_path / "second", "b")
    # its configuration, at the steps of its best rung (what worked, not the budget) as the space allows them
    assert {k: v for k, v in started[0].params.items() if k != "steps"} == {
        k: v for k, v in top.params.items() if k != "steps"
    }
    assert started[0].params["steps"] <= top.params["steps"]
    assert started[0].user_attrs["autolora.preset"].startswith(f"warm start: study 'a' trial {top.number}")
    assert f"[warm start: study 'a' trial {top.number}]" in out

    for source, message in (
        ("nowhere", "--warm-start nowhere: no such run folder, nor a study of that name"),
        ("first", "study 'a' trained builtin:tiny-sd, this study trains builtin:tiny-sdxl"),
    ):
        flags = [*FAST, "--base-model", "builtin:tiny-sdxl"] if source == "first" else FAST
        rc = main(["tune", "--trials", "1", "--out", "third", "--warm-start", source, *flags])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "third").exists()
    rc = main(["tune", "--trials", "1", "--out", "third", *FAST, "--set", "study.presets=kohya-lik"])
    err = capsys.readouterr().err
    assert rc == 2 and "study.presets:" in err and "kohya-like" in err, err


def test_auto_sampler_searches_at_random_up_to_forty_trials_then_models(tmp_path: Path) -> None:
    assert [auto_startup(n, 2) for n in (2, 4, 8, 20, 40, 41, 200)] == [3, 4, 8, 20, 40, 40, 40]
    assert auto_startup(10, 0) == 10 and auto_startup(60, 45) == 46
    overrides = [("model", "base_model", "builtin:tiny-sd"), ("study", "out", str(tmp_path / "r"))]
    spec = study_spec(make_plan(load_config(None, [*overrides, ("study", "trials", 20)])))
    assert (spec.sampler, spec.sampler_startup, spec.constant_liar, len(spec.first_trials)) == ("tpe", 20, False, 2)
    spec = study_spec(make_plan(load_config(None, [*overrides, ("study", "workers", 2)])))
    assert spec.constant_liar and spec.sampler_startup == 10
    spec = study_spec(make_plan(load_config(None, [*overrides, ("study", "sampler", "tpe")])))
    assert spec.sampler_startup is None and not spec.constant_liar
