"""Steps are a resource: a trial's result is its best rung; the adapter kept (and exported) is that rung's, and its
steps are reported as the best step. Real SQLite storage, the tiny pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
from conftest import FAST

from autolora.adapter import KeptAdapter
from autolora.cli import main
from autolora.config import load_config
from autolora.core.artifacts import images
from autolora.core.rundir import adapter_dir
from autolora.methods import kept_method, load_kept
from autolora.sampling import grid
from autolora.tune.plan import make_plan
from autolora.tune.session import Session


def test_a_trial_is_its_best_rung_and_keeps_that_rungs_adapter(tmp_path: Path, capsys: Any) -> None:
    # Maximising content_base (1: the LoRA changed nothing) makes early rungs the best: the later ones drift.
    objective = tmp_path / "still.yaml"
    objective.write_text(
        "clip: {model: auto, pretrained: null}\nobjectives:\n  - {name: score, terms: {content_base: 1.0}}\n"
    )
    args = ["--out", "run", "--study-name", "s", "--objective", str(objective), *FAST]
    args += ["--set", "study.pruner=none", "--set", "study.keep_top_k=3", "--set", "train.eval_every=2"]
    rc = main(["tune", "--trials", "3", *args, "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    out = capsys.readouterr().out
    assert rc == 0, out
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/run/optuna.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    for t in done:
        rungs = t.intermediate_values
        assert set(rungs) == set(range(2, t.params["steps"] + 1, 2))  # fixed rungs, the same for every trial
        top = max(rungs.values())
        assert t.value == top and t.user_attrs["best_step"] == max(s for s, v in rungs.items() if v == top)
    earlier = [t for t in done if t.user_attrs["best_step"] < t.params["steps"]]
    assert earlier, "no trial's best rung came before its last: the test shows nothing"
    assert f"[best at step {earlier[0].user_attrs['best_step']}]" in out

    config = load_config(tmp_path / "run" / "config.yaml", [])
    session = Session.load(make_plan(config))
    session.prepare(tmp_path / "run" / "cache")
    for t in earlier:
        kept = KeptAdapter.load(adapter_dir(tmp_path / "run", t.number))
        assert kept.info["params"]["steps"] == t.user_attrs["best_step"]
        assert kept.info["params"]["steps_budget"] == t.params["steps"]
        attached = load_kept(session.pipe, kept.configs, kept.state_dicts, "check")
        again = session.draw(session.eval_prompts(), list(config.eval.seeds))
        kept_method(kept.configs).detach(session.pipe, "check", attached)
        # The kept weights draw the best rung's samples again (the last rung's would differ).
        got = np.stack([np.asarray(im, dtype=np.int16) for im in again])
        want = np.stack([np.asarray(im, dtype=np.int16) for im in kept.samples])
        assert np.abs(got - want).max() <= 1
        final = images(t, tmp_path / "run", storage=study._storage)[f"samples_step_{t.params['steps']:05d}.png"]
        shown = grid(kept.samples, rows=kept.sample_rows)
        assert np.abs(np.asarray(final, dtype=np.int16) - np.asarray(shown, dtype=np.int16)).max() > 1
    session.release()


def test_successive_halving_prunes_at_the_rungs(tmp_path: Path, capsys: Any) -> None:
    args = ["--out", "sha", "--study-name", "h", "--set", "study.pruner=successive_halving", *FAST]
    rc = main(["tune", "--trials", "4", *args, "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    out = capsys.readouterr().out
    assert rc == 0, out
    study = optuna.load_study(study_name="h", storage=f"sqlite:///{tmp_path}/sha/optuna.db")
    from autolora.core.study import make_pruner

    assert isinstance(make_pruner("successive_halving", 2, False), optuna.pruners.SuccessiveHalvingPruner)
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.COMPLETE in states and len(study.trials) == 4
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "successive halving pruned nothing: the test shows nothing"
    for t in pruned:  # stopped at a rung before its budget, the rung it was compared at
        assert max(t.intermediate_values) < t.params["steps"] and max(t.intermediate_values) % 3 == 0
