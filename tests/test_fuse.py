"""``autolora fuse`` end to end on the tiny model: fuse -> show -> export -> reload, with real SQLite Optuna and
MLflow stores in temp folders, and every bad LoRA file refused in one line with nothing created.

Two seeded LoRAs (non-zero lora_B) are made as a user would have them: ``ink`` (UNet attention + text encoder,
diffusers file) and ``water`` (attention + resnet convs, kohya file); each is scored against its own style folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from conftest import fuse_args, fusion_inputs, generate
from safetensors.torch import save_file

from autolora.cli import main

FAST = [
    "--base-model", "builtin:tiny-sd",
    "--set", "eval.inference_steps=2",
    "--set", "eval.seeds=[0]",
    "--no-progress",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tiny_sd: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return fusion_inputs(tiny_sd, tmp_path_factory.mktemp("fuse"))


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def run(work: dict[str, Any]) -> dict[str, Any]:
    """One block-granularity fusion run of 2 trials plus its linear baseline and the training-free baselines' fixed
    trials, shared by the tests below."""
    import contextlib
    import io

    out = io.StringIO()
    run_dir = work["root"] / "run"
    with contextlib.redirect_stdout(out):
        args = [*fuse_args(work, run_dir), "--granularity", "block", "--trials", "2", "--study-name", "mix"]
        rc = main([*args, "--set", "fuse.baselines=[klora,block-prior]"])
    return {"rc": rc, "out": out.getvalue(), "dir": run_dir}


def _studies(run_dir: Path) -> dict[str, optuna.Study]:
    storage = f"sqlite:///{run_dir}/optuna.db"
    return {label: optuna.load_study(study_name=name, storage=storage) for label, name in _NAMES.items()}


_NAMES = {"dlf": "mix", "linear": "mix-linear", "fixed": "mix-baselines"}


def test_fuse_runs_dlf_and_linear_side_by_side(run: dict[str, Any]) -> None:
    assert run["rc"] == 0, run["out"]
    lines = run["out"].splitlines()
    assert len([ln for ln in lines if ln.startswith("dlf    trial")]) == 2
    assert len([ln for ln in lines if ln.startswith("linear trial")]) == 2
    studies = _studies(run["dir"])
    dlf, linear = studies["dlf"].trials, studies["linear"].trials
    # DLF: the same 2 trials run, and linear's best copied in (unless that is linear's trial 0, plain stacking,
    # which DLF's own trial 0 already is)
    n_dlf = 2 + (studies["linear"].best_trial.number != 0)
    assert any(ln.startswith(f"dlf     mix: {n_dlf} complete, best score=") for ln in lines), run["out"]
    assert any(ln.startswith("linear  mix-linear: 2 complete, best score=") for ln in lines)
    for name in ("config.yaml", "objective.yaml", "optuna.db", "fusion_summary.json", "best_coefficients.png"):
        assert (run["dir"] / name).is_file(), name
    assert len(dlf) == n_dlf and len(linear) == 2
    assert set(dlf[0].params.values()) == {1.0}, "trial 0 is plain stacking"
    assert {k.split(".", 1)[0] for k in dlf[-1].params} == {"ink", "water"} and "ink.text_encoder" in dlf[-1].params
    assert sorted(linear[1].params) == ["ink.all", "water.all"]
    gains = dlf[0].user_attrs
    assert gains["metric.style_gain.ink"] != gains["metric.style_gain.water"]
    assert gains["metric.style_gain_min"] == min(gains["metric.style_gain.ink"], gains["metric.style_gain.water"])


def test_every_trial_is_an_mlflow_run_and_the_parent_compares(run: dict[str, Any], work: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(work["uri"])
    exp = client.get_experiment_by_name("autolora/mix")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    n_fixed = len(_studies(run["dir"])["fixed"].trials)
    assert len(parents) == 1 and len(trials) == 4 + n_fixed  # DLF's copied start is linear's run
    sampled = _studies(run["dir"])["dlf"].trials[-1].number  # after the copy of linear's best, if there is one
    assert sorted(r.info.run_name for r in trials if not r.info.run_name.startswith("fixed-")) == [
        "dlf-0",
        f"dlf-{sampled}",
        "linear-0",
        "linear-1",
    ]
    for r in trials:
        assert "eval.style_gain_min" in r.data.metrics and "eval.style_gain.water" in r.data.metrics
        assert any(k.startswith("ink.") for k in r.data.params) or r.data.params.get("baseline")
        assert [a.path for a in client.list_artifacts(r.info.run_id, "samples")] == ["samples/grid.png"]
    parent = parents[0]
    assert {"dlf.best.score", "linear.best.score"} <= set(parent.data.metrics)
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"fusion_summary.json", "summary.json", "plots"} <= files
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/best_coefficients.png" in plots


def test_show_prints_both_studies(run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _cli(capsys, "show", str(run["dir"]))
    assert rc == 0
    n_dlf = len(_studies(run["dir"])["dlf"].trials)
    assert f"[dlf] study 'mix': {n_dlf} trials" in out and "[linear] study 'mix-linear': 2 trials" in out
    assert "[fixed] study 'mix-baselines'" in out and "klora:ink: score=" in out
    assert f"dlf     mix: {n_dlf} complete" in out and "linear  mix-linear: 2 complete" in out


def _load_pipe() -> Any:
    from autolora.models.loading import load_pipeline, resolve_model

    return load_pipeline(resolve_model("builtin:tiny-sd"), "cpu", torch.float32)


def test_export_reloads_the_in_memory_fusion(
    run: dict[str, Any], work: dict[str, Any], tiny_sd: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from autolora.fuse import load_loras, unload
    from autolora.fuse.space import Fusion

    out = work["root"] / "export"
    n = str(_studies(run["dir"])["dlf"].trials[-1].number)  # a sampled DLF trial (not stacking, not a copy)
    rc, printed, err = _cli(capsys, "export", str(run["dir"]), "--out", str(out), "--trial", n, "--rank", "1")
    assert rc == 0, err
    assert "rank 1: largest relative error over the modules" in printed
    for name in ("pytorch_lora_weights.safetensors", f"mix-trial{n}.safetensors", "coefficients.json", "rank1"):
        assert (out / name).exists(), name
    doc = json.loads((out / "coefficients.json").read_text())
    assert doc["granularity"] == "block" and set(doc["coefficients"]) == {"ink", "water"}

    fa = load_loras(tiny_sd, [work["files"]["ink"], work["files"]["water"]], ["ink", "water"])
    try:
        Fusion.from_dict(doc).apply(fa)
        expected = generate(tiny_sd)
        fa.set_coefficients({"ink": {"all": 0.0}, "water": {"all": 0.0}})
        plain = generate(tiny_sd)
    finally:
        unload(fa)
    assert np.abs(expected - plain).max() > 1e-2, "the fusion does not change the image; the test proves nothing"
    fresh = _load_pipe()
    for kind, path in (
        ("diffusers", out / "pytorch_lora_weights.safetensors"),
        ("kohya", out / f"mix-trial{n}.safetensors"),
    ):
        fresh.load_lora_weights(str(path), adapter_name=kind)
        fresh.set_adapters([kind])
        got = generate(fresh)
        assert np.allclose(got, expected, atol=1e-5), f"{kind}: max diff {np.abs(got - expected).max()}"
        fresh.delete_adapters([kind])


def test_fuse_blends_a_lycoris_file_as_the_update_it_applies(
    work: dict[str, Any], tiny_sd: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A LoHa file as A1111/ComfyUI load it is loaded as its exact LoRA: at coefficient 1 the pipeline draws what
    peft's LoHa draws; fused beside a LoRA, every probe of the block prior reads it, and the fusion exports."""
    from test_methods import CASES, _attached, _kept, _spec

    from autolora.adapter import detach
    from autolora.formats.export import export_all
    from autolora.fuse import load_loras, unload

    spec = _spec(tiny_sd, text_encoder=True, target_layers=["self_attn", "cross_attn"], **CASES["loha"])
    try:
        _attached(tiny_sd, spec, "hada", seed=3)
        expected = generate(tiny_sd)
        kept = _kept(tiny_sd, spec, "hada")
    finally:
        detach(tiny_sd.unet, "hada")
        detach(tiny_sd.text_encoder, "hada")
    assert np.abs(expected - generate(tiny_sd)).max() > 1e-2, "the LoHa does not change the image"
    path = export_all(kept, tmp_path / "files", "hada")["kohya"]
    fa = load_loras(tiny_sd, [path], ["hada"])
    try:
        got = generate(tiny_sd)
    finally:
        unload(fa)
    assert np.allclose(got, expected, atol=1e-4), f"max diff {np.abs(got - expected).max()}"

    run_dir = tmp_path / "run"
    args = [f"water={path}" if a == str(work["files"]["water"]) else a for a in fuse_args(work, run_dir)]
    rc, out, err = _cli(capsys, *args, "--trials", "1", "--set", "fuse.baselines=[block-prior]")
    assert rc == 0, err
    assert "water: style lives in" in out or "water: the LoRA shows no style" in out
    rc, _, err = _cli(capsys, "export", str(run_dir), "--out", str(tmp_path / "export"))
    assert rc == 0, err
    assert (tmp_path / "export" / "pytorch_lora_weights.safetensors").is_file()


