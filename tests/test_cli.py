"""End to end, as a user runs it: ``autolora tune``, ``show`` and ``export`` on the tiny model,
with a real SQLite Optuna storage and a real MLflow store in a temp folder."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from conftest import DATA, FAST

from autolora.cli import main
from autolora.data import BUILTIN_PROMPTS


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def first_run(workdir: Path) -> dict[str, Any]:
    """One real study of 3 trials, shared by the tests below (they only read it, in order)."""
    old = os.getcwd()
    os.chdir(workdir)
    try:
        uri = f"sqlite:///{workdir}/mlflow.db"
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = main(["tune", "--trials", "3", "--out", "run", "--study-name", "s1", "--mlflow-uri", uri, *FAST])
        return {"rc": rc, "out": out.getvalue(), "uri": uri, "run": workdir / "run"}
    finally:
        os.chdir(old)


def test_tune_writes_the_study(first_run: dict[str, Any]) -> None:
    assert first_run["rc"] == 0, first_run["out"]
    run = first_run["run"]
    for name in ("config.yaml", "search_space.yaml", "objective.yaml", "optuna.db"):
        assert (run / name).is_file(), name
    lines = [ln for ln in first_run["out"].splitlines() if ln.startswith("trial ")]
    pattern = re.compile(
        r"^trial +\d+ (COMPLETE|PRUNED) +score=[-+][\d.]+ .*\| r=\d+ a=[\d.]+ lr=.* \| [\d.]+s( \[best at step \d+\])?$"
    )
    assert len(lines) == 3 and all(pattern.match(ln) for ln in lines), lines
    assert "mlflow ui --backend-store-uri sqlite:///" in first_run["out"]
    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{run}/optuna.db")
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    assert all("mlflow_run_id" in t.user_attrs and "timings" in t.user_attrs for t in study.trials)
    kept = sorted(p.name for p in (run / "adapters").iterdir())
    complete = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert kept == [f"trial_{n}" for n in complete]  # keep_top_k=3 keeps every complete trial here


def test_every_trial_is_an_mlflow_run(first_run: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(first_run["uri"])
    exp = client.get_experiment_by_name("autolora/s1")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(trials) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "summary.json" in parent_files and "inputs" in parent_files
    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{first_run['run']}/optuna.db")
    for t in study.trials:
        r = client.get_run(t.user_attrs["mlflow_run_id"])
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["optuna.trial_number"] == str(t.number)
        assert r.data.tags["optuna.state"] == t.state.name
        assert int(r.data.params["rank"]) == t.params["rank"]
        assert "eval.style_gain" in r.data.metrics
        # The method and its size, for every trial (pruned ones too).
        assert r.data.params["method"] == t.user_attrs["method"] == "lora"
        assert r.data.metrics["adapter.trainable_params"] == t.user_attrs["trainable_params"] > 0
        assert r.data.metrics["adapter.bytes"] == t.user_attrs["adapter_bytes"] > 4 * t.user_attrs["trainable_params"]
        history = client.get_metric_history(r.info.run_id, "eval.objective.score")
        assert [m.step for m in history] == sorted(t.intermediate_values)
        samples = client.list_artifacts(r.info.run_id, "samples")
        assert samples and samples[0].path.endswith(".png")
        if t.state == optuna.trial.TrialState.COMPLETE:
            losses = client.get_metric_history(r.info.run_id, "train.loss")
            assert len(losses) == t.params["steps"]


def test_export_reloads_to_the_trial_output(first_run: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from autolora.adapter import KeptAdapter
    from autolora.models.builtin import builtin_path
    from autolora.sampling import sample

    run = first_run["run"]
    rc, out, err = cli(capsys, "export", str(run), "--out", str(tmp_path / "exp"))
    assert rc == 0, err
    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{run}/optuna.db")
    best = study.best_trial.number
    files = sorted(p.name for p in (tmp_path / "exp").iterdir())
    assert files == sorted(
        ["autolora.json", f"s1-trial{best}.safetensors", f"s1-trial{best}.png", "pytorch_lora_weights.safetensors"]
    )
    kept = KeptAdapter.load(run / "adapters" / f"trial_{best}")
    expected = np.stack([np.asarray(im, dtype=np.int16) for im in kept.samples])
    prompts = [f"{p}, in sks style" for p in BUILTIN_PROMPTS]
    base_images = None
    for weight_name in ("pytorch_lora_weights.safetensors", f"s1-trial{best}.safetensors"):
        pipe = StableDiffusionPipeline.from_pretrained(builtin_path("builtin:tiny-sd"), safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        if base_images is None:
            base_images = sample(pipe, prompts, [0], steps=2, guidance_scale=7.5, resolution=32)
        pipe.load_lora_weights(str(tmp_path / "exp"), weight_name=weight_name)
        with torch.no_grad():
            images = sample(pipe, prompts, [0], steps=2, guidance_scale=7.5, resolution=32)
        got = np.stack([np.asarray(im, dtype=np.int16) for im in images])
        assert np.abs(got - expected).max() <= 1, weight_name
    base = np.stack([np.asarray(im, dtype=np.int16) for im in base_images])
    assert np.abs(base - expected).max() > 1  # the LoRA changes the output: the check above can fail


def test_show(first_run: dict[str, Any], capsys: Any) -> None:
    rc, out, _ = cli(capsys, "show", str(first_run["run"]))
    assert rc == 0
    assert "study 's1': 3 trials" in out and "best: trial" in out
    rc, out2, _ = cli(capsys, "show", "--storage", f"sqlite:///{first_run['run']}/optuna.db", "--study-name", "s1")
    assert rc == 0 and out2 == out
    rc, _, err = cli(capsys, "show", "--storage", f"sqlite:///{first_run['run']}/optuna.db", "--study-name", "s2")
    assert rc == 2 and "no study named 's2' (studies: s1)" in err


def test_resume_continues_and_refuses_another_space(first_run: dict[str, Any], capsys: Any) -> None:
    os.chdir(first_run["run"].parent)
    args = ["tune", "--out", "run", "--study-name", "s1", "--mlflow-uri", first_run["uri"]]
    rc, out, err = cli(capsys, *args, "--trials", "1", *FAST)
    assert rc == 0, err
    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{first_run['run']}/optuna.db")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert study.trials[3].params != study.trials[0].params  # the sampler does not replay trial 0
    fast_other = [a if a != str(DATA / "tiny.yaml") else "quick" for a in FAST]
    rc, out, err = cli(capsys, *args, "--trials", "1", *fast_other)
    assert rc == 2
    assert "different search space" in err and len(err.strip().splitlines()) == 1
    assert len(optuna.load_study(study_name="s1", storage=f"sqlite:///{first_run['run']}/optuna.db").trials) == 4


def test_export_errors(first_run: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    run = first_run["run"]
    rc, _, err = cli(capsys, "export", str(tmp_path), "--out", str(tmp_path / "x"))
    assert rc == 2 and "not an autolora run folder" in err
    rc, _, err = cli(capsys, "export", str(run), "--trial", "99", "--out", str(tmp_path / "x"))
    assert rc == 2 and "--trial 99" in err
    assert not (tmp_path / "x").exists()


def test_sdxl_study_with_text_encoders_exports_what_it_scored(tmp_path: Path, capsys: Any) -> None:
    """SDXL end to end: UNet + both text encoders trained, kohya file in SGM names, both files reload."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    from autolora.adapter import KeptAdapter
    from autolora.models.builtin import builtin_path
    from autolora.sampling import sample

    space = tmp_path / "xl.yaml"
    space.write_text(
        "params:\n  rank: 4\n  steps: 4\n  learning_rate: 0.05\n  init: gaussian\n  text_encoder: true\n"
        "  target_layers: [self_attn, cross_attn, ff, conv]\n"
    )
    args = ["tune", "--trials", "1", "--out", "xl", "--study-name", "xl", "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db",
            *FAST, "--search-space", str(space), "--base-model", "builtin:tiny-sdxl"]  # fmt: skip
    rc, out, err = cli(capsys, *args)
    assert rc == 0, err
    rc, out, err = cli(capsys, "export", "xl", "--out", "exp")
    assert rc == 0, err
    kept = KeptAdapter.load(tmp_path / "xl" / "adapters" / "trial_0")
    assert set(kept.state_dicts) == {"unet", "text_encoder", "text_encoder_2"}
    from safetensors import safe_open

    with safe_open(str(tmp_path / "exp" / "xl-trial0.safetensors"), "pt") as f:
        keys = list(f.keys())  # noqa: SIM118
    assert any(k.startswith("lora_unet_input_blocks_") for k in keys)
    assert any(k.startswith("lora_te1_") for k in keys) and any(k.startswith("lora_te2_") for k in keys)
    expected = np.stack([np.asarray(im, dtype=np.int16) for im in kept.samples])
    prompts = [f"{p}, in sks style" for p in BUILTIN_PROMPTS]
    for weight_name in ("pytorch_lora_weights.safetensors", "xl-trial0.safetensors"):
        pipe = StableDiffusionXLPipeline.from_pretrained(builtin_path("builtin:tiny-sdxl"))
        pipe.set_progress_bar_config(disable=True)
        base = np.stack([np.asarray(im, dtype=np.int16) for im in sample(pipe, prompts, [0], steps=2, resolution=32,
                                                                         guidance_scale=7.5)])  # fmt: skip
        assert np.abs(base - expected).max() > 1  # the trained LoRA shows: the comparison below can fail
        pipe.load_lora_weights(str(tmp_path / "exp"), weight_name=weight_name)
        with torch.no_grad():
            images = sample(pipe, prompts, [0], steps=2, guidance_scale=7.5, resolution=32)
        got = np.stack([np.asarray(im, dtype=np.int16) for im in images])
        assert np.abs(got - expected).max() <= 1, weight_name
