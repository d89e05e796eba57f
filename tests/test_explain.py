"""``autolora explain``: the map's arithmetic, a whole run on the tiny model as a user runs it, the pruned file
reloaded, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import fusion_inputs

from autolora.cli import main
from autolora.explain.prune import choose
from autolora.explain.reading import GroupReading, Reading, StyleMap
from autolora.loras.rank import directions, singular_values

FAST = ["--base-model", "builtin:tiny-sd", "--set", "eval.inference_steps=2", "--set", "eval.intro_style=false"]


def _reading(style: list[float], content: list[float]) -> Reading:
    return Reading({"style_auto": style, "content_text_kept": content})


def _map(groups: dict[str, tuple[float, float, float]]) -> StyleMap:
    """Groups -> (style alone, style without, content alone), over a base at style 0, content 1 and a full LoRA at
    style 1, content 0.97; two seeds each, the same value on both."""
    return StyleMap(
        "block",
        "style_auto",
        ["content_text_kept"],
        _reading([0.0, 0.0], [1.0, 1.0]),
        _reading([1.0, 1.0], [0.97, 0.97]),
        [GroupReading(k, _reading([a, a], [c, c]), _reading([w, w], [0.99, 0.99])) for k, (a, w, c) in groups.items()],
        "style images",
    )


def test_reading_keeps_one_value_per_seed_over_the_prompts() -> None:
    # prompt-major: prompt 0 seeds 0,1 then prompt 1 seeds 0,1
    r = Reading.of({"style_auto": [1.0, 2.0, 3.0, 6.0]}, n_seeds=2)
    assert r.per_seed["style_auto"] == [2.0, 4.0]
    assert r.mean("style_auto") == 3.0 and r.sd("style_auto") == pytest.approx(2**0.5)


def test_shares_follow_the_style_alone_and_lost_and_costs_count_only_above_their_noise() -> None:
    found = _map({"down.0": (0.0, 1.0, 0.995), "up.0": (0.6, 0.3, 1.0), "up.1": (0.3, 0.6, 0.90)})
    shares = found.shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["down.0"] == 0.0 and shares["up.0"] > shares["up.1"] > 0
    assert found.cost("up.1", "content_text_kept") == (pytest.approx(10.0), 0.0)
    assert found.worst_cost("down.0") == 0.0  # half a point: under the floor
    assert found.cost_shares() == {"down.0": 0.0, "up.0": 0.0, "up.1": 1.0}
    # up.1 carries a third of the style but all of the content cost: dropped; down.0 carries nothing: dropped
    assert choose(found, min_share=0.05) == (["up.0"], ["up.1", "down.0"])
    assert found.to_dict()["groups"][2]["content_cost"]["content_text_kept"]["mean"] == pytest.approx(10.0)


def test_a_map_without_style_has_no_shares() -> None:
    found = _map({"down.0": (-0.1, 1.0, 1.0), "up.0": (0.0, 1.2, 1.0)})
    assert found.shares() == {"down.0": 0.0, "up.0": 0.0}


def test_directions_count_the_delta_a_layer_uses() -> None:
    gen = torch.Generator().manual_seed(0)
    down, up = torch.randn(8, 40, generator=gen), torch.randn(30, 8, generator=gen)
    values = singular_values(down, up)
    assert torch.allclose(values, torch.linalg.svdvals((up @ down).double())[:8], rtol=1e-6)
    assert directions(values, 1.0) == 8
    rank_two = torch.randn(30, 2, generator=gen) @ torch.randn(2, 8, generator=gen)
    assert directions(singular_values(down, rank_two), 0.99) <= 2


@pytest.fixture(scope="module")
def loras(tiny_sd: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return fusion_inputs(tiny_sd, tmp_path_factory.mktemp("explain"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_explain_maps_a_lora_writes_its_files_and_a_pruned_lora_that_reloads(
    loras: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_sd: Any
) -> None:
    out = tmp_path / "map"
    ink = loras["files"]["ink"]  # UNet attention + text encoder, rank 4, a diffusers file
    args = ["explain", str(ink), *FAST, "--prompts", str(loras["root"] / "prompts.txt"), "--out", str(out)]
    assert main([*args, "--prune", "--seeds", "0,1"]) == 0
    printed = capsys.readouterr().out
    assert "rank 4 used: 90 % of the delta in" in printed and "summary:" in printed
    doc = json.loads((out / "explain.json").read_text())
    m = doc["map"]
    keys = [g["group"] for g in m["groups"]]
    assert keys[0] == "down.0" and keys[-1] == "text_encoder" and "mid" in keys and "up.0" in keys
    assert m["references"] == "own samples" and m["seeds"] == 2
    assert m["sampling_passes"] >= 3 + 2 * len(keys)  # base, full, references, each group alone and without
    shares = [g["share"] for g in m["groups"]]
    assert sum(shares) == pytest.approx(1.0) or not any(shares)
    assert all(len(g_["per_seed"]) == 2 for g_ in m["base"].values())
    assert doc["rank"]["rank"] == 4 and 1 <= doc["rank"]["k90_median"] <= doc["rank"]["k99_max"] <= 4
    assert sum(doc["delta_shares"].values()) == pytest.approx(1.0)
    for name in ("explain.json", "explain.png", "samples.png", "explain.html"):
        assert _mode(out / name) == 0o666 & ~_umask(), name
    assert "explain.png" in (out / "explain.html").read_text()
    pruned = doc["pruned"]
    assert pruned["subsets"] and pruned["subsets"][0]["groups"] == pruned["kept"][: len(pruned["subsets"][0]["groups"])]
    if not pruned["written"]:  # the check refused it: said why, wrote nothing
        assert pruned["reason"] and not (out / "pruned").exists()
        assert f"no pruned LoRA written: {pruned['reason']}" in printed
        return
    kohya = Path(pruned["files"]["kohya"])
    assert kohya.is_file() and _mode(kohya) == 0o666 & ~_umask() and pruned["size"] == kohya.stat().st_size
    assert pruned["style_kept"] >= 0.9
    from autolora.loras.engine import load_loras, unload

    fa = load_loras(tiny_sd, [kohya], ["pruned"])  # what a user's UI gets: the kohya file, on the base model
    try:
        assert set(fa.lora_group_keys("pruned", "block")) == set(pruned["kept"])
    finally:
        unload(fa)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_explain_at_layer_granularity_against_style_pictures(
    loras: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "layers"
    water = loras["files"]["water"]  # attention + resnet convs, a kohya file
    args = ["explain", str(water), *FAST, "--granularity", "layer", "--out", str(out), "--seeds", "0"]
    assert (
        main([*args, "--style-images", str(loras["styles"]["water"]), "--prompts", str(loras["root"] / "prompts.txt")])
        == 0
    )
    doc = json.loads((out / "explain.json").read_text())
    keys = [g["group"] for g in doc["map"]["groups"]]
    assert "down.0.attentions.0" in keys and "up.1.resnets.0" in keys
    assert doc["map"]["references"] == "style images"
    assert doc["rank"]["rank"] == 2
    assert "pruned" not in doc


def _not_a_lora(d: Path) -> list[str]:
    from safetensors.torch import save_file

    save_file({"model.weight": torch.zeros(2, 2)}, str(d / "weights.safetensors"))
    return [str(d / "weights.safetensors")]


def _other_base(d: Path) -> list[str]:
    """An SDXL-layout LoRA (cross-attention width of the tiny SDXL) against the tiny SD model."""
    from safetensors.torch import save_file

    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({f"{key}.lora_down.weight": torch.zeros(4, 64), f"{key}.lora_up.weight": torch.zeros(32, 4)},
              str(d / "xl.safetensors"))  # fmt: skip
    return [str(d / "xl.safetensors")]


def _empty_styles(d: Path, loras: dict[str, Any]) -> list[str]:
    (d / "styles").mkdir()
    return [str(loras["files"]["ink"]), "--style-images", str(d / "styles")]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_not_a_lora, r"weights.safetensors: no LoRA weights"),
        (_other_base, r"xl.safetensors: made for an unknown model \(cross-attention width 64\), but the base model"),
        (_empty_styles, r"style images .*styles: the folder has no images"),
        (lambda d: [str(d / "missing.safetensors")], r"missing.safetensors: not found"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    make: Any, message: str, loras: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import inspect
    import re

    given = make(tmp_path, loras) if len(inspect.signature(make).parameters) == 2 else make(tmp_path)
    out = tmp_path / "out"
    assert main(["explain", *given, *FAST, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()


def test_tune_maps_its_best_lora_into_the_run_folder_and_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import FAST as TUNE_FAST

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = tmp_path / "run"
    args = ["tune", "--trials", "2", "--out", str(run), "--study-name", "mapped", "--mlflow-uri", uri, *TUNE_FAST]
    assert main(args) == 0
    printed = capsys.readouterr().out
    doc = json.loads((run / "explain" / "explain.json").read_text())
    import optuna

    study = optuna.load_study(study_name="mapped", storage=f"sqlite:///{run}/optuna.db")
    assert doc["trial"] == study.best_trial.number
    assert doc["map"]["references"] == "style images" and "pruned" not in doc
    assert f"explain (trial {doc['trial']}): " in printed
    assert "Where the best adapter" in (run / "report.html").read_text()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = next(r for r in client.search_runs([client.get_experiment_by_name("autolora/mapped").experiment_id])
                  if "mlflow.parentRunId" not in r.data.tags)  # fmt: skip
    assert {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "explain")} >= {"explain.json"}
    capsys.readouterr()
    assert main([*args[: -len(TUNE_FAST)], *TUNE_FAST, "--trials", "0", "--set", "study.explain=false"]) == 0


@pytest.mark.parametrize("case", ["loha", "lokr", "lokr-full"])
def test_a_lycoris_file_is_read_as_the_exact_update_it_applies_and_explained(
    case: str, tiny_sd: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_methods import CASES, _attached, _kept, _spec

    from autolora.adapter import detach
    from autolora.formats.export import export_all
    from autolora.loras.lycoris import read_lycoris
    from autolora.loras.rank import _module_factors

    spec = _spec(tiny_sd, text_encoder=True, target_layers=["self_attn", "cross_attn", "conv"], **CASES[case])
    name = f"ly-{case}"
    try:
        deltas = _attached(tiny_sd, spec, name, seed=5)
        kept = _kept(tiny_sd, spec, name)
    finally:
        detach(tiny_sd.unet, name)
        detach(tiny_sd.text_encoder, name)
    path = export_all(kept, tmp_path / "files", "style")["kohya"]  # the LyCORIS file A1111 and ComfyUI load
    read = read_lycoris(path, tiny_sd)
    assert set(read.state_dicts) == {"unet", "text_encoder"}
    for comp, by_module in deltas.items():
        got = {
            n: (up.flatten(1) @ down.flatten(1))
            for n, down, up in _module_factors(read.state_dicts[comp], read.configs[comp])
        }
        assert set(got) == set(by_module), comp
        for module, delta in by_module.items():
            torch.testing.assert_close(got[module], delta.flatten(1), rtol=1e-3, atol=1e-5, msg=f"{comp} {module}")
    out = tmp_path / "map"
    assert (
        main(["explain", str(path), *FAST, "--seeds", "0", "--out", str(out), "--prompts", str(_prompts(tmp_path))])
        == 0
    )
    doc = json.loads((out / "explain.json").read_text())
    assert "text_encoder" in [g["group"] for g in doc["map"]["groups"]] and doc["rank"]["layers"] == sum(
        map(len, deltas.values())
    )


def _prompts(folder: Path) -> Path:
    (folder / "prompts.txt").write_text("a red circle\na blue square\n")
    return folder / "prompts.txt"


def test_explain_maps_an_sdxl_lora_with_both_text_encoders(
    tiny_sdxl: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import make_lora
    from peft import LoraConfig

    from autolora.formats.export import export_all

    te = LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    unet = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    adapter, _ = make_lora(tiny_sdxl, {"unet": unet, "text_encoder": te, "text_encoder_2": te}, 7)
    adapter.base.update(
        arch="sdxl", source="builtin:tiny-sdxl", layers_per_block=tiny_sdxl.unet.config.layers_per_block
    )
    lora = export_all(adapter, tmp_path / "xl", "xl")["diffusers"]
    out = tmp_path / "map"
    args = ["explain", str(lora), *FAST, "--base-model", "builtin:tiny-sdxl", "--seeds", "0", "--out", str(out)]
    assert main([*args, "--prompts", str(_prompts(tmp_path))]) == 0, capsys.readouterr().err
    keys = [g["group"] for g in json.loads((out / "explain.json").read_text())["map"]["groups"]]
    assert keys[-2:] == ["text_encoder", "text_encoder_2"] and any(k.startswith("up.") for k in keys)
