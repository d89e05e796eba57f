"""SD 3.x and Flux.1 (DiT transformers): layer groups, flow-matching studies, exports that clients load.

The tiny pipelines are built from config with seeded random weights (``builtin:tiny-sd3``, ``builtin:tiny-flux``:
the real pipeline, transformer, scheduler and tokenizer classes). Round trips compare images, as in
``test_export.py``: LoRA weights get seeded random values so that the adapter visibly changes the picture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import DATA
from conftest import generate as _generate
from conftest import randomize_lora as _randomize
from peft import LoraConfig
from safetensors import safe_open

from autolora.adapter import KeptAdapter, adapter_state_dict, attach, config_to_dict, detach
from autolora.cli import main
from autolora.errors import UserError
from autolora.formats.export import export_all
from autolora.models.builtin import builtin_path
from autolora.models.layers import lora_candidates, select_modules

DIT_FAST = [
    "--search-space", str(DATA / "tiny-dit.yaml"),
    "--set", "eval.inference_steps=2",
    "--set", "eval.seeds=[0]",
    "--set", "study.confirm_top_k=0",
    "--set", "train.eval_every=3",
    "--set", "data.resolution=32",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _load(folder: Path) -> Any:
    import diffusers

    from autolora.models.loading import resolve_model

    ref = resolve_model(str(folder))
    pipe = getattr(diffusers, ref.pipeline_class).from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def flux_folder(quiet: None) -> Path:
    return builtin_path("builtin:tiny-flux")


@pytest.fixture(scope="module")
def sd3_folder(quiet: None) -> Path:
    return builtin_path("builtin:tiny-sd3")


def _trained(pipe: Any, config: LoraConfig, arch: str, seed: int) -> tuple[KeptAdapter, np.ndarray]:
    name = f"test{seed}"
    try:
        attach(pipe.transformer, config, name)
        _randomize(pipe.transformer, seed)
        image = _generate(pipe)
        adapter = KeptAdapter(
            configs={"transformer": config_to_dict(config)},
            state_dicts={"transformer": adapter_state_dict(pipe.transformer, name)},
            base={"source": f"builtin:tiny-{arch}", "arch": arch, "resolution": 32, "prediction_type": "flow"},
            info={"study": "fox", "trial": seed},
        )
    finally:
        detach(pipe.transformer, name)
    return adapter, image


def _reloaded(folder: Path, file: Path) -> np.ndarray:
    pipe = _load(folder)
    pipe.load_lora_weights(str(file.parent), weight_name=file.name)
    return _generate(pipe)


def _every_module(pipe: Any) -> list[str]:
    return lora_candidates(pipe.transformer)


def test_dit_layer_groups_select_the_modules_users_name() -> None:
    names = [
        "transformer_blocks.0.attn.to_q",
        "transformer_blocks.0.attn.add_k_proj",
        "transformer_blocks.0.attn.to_add_out",
        "transformer_blocks.1.ff.net.2",
        "transformer_blocks.1.ff_context.net.0.proj",
        "transformer_blocks.1.norm1.linear",
        "transformer_blocks.2.attn2.to_v",
        "single_transformer_blocks.0.attn.to_k",
        "single_transformer_blocks.0.proj_mlp",
        "single_transformer_blocks.5.proj_out",
    ]
    assert select_modules(names, ["double"], ["attn"]) == [
        "transformer_blocks.0.attn.to_q",
        "transformer_blocks.2.attn2.to_v",
    ]
    assert select_modules(names, ["joint.0"], ["context_attn"], ["k", "out"]) == [
        "transformer_blocks.0.attn.add_k_proj",
        "transformer_blocks.0.attn.to_add_out",
    ]
    assert select_modules(names, ["double.1-2", "single.0-4"], ["ff", "context_ff", "norm"]) == [
        "transformer_blocks.1.ff.net.2",
        "transformer_blocks.1.ff_context.net.0.proj",
        "transformer_blocks.1.norm1.linear",
        "single_transformer_blocks.0.proj_mlp",
    ]
    assert select_modules(names, ["down", "mid", "up"], ["self_attn", "cross_attn"]) == []


def test_flux_diffusers_file_reloads_and_kohya_file_matches_comfyui_fused_layers(
    tmp_path: Path, flux_folder: Path
) -> None:
    """The diffusers file reproduces the picture; the kohya file, applied the way ComfyUI applies it to Flux's
    fused BFL layers (``W += up @ down * alpha / rank``), gives the same weights as the peft adapter merged."""
    pipe = _load(flux_folder)
    plain = _generate(pipe)
    modules = _every_module(pipe)
    some = [m for m in modules if m.endswith(("to_k", "proj_mlp"))]
    config = LoraConfig(
        r=4,
        lora_alpha=2,
        target_modules=modules,
        rank_pattern={m: 2 for m in some},
        alpha_pattern={m: 3.0 for m in some},
        init_lora_weights="gaussian",
    )
    adapter, image = _trained(pipe, config, "flux", 1)
    assert np.abs(image - plain).max() > 1e-2
    paths = export_all(adapter, tmp_path / "out", "fox-flux")
    got = _reloaded(flux_folder, paths["diffusers"])
    assert np.allclose(got, image, atol=1e-5), np.abs(got - image).max()

    with safe_open(str(paths["kohya"]), "pt") as f:
        kohya = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = f.metadata()
    assert meta["ss_network_module"] == "networks.lora_flux" and meta["ss_base_model_version"] == "flux1"
    assert all(k.startswith(("lora_unet_double_blocks_", "lora_unet_single_blocks_")) for k in kohya)
    # the merged model, by peft
    attach(pipe.transformer, config, "merge")
    peft_state = adapter.state_dicts["transformer"]
    from peft.utils import set_peft_model_state_dict

    set_peft_model_state_dict(pipe.transformer, peft_state, adapter_name="merge")
    base = {n: m.weight.detach().clone() for n, m in pipe.transformer.named_modules() if hasattr(m, "base_layer")}
    merged = {}
    for n, m in pipe.transformer.named_modules():
        if hasattr(m, "get_delta_weight") and "merge" in getattr(m, "lora_A", {}):
            merged[n] = base[n] + m.get_delta_weight("merge")
    detach(pipe.transformer, "merge")

    def fused(prefix: str, parts: list[str], weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([weights[f"{prefix}.{p}"] for p in parts])

    def comfy(name: str, w: torch.Tensor) -> torch.Tensor:
        down, up = kohya[f"{name}.lora_down.weight"], kohya[f"{name}.lora_up.weight"]
        return w + up @ down * (kohya[f"{name}.alpha"].item() / down.shape[0])

    layers = {
        "double_blocks.{i}.img_attn.qkv": ("transformer_blocks.{i}.attn", ["to_q", "to_k", "to_v"]),
        "double_blocks.{i}.txt_attn.qkv": ("transformer_blocks.{i}.attn", ["add_q_proj", "add_k_proj", "add_v_proj"]),
        "double_blocks.{i}.img_attn.proj": ("transformer_blocks.{i}.attn", ["to_out.0"]),
        "double_blocks.{i}.txt_mod.lin": ("transformer_blocks.{i}", ["norm1_context.linear"]),
        "single_blocks.{i}.linear1": ("single_transformer_blocks.{i}", ["attn.to_q", "attn.to_k", "attn.to_v",
                                                                        "proj_mlp"]),
        "single_blocks.{i}.linear2": ("single_transformer_blocks.{i}", ["proj_out"]),
    }  # fmt: skip
    checked = 0
    for i in range(2):
        for bfl, (prefix, parts) in layers.items():
            name, pre = "lora_unet_" + bfl.format(i=i).replace(".", "_"), prefix.format(i=i)
            want = fused(pre, parts, merged)
            got_w = comfy(name, fused(pre, parts, base))
            assert torch.allclose(got_w, want, atol=1e-6), (name, (got_w - want).abs().max())
            checked += 1
    assert checked == 12


def test_flux_kohya_file_reloads_in_diffusers(tmp_path: Path, flux_folder: Path) -> None:
    """diffusers' kohya Flux loader splits the fused layers again (its single-block split is hard-wired to
    Flux.1's 3072 width, so this tiny model's LoRA stays in the double blocks)."""
    pipe = _load(flux_folder)
    modules = [m for m in _every_module(pipe) if m.startswith("transformer_blocks.")]
    config = LoraConfig(r=4, lora_alpha=8, target_modules=modules, init_lora_weights="gaussian")
    adapter, image = _trained(pipe, config, "flux", 2)
    paths = export_all(adapter, tmp_path / "out", "fox-double")
    got = _reloaded(flux_folder, paths["kohya"])
    assert np.allclose(got, image, atol=1e-5), np.abs(got - image).max()


def test_sd3_diffusers_file_reloads_and_kohya_is_refused(tmp_path: Path, sd3_folder: Path) -> None:
    pipe = _load(sd3_folder)
    plain = _generate(pipe)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=_every_module(pipe), init_lora_weights="gaussian")
    adapter, image = _trained(pipe, config, "sd3", 3)
    assert np.abs(image - plain).max() > 1e-2
    with pytest.raises(UserError, match="kohya file for a sd3 adapter"):
        export_all(adapter, tmp_path / "refused", "fox")
    assert not (tmp_path / "refused").exists()
    paths = export_all(adapter, tmp_path / "out", "fox", kohya=False)
    got = _reloaded(sd3_folder, paths["diffusers"])
    assert np.allclose(got, image, atol=1e-5), np.abs(got - image).max()


@pytest.mark.parametrize("arch", ["flux", "sd3"])
def test_dit_study_exports_files_that_reproduce_the_trials_samples(
    arch: str, in_tmp_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """tune on the tiny transformer pipeline, export, reload the diffusers file into a fresh pipeline and draw
    the evaluation samples again: the kept trial's pictures come back."""
    from autolora.sampling import sample

    rc = main(["tune", "--trials", "2", "--out", "run", "--base-model", f"builtin:tiny-{arch}", *DIT_FAST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"({arch}, cpu, 32px)" in out and out.count("COMPLETE") == 2
    rc = main(["export", "run", "--out", "exp", "--name", "fox"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert (Path("exp") / "pytorch_lora_weights.safetensors").is_file() and (Path("exp") / "fox.png").is_file()
    assert (Path("exp") / "fox.safetensors").is_file() == (arch == "flux")
    import json

    exported = json.loads((Path("exp") / "autolora.json").read_text())["trial"]
    adapter = KeptAdapter.load(Path("run/adapters") / f"trial_{exported}")
    assert set(adapter.state_dicts) == {"transformer"}
    pipe = _load(builtin_path(f"builtin:tiny-{arch}"))
    pipe.load_lora_weights("exp", weight_name="pytorch_lora_weights.safetensors")
    from autolora.data import BUILTIN_PROMPTS

    prompts = [f"{p}, in sks style" for p in BUILTIN_PROMPTS]
    import yaml

    guidance = yaml.safe_load(Path("run/config.yaml").read_text())["eval"]["guidance_scale"]
    assert guidance == {"flux": 3.5, "sd3": 7.0}[arch]  # the family's default, resolved into the run's config
    again = sample(pipe, prompts, [0], steps=2, guidance_scale=guidance, resolution=32)
    for a, b in zip(again, adapter.samples, strict=True):
        diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()
        assert diff <= 2, diff


def _space(tmp_path: Path, body: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        (
            "tiny-flux",
            "params:\n  steps: 4\n  target_blocks: [down, up]\n  target_layers: [self_attn]\n",
            "selects any module of this flux model's transformer",
        ),
        ("tiny-flux", "params:\n  steps: 4\n  min_snr_gamma: 5.0\n  target_blocks: [double]\n", "min_snr_gamma"),
        ("tiny-sd3", "params:\n  steps: 4\n  text_encoder: true\n  target_blocks: [joint]\n", "text_encoder"),
        ("tiny-sd", "params:\n  steps: 4\n  weighting_scheme: logit_normal\n", "weighting_scheme"),
        ("tiny-flux", "params:\n  target_blocks: [single.3-1]\n", "target_blocks"),
    ],
)
def test_spaces_that_do_not_fit_the_family_are_refused_before_anything_runs(
    model: str, body: str, message: str, tmp_path: Path, in_tmp_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["tune", "--trials", "1", "--out", "run", "--base-model", f"builtin:{model}", "--search-space",
               _space(tmp_path, body), "--no-progress"])  # fmt: skip
    _, err = capsys.readouterr()
    assert rc == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not Path("run").exists()


def test_default_space_of_a_flux_model_is_the_flux_space(in_tmp_path: None) -> None:
    from autolora.config import Config
    from autolora.tune.plan import make_plan

    config = Config()
    config.model.base_model = "builtin:tiny-flux"
    config.data.resolution = 32
    plan = make_plan(config)
    assert plan.space.name == "flux"
    assert plan.config.eval.guidance_scale == 3.5  # Flux dev's guidance, not SD's 7.5
    blocks = {b for m in plan.compiled.candidates for b in [m.split(".")[0]]}
    assert blocks == {"transformer_blocks", "single_transformer_blocks"}


def test_gpu_check_runs_its_code_on_the_tiny_models(tmp_path: Path) -> None:
    """The GPU check only runs when a task has a GPU: its code path is kept alive on the CPU (``--tiny``)."""
    import json
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "benchmarks" / "gpu_check.py"
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--tiny", "--steps", "4", "--models", "flux,sd15", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    for name in ("flux", "sd15"):
        r = report["models"][name]
        assert r["autolora_steps_per_s"] > 0 and r["bare_steps_per_s"] > 0 and r["images_per_s"] > 0
        assert r["grad_checkpointing"] == "pass" and r["fp16_grad_scaler"].startswith("skipped")
    methods = report["models"]["sd15"]["methods"]  # every adapter method trained as a trial trains it
    assert set(methods) == {"lora", "loha", "lokr", "textual_inversion", "pivotal", "dreambooth"}
    for name, m in methods.items():
        assert "error" not in m and m["finite"] and m["s_per_step"] > 0 and m["trainable_params"] > 0, (name, m)
    assert "methods" not in report["models"]["flux"]


def test_fuse_two_flux_loras_over_transformer_blocks_and_export(
    tmp_path: Path, flux_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fuse`` on the tiny Flux pipeline: block keys are transformer blocks, layer keys their layer kinds; the
    exported fused LoRA (diffusers file) reloads into a fresh pipeline as the in-memory fusion."""
    import json

    from autolora.fuse import load_loras, unload
    from autolora.fuse.space import Fusion

    pipe = _load(flux_folder)
    modules = _every_module(pipe)
    attn = [m for m in modules if m.startswith("transformer_blocks.") and ".attn." in m]
    single = [m for m in modules if m.startswith("single_transformer_blocks.")]
    files = {}
    for i, (name, targets) in enumerate((("ink", attn), ("water", single))):
        adapter, _ = _trained(pipe, LoraConfig(r=4, lora_alpha=4, target_modules=targets), "flux", 10 + i)
        files[name] = export_all(adapter, tmp_path / name, name, kohya=False)["diffusers"]
    fa = load_loras(pipe, [files["ink"], files["water"]], ["ink", "water"])
    try:
        assert fa.group_keys("block") == ["double.0", "double.1", "single.0", "single.1"]
        assert "double.0.attn" in fa.group_keys("layer") and "single.1.ff" in fa.group_keys("layer")
    finally:
        unload(fa)
    run = tmp_path / "run"
    args = ["fuse", "--lora", f"ink={files['ink']}", "--lora", f"water={files['water']}", "--granularity", "block",
            "--base-model", "builtin:tiny-flux", "--out", str(run), "--trials", "2", "--no-baseline",
            "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db", "--set", "eval.inference_steps=2",
            "--set", "eval.seeds=[0]", "--set", "data.resolution=32", "--set", "study.confirm_top_k=0",
            "--no-progress"]  # fmt: skip
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "(flux, cpu, 32px)" in out
    rc = main(["export", str(run), "--out", str(tmp_path / "exp"), "--trial", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    exp = tmp_path / "exp"
    doc = json.loads((exp / "coefficients.json").read_text())
    kohya = [p for p in exp.glob("*.safetensors") if p.name != "pytorch_lora_weights.safetensors"]
    assert len(kohya) == 1
    fa = load_loras(pipe, [files["ink"], files["water"]], ["ink", "water"])
    try:
        Fusion.from_dict(doc).apply(fa)
        expected = _generate(pipe)
    finally:
        unload(fa)
    # The kohya file's fused layers are checked against ComfyUI's arithmetic above; diffusers' kohya loader cannot
    # read this tiny model's single blocks (its split is hard-wired to Flux.1's width).
    got = _reloaded(flux_folder, exp / "pytorch_lora_weights.safetensors")
    assert np.allclose(got, expected, atol=1e-5), np.abs(got - expected).max()


def test_explain_maps_a_flux_lora_over_its_transformer_blocks(
    tmp_path: Path, flux_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    pipe = _load(flux_folder)
    modules = _every_module(pipe)
    targets = [m for m in modules if (m.startswith("transformer_blocks.") and ".attn." in m) or m.startswith("single_")]
    adapter, _ = _trained(pipe, LoraConfig(r=4, lora_alpha=4, target_modules=targets), "flux", 21)
    lora = export_all(adapter, tmp_path / "lora", "ink", kohya=False)["diffusers"]
    out = tmp_path / "map"
    args = ["explain", str(lora), "--base-model", "builtin:tiny-flux", "--out", str(out), "--seeds", "0", "--prune",
            "--set", "eval.inference_steps=2", "--set", "data.resolution=32",
            "--set", "eval.intro_style=false"]  # fmt: skip
    rc = main(args)
    printed, err = capsys.readouterr()
    assert rc == 0, err
    doc = json.loads((out / "explain.json").read_text())
    assert [g["group"] for g in doc["map"]["groups"]] == ["double.0", "double.1", "single.0", "single.1"]
    assert doc["arch"] == "flux" and doc["rank"]["rank"] == 4
    assert doc["pruned"]["written"] or doc["pruned"]["reason"] in printed


def test_explain_maps_an_sd3_lora_and_prunes_it_to_a_file_diffusers_loads(
    tmp_path: Path, sd3_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    pipe = _load(sd3_folder)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=_every_module(pipe), init_lora_weights="gaussian")
    adapter, _ = _trained(pipe, config, "sd3", 25)
    lora = export_all(adapter, tmp_path / "lora", "ink", kohya=False)["diffusers"]
    out = tmp_path / "map"
    args = ["explain", str(lora), "--base-model", "builtin:tiny-sd3", "--out", str(out), "--seeds", "0", "--prune",
            "--set", "eval.inference_steps=2", "--set", "data.resolution=32",
            "--set", "eval.intro_style=false", "--set", "explain.keep_style=0.5"]  # fmt: skip
    rc = main(args)
    printed, err = capsys.readouterr()
    assert rc == 0, err
    doc = json.loads((out / "explain.json").read_text())
    groups = [g["group"] for g in doc["map"]["groups"]]
    assert doc["arch"] == "sd3" and groups and all(g.startswith("double.") for g in groups), groups
    # SD3 has no kohya format: the pruned LoRA goes out as the diffusers file alone (it used to fail on the kohya
    # file), is the file the check sampled, and loads into a fresh pipeline
    pruned = doc["pruned"]
    assert pruned["written"], pruned["reason"]
    assert set(pruned["files"]) == {"diffusers", "info"} and "kohya     skipped: sd3" in printed
    fresh = _load(sd3_folder)
    fresh.load_lora_weights(pruned["files"]["diffusers"])
    assert fresh.get_list_adapters()["transformer"]
