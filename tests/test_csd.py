"""An optional CSD style model (``eval.style_model``): a checkpoint in CSD's own layout, with random weights, loads
through open_clip and adds the ``style_csd`` term to a study; a file that is not one is one line and exit 2.

CSD's released model is a ViT-L/14 (300 M parameters); the tests build the same layout on the tiny built-in CLIP's
tower (``eval.style_model_arch``), so the loader, not the size, is what is tested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import FAST

from autolora.cli import main

ARCH = "builtin:tiny-clip"


def csd_checkpoint(path: Path, dim: int = 16, width: int | None = None, prefix: str = "module.") -> Path:
    """A CSD ``checkpoint.pth``: ``model_state_dict`` with the tower as ``backbone.*`` (no projection) and the two
    heads, saved as DataParallel saves it (``module.``), random weights."""
    import open_clip
    import torch

    from autolora.scoring.clip import open_clip_model

    name, _ = open_clip_model(ARCH, None)
    torch.manual_seed(0)  # the same random tower for every checkpoint this builds
    visual = open_clip.create_model(name, pretrained=None, force_quick_gelu=True).visual
    state = {f"{prefix}backbone.{k}": v for k, v in visual.state_dict().items() if k != "proj"}
    width = width or int(visual.ln_post.weight.shape[0])
    gen = torch.Generator().manual_seed(0)
    state[f"{prefix}last_layer_style"] = torch.randn(width, dim, generator=gen)
    state[f"{prefix}last_layer_content"] = torch.randn(width, dim, generator=gen)
    torch.save({"model_state_dict": state, "epoch": 3}, path)
    return path


def test_a_csd_checkpoint_loads_and_reads_unit_style_embeddings(quiet: None, tmp_path: Path) -> None:
    import torch
    from PIL import Image

    from autolora.scoring.csd import CsdReader

    pictures = [Image.new("RGB", (40, 32), (200, 30, 30)), Image.new("RGB", (32, 32), (20, 90, 200))]
    reader = CsdReader(csd_checkpoint(tmp_path / "checkpoint.pth"), ARCH)
    (emb,) = reader(pictures)
    assert emb.shape == (2, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    assert not torch.allclose(emb[0], emb[1])
    (again,) = CsdReader(csd_checkpoint(tmp_path / "plain.pth", prefix=""), ARCH)(pictures)
    torch.testing.assert_close(again, emb)  # with or without DataParallel's prefix


def _save(obj: Any, path: Path) -> None:
    import torch

    torch.save(obj, path)


def _zeros() -> Any:
    import torch

    return torch.zeros(2)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_bytes(b"not a checkpoint"), "not a readable checkpoint"),
        (lambda p: _save({"model_state_dict": {"w": _zeros()}}, p), "CSD's keys"),
        (lambda p: csd_checkpoint(p, width=7), "last_layer_style has shape (7, 16)"),
    ],
)
def test_a_file_that_is_not_a_csd_model_is_one_line(quiet: None, tmp_path: Path, make: Any, expected: str) -> None:
    from autolora.errors import UserError
    from autolora.scoring.csd import CsdReader

    path = tmp_path / "bad.pth"
    make(path)
    with pytest.raises(UserError, match="eval.style_model") as info:
        CsdReader(path, ARCH)
    assert expected in str(info.value) and "\n" not in str(info.value)


def _style(root: Path) -> Path:
    from autolora.miniworld.world import sample_items

    root.mkdir(parents=True)
    for i, (image, item) in enumerate(sample_items(6, style="dotted", seed=4)):
        image.save(root / f"p{i}.png")
        (root / f"p{i}.txt").write_text(f"a {item.colour} {item.shape}\n")
    return root


def test_tune_with_a_style_model_scores_style_csd(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The study's self-check gives the term its line and every trial its value (MLflow); a missing file stops
    before anything is created."""
    from mlflow.tracking import MlflowClient

    style = _style(tmp_path / "dotted")
    ckpt = csd_checkpoint(tmp_path / "checkpoint.pth")
    common = [*FAST, "--style-images", str(style), "--trials", "1", "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"]
    csd = ["--set", f"eval.style_model={ckpt}", "--set", f"eval.style_model_arch={ARCH}"]
    assert main(["tune", *common, "--out", str(tmp_path / "run"), *csd]) == 0
    out = capsys.readouterr().out
    assert any(ln.startswith("judge: style_csd tells your pictures from") for ln in out.splitlines()), out
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")  # not mlflow's global URI: other tests use it
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert any("judge.style_csd.auc" in r.data.metrics for r in runs)
    trials = [r for r in runs if "final.style_csd" in r.data.metrics]
    assert trials and all(r.data.metrics["final.style_csd"] == r.data.metrics["final.style_csd"] for r in trials)

    missing = ["--set", f"eval.style_model={tmp_path / 'nope.pth'}"]
    assert main(["tune", *common, "--out", str(tmp_path / "run2"), *missing]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval.style_model" in err and "nope.pth" in err, err
    assert not (tmp_path / "run2").exists()