def test_global_study_is_diffusers_linear_fusion(run: dict[str, Any], work: dict[str, Any]) -> None:
    """The linear study's logged samples are what diffusers' own set_adapters gives with the same weights."""
    import io

    from mlflow.tracking import MlflowClient
    from PIL import Image

    from autolora.sampling import grid, sample

    trial = _studies(run["dir"])["linear"].trials[1]
    client = MlflowClient(work["uri"])
    local = client.download_artifacts(trial.user_attrs["mlflow_run_id"], "samples/grid.png", str(work["root"]))
    logged = np.asarray(Image.open(io.BytesIO(Path(local).read_bytes())).convert("RGB"), dtype=np.int16)

    pipe = _load_pipe()
    for name in ("ink", "water"):
        pipe.load_lora_weights(str(work["files"][name]), adapter_name=name)
    pipe.set_adapters(["ink", "water"], [trial.params["ink.all"], trial.params["water.all"]])
    prompts = [f"{p}, in sks style" for p in ("a red circle", "a blue square")]
    images = sample(pipe, prompts, [0], steps=2, guidance_scale=7.5, resolution=32)
    theirs = np.asarray(grid(images, rows=2), dtype=np.int16)
    assert np.abs(theirs - logged).max() <= 1


def test_two_phase_pareto_run_and_export(work: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = work["root"] / "two"
    args = [*fuse_args(work, run_dir), "--granularity", "global", "--schedule", "two-phase", "--no-baseline"]
    rc, out, err = _cli(capsys, *args, "--objective", "fuse-pareto", "--trials", "2", "--study-name", "two")
    assert rc == 0, err
    assert "sampler tpe" in out and "Pareto set of" in out and "hypervolume" in out
    trial = optuna.load_study(study_name="two", storage=f"sqlite:///{run_dir}/optuna.db").trials[1]
    assert "switch_at" in trial.params and "early.ink.all" in trial.params and "late.water.all" in trial.params
    # --force: the tiny random LoRAs may break the content constraint; what is tested is the two-phase export.
    rc, out, err = _cli(
        capsys, "export", str(run_dir), "--out", str(work["root"] / "two-export"), "--trial", "1", "--force"
    )
    assert rc == 0, err
    for phase in ("early", "late"):
        assert (work["root"] / "two-export" / phase / "pytorch_lora_weights.safetensors").is_file()
    doc = json.loads((work["root"] / "two-export" / "coefficients.json").read_text())
    assert doc["switch_at"] == trial.params["switch_at"]


def test_hypervolume() -> None:
    from autolora.fuse.summary import _hypervolume

    assert _hypervolume(np.array([[-1.0, -1.0]]), np.array([0.0, 0.0])) == pytest.approx(1.0)
    assert _hypervolume(np.array([[-2.0, -1.0], [-1.0, -2.0]]), np.array([0.0, 0.0])) == pytest.approx(3.0)


def _garbage(d: Path) -> str:
    (d / "x.safetensors").write_bytes(b"garbage" * 9)
    return str(d / "x.safetensors")


def _lora_file(path: Path, attn: str, width: int) -> str:
    """One LoRA pair on ``attn`` of the first transformer, input ``width``: 768 on attn2 is an SD 1.x LoRA (refused
    from the header); 999 on attn1 passes the header checks but fits no module (refused after the pipeline loads,
    still before anything is created)."""
    key = f"unet.down_blocks.0.attentions.0.transformer_blocks.0.{attn}"
    save_file({f"{key}.lora_A.weight": torch.zeros(4, width), f"{key}.lora_B.weight": torch.zeros(32, 4)}, str(path))
    return str(path)


BAD = {
    "missing file": (lambda d: ["--lora", str(d / "nope.safetensors")], "not found"),
    "garbage file": (lambda d: ["--lora", _garbage(d)], "not a readable safetensors file"),
    "other architecture": (
        lambda d: ["--lora", _lora_file(d / "w.safetensors", "attn2.to_k", 768)],
        "made for sd1 (cross-attention width 768)",
    ),
    "other shapes": (
        lambda d: ["--lora", _lora_file(d / "s.safetensors", "attn1.to_q", 999)],
        "diffusers could not load it into this model",
    ),
    "style of no LoRA": (lambda d: ["--style-images-for", f"inc={d}"], "names no LoRA (did you mean 'ink'?)"),
    "bad granularity": (lambda d: ["--granularity", "columns"], "fuse.granularity: expected global|block|layer"),
    "tune recipe": (lambda d: ["--objective", "balanced"], "a recipe for autolora tune"),
    "cmaes with pareto": (lambda d: ["--objective", "fuse-pareto", "--sampler", "cmaes"], "single-objective only"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_nothing_created(
    case: str, work: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = BAD[case]
    extra = make(tmp_path)
    before = set(tmp_path.rglob("*"))
    args = ["fuse", "--lora", f"ink={work['files']['ink']}", *extra, "--out", str(tmp_path / "run")]
    rc, _, err = _cli(capsys, *args, "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db", *FAST)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autolora: error: "), err
    assert message in lines[0]
    assert set(tmp_path.rglob("*")) == before  # no run folder, storage or MLflow store


def test_fusion_constraints_and_confirmation(work: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Fuse records the recipe's constraints (an infeasible blend is never best) and confirms both studies' top
    blends on other seeds; the summary and export take the confirmed best."""
    base = "scorer: fusion\nclip: {model: auto, pretrained: null}\n"
    base += "objectives:\n  - {name: score, terms: {style_gain_min: 1}}\n"
    never = work["root"] / "never.yaml"
    never.write_text(base + "constraints:\n  - {name: content, metric: content_text_ratio, min: 2.0}\n")
    run_dir = work["root"] / "never"
    args = [*fuse_args(work, run_dir), "--granularity", "global", "--trials", "2", "--study-name", "nv"]
    rc, out, err = _cli(capsys, *args, "--objective", str(never))
    assert rc == 0, err
    assert out.count("[infeasible: content_text_ratio") == 2, out  # global: DLF is linear fusion, no baseline
    assert "no feasible trial: all 2 complete trials" in out and "Export anyway (not advised)" in out
    rc, _, err = _cli(capsys, "export", str(run_dir), "--out", str(work["root"] / "nv-export"))
    assert rc == 2 and "no feasible trial" in err and "--force" in err
    assert not (work["root"] / "nv-export").exists()

    fine = work["root"] / "fine.yaml"
    fine.write_text(base + "constraints:\n  - {name: sane, metric: content_text_ratio, max: 100}\n")
    run_dir = work["root"] / "confirmed"
    args = [*fuse_args(work, run_dir), "--granularity", "block", "--trials", "3", "--study-name", "cf"]
    args += ["--objective", str(fine), "--set", "study.confirm_top_k=2", "--set", "eval.confirm_seeds=[3,4,5]"]
    rc, out, err = _cli(capsys, *args)
    assert rc == 0, err
    # The starting points (stacking; DLF: linear's copied top 2) are confirmed beside the top 2, once each.
    assert re.search(r"dlf: confirming the top 2 blends( and [1-3] starting points?)? on 3 other seeds", out), out
    assert re.search(r"linear: confirming the top 2 blends( and 1 starting point)? on 3 other seeds", out), out
    studies = {label: optuna.load_study(study_name=n, storage=f"sqlite:///{run_dir}/optuna.db")
               for label, n in (("dlf", "cf"), ("linear", "cf-linear"))}  # fmt: skip
    from autolora.core.feasible import candidates, confirmation
    from autolora.fuse.warm import starts

    for label, study in studies.items():
        conf = confirmation(study)
        want = {t.number for t in candidates(study, 2)} | {t.number for t in starts(study)}
        assert conf is not None and set(conf.trials) == want and conf.best is not None, label
        assert all(r.style_se is not None for r in conf.trials.values())
        assert "best score=" in out and ", confirmed " in out
    summary = json.loads((run_dir / "fusion_summary.json").read_text())
    dlf = confirmation(studies["dlf"])
    assert dlf is not None and summary["dlf"]["best_trial"] == dlf.best
    assert summary["dlf"]["confirmed_value"] == pytest.approx(dlf.trials[dlf.best].values[0])
    rc, printed, err = _cli(capsys, "export", str(run_dir), "--out", str(work["root"] / "cf-export"), "--force")
    assert rc == 0, err
    assert f"cf-trial{dlf.best}" in printed
