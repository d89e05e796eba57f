"""Data diagnostics at setup: each check on pictures made here, and what ``tune`` prints, logs and refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from autolora.cli import main
from autolora.diagnostics import captions_finding, duplicates_finding, sizes_finding, vae_finding
from autolora.miniworld.world import BACKGROUND, sample_items
from autolora.models.roundtrip import round_trip_psnr


def unrepresentable(image: Image.Image, seed: int) -> Image.Image:
    """Independent noise in every pixel over a miniworld picture's background: no compressing VAE keeps it
    (a 2x-downsampling, 4-channel latent holds a third of the values), however general its training."""
    a = np.asarray(image).copy()
    bg = (a == np.array(BACKGROUND)).all(-1)
    a[bg] = np.random.default_rng(seed).integers(0, 256, (int(bg.sum()), 3))
    return Image.fromarray(a)


def style_folder(root: Path, noisy: bool, n: int = 6, seed: int = 5, style: str = "plain") -> Path:
    root.mkdir(parents=True)
    for i, (image, item) in enumerate(sample_items(n, style=style, seed=seed)):
        (unrepresentable(image, i) if noisy else image).save(root / f"p{i}.png")
        (root / f"p{i}.txt").write_text(f"a {item.colour} {item.shape}\n")
    return root


@pytest.fixture(scope="module")
def vae(quiet: None) -> Any:
    from diffusers import AutoencoderKL

    from autolora.models.builtin import builtin_path

    return AutoencoderKL.from_pretrained(builtin_path("builtin:miniworld") / "vae").eval()


def test_vae_warning_fires_on_what_the_vae_cannot_represent_and_not_on_plain(vae: Any) -> None:
    plain = [im for im, _ in sample_items(8, style="plain", seed=1)]
    base = [im for im, _ in sample_items(8, style="plain", seed=2)]  # stands in for the base's samples
    noisy = [unrepresentable(im, i) for i, im in enumerate(plain)]
    names = [f"p{i}.png" for i in range(8)]
    yard = round_trip_psnr(vae, base, 32)
    assert min(yard) > 18  # the shipped VAE keeps what miniworld draws
    ok = vae_finding(round_trip_psnr(vae, plain, 32), names, yard)
    assert not ok.warning and "dB on the base model's own samples" in ok.line
    bad = vae_finding(round_trip_psnr(vae, noisy, 32), names, yard)
    assert bad.warning and "far outside what the base model can represent" in bad.line
    assert bad.metrics["gap_db"] > 10 and bad.metrics["refs_far"] == 8


def test_near_duplicates_are_named() -> None:
    pics = [im for im, _ in sample_items(4, style="plain", seed=3)]
    names = ["a.png", "b.png", "c.png", "d.png", "a-copy.jpg"]
    noisy = np.clip(np.asarray(pics[0], dtype=np.float32) + np.random.default_rng(0).normal(0, 2, (32, 32, 3)), 0, 255)
    found = duplicates_finding([*pics, Image.fromarray(noisy.astype(np.uint8)).resize((64, 64))], names)
    assert found.warning and "a.png ~ a-copy.jpg" in found.line and found.metrics["pairs"] == 1
    assert not duplicates_finding(pics, names[:4]).warning


def test_captions_all_none_or_mixed() -> None:
    names = ["a.png", "b.png", "c.png"]
    assert not captions_finding(["x", "y", "z"], names).warning
    assert not captions_finding(["", "", ""], names).warning
    mixed = captions_finding(["x", "", "z"], names)
    assert mixed.warning and "2 of 3 references have a caption, 1 have none (b.png)" in mixed.line


def test_sizes_say_what_cropping_and_resizing_do() -> None:
    square = Image.new("RGB", (512, 512))
    fine = sizes_finding([square, square], ["a.png", "b.png"], 512)
    assert not fine.warning and "nothing cropped" in fine.line
    wide, small = Image.new("RGB", (1024, 512)), Image.new("RGB", (128, 128))
    bad = sizes_finding([square, wide, small], ["a.png", "wide.png", "small.png"], 512)
    assert bad.warning and "up to 50%, wide.png" in bad.line and "up to 4.0x, small.png" in bad.line
    assert bad.metrics["max_aspect"] == 2.0


def test_sizes_name_the_bucket_of_each_picture_and_buckets_keep_wide_pictures_whole() -> None:
    from autolora.buckets import plan_buckets

    images = [Image.new("RGB", s) for s in [(512, 512), (1024, 512), (1000, 520), (512, 1024)]]
    names = ["sq.png", "wide.png", "wide2.png", "tall.png"]
    buckets, of = plan_buckets([im.size for im in images], 512, 64, "buckets")
    found = sizes_finding(images, names, 512, buckets, of)
    assert not found.warning, found.line
    assert "3 aspect-ratio bucket(s) of about 512x512 px" in found.line
    assert "704x320 (2: wide.png, wide2.png)" in found.line and "320x704 (1: tall.png)" in found.line
    assert "512x512 (1: sq.png)" in found.line
    assert found.metrics["buckets"] == 3 and found.metrics["max_crop_loss"] < 0.15


def tune_args(tmp_path: Path, style: Path, *more: str) -> list[str]:
    return ["tune", "--style-images", str(style), "--out", str(tmp_path / "run"), "--study-name", "d",
            "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db", "--trials", "0", "--no-progress",
            "--set", "eval.seeds=[0]", "--set", "eval.inference_steps=8", *more]  # fmt: skip


def test_tune_warns_logs_and_show_repeats(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mlflow.tracking import MlflowClient

    style = style_folder(tmp_path / "noisy", True)
    (style / "p0.txt").unlink()
    assert main(tune_args(tmp_path, style)) == 0
    out = capsys.readouterr().out
    warned = [ln for ln in out.splitlines() if ln.startswith("WARNING: ")]
    assert len(warned) == 2, out  # the VAE cannot represent them, and one caption is missing
    assert "far outside what the base model can represent" in warned[0] and "have none (p0.png)" in warned[1]
    assert sum(ln.startswith("data: ") for ln in out.splitlines()) == 2  # duplicates and sizes are fine
    assert main(["show", str(tmp_path / "run")]) == 0
    shown = capsys.readouterr().out
    assert shown.count("WARNING (data, at setup): ") == 2 and "far outside" in shown
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (parent,) = client.search_runs([client.get_experiment_by_name("autolora/d").experiment_id])
    assert parent.data.metrics["data.vae.gap_db"] > 10 and parent.data.metrics["data.captions.uncaptioned"] == 1
    assert "diagnostics.json" in [a.path for a in client.list_artifacts(parent.info.run_id)]


def test_strict_stops_before_anything_is_created(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    style = style_folder(tmp_path / "noisy", True)
    assert main(tune_args(tmp_path, style, "--strict")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("autolora: error: --strict: VAE round trip"), err
    assert "nothing was created" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "mlflow.db").exists()


def test_strict_runs_clean_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    style = style_folder(tmp_path / "dotted", False, n=8, seed=11, style="dotted")
    assert main(tune_args(tmp_path, style, "--strict")) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out and sum(ln.startswith("data: VAE round trip") for ln in out.splitlines()) == 1
    # The judge's self-check, one line a style term, then how well it reads the subjects under this style.
    judged = [ln for ln in out.splitlines() if ln.startswith("judge: ")]
    assert any(ln.startswith("judge: style_direction tells your pictures from the base model's renderings of their "
                             "captions at AUC") and "(passes)" in ln for ln in judged), out  # fmt: skip
    assert any("the judge reads the subjects of your pictures at" in ln for ln in judged), out


def test_judge_self_check_warns_when_no_term_sees_the_style_and_strict_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """References the base model drew itself (other seeds than the study's renderings) hold no style to learn: no
    style term can tell them from its renderings, so the style scores would be noise; the study warns (kept with the
    study and in MLflow), and ``--strict`` stops."""
    import torch
    from mlflow.tracking import MlflowClient

    from autolora.models.loading import load_pipeline, resolve_model
    from autolora.sampling import sample

    pipe = load_pipeline(resolve_model("builtin:miniworld"), "cpu", torch.float32)
    captions = [f"a {c} {s}" for s in ("circle", "square", "triangle", "star") for c in ("red", "blue", "green")]
    style = tmp_path / "own"
    style.mkdir()
    drawn = sample(pipe, captions, [100], steps=8, guidance_scale=7.5, resolution=32)
    for i, (image, caption) in enumerate(zip(drawn, captions, strict=True)):
        image.save(style / f"p{i}.png")
        (style / f"p{i}.txt").write_text(caption + "\n")
    assert main(tune_args(tmp_path, style, "--strict")) == 2
    err = capsys.readouterr().err
    assert "no style term tells your pictures from the base model's" in err and "nothing was created" in err
    assert not (tmp_path / "run").exists()
    assert main(tune_args(tmp_path, style)) == 0
    out = capsys.readouterr().out
    assert "WARNING: no style term tells your pictures from the base model's" in out
    assert main(["show", str(tmp_path / "run")]) == 0
    assert "no style term tells" in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (parent,) = client.search_runs([client.get_experiment_by_name("autolora/d").experiment_id])
    assert 0 <= parent.data.metrics["judge.style_gain.auc"] < 0.75


def test_fuse_diagnoses_every_style_and_strict_stops_it(
    tmp_path: Path, tiny_sd: object, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    from conftest import fuse_args, fusion_inputs

    work = fusion_inputs(tiny_sd, tmp_path / "in")
    assert main([*fuse_args(work, tmp_path / "f"), "--trials", "0"]) == 0
    out = capsys.readouterr().out
    for name in ("ink", "water"):
        assert f"data: [{name}] none of the 2 references has a caption" in out, out
        assert sum(f"[{name}] VAE round trip" in ln for ln in out.splitlines()) == 1, out
    shutil.copyfile(work["styles"]["ink"] / "0.png", work["styles"]["ink"] / "copy.png")
    assert main([*fuse_args(work, tmp_path / "g"), "--trials", "0", "--strict"]) == 2
    assert "autolora: error: --strict: " in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_psnr_of_nothing_kept_is_zero_not_perfect() -> None:
    from autolora.models.roundtrip import psnr

    a = np.zeros((4, 4, 3), np.float32)
    assert psnr(a, a) == 60.0 and psnr(a, a + 0.1) == pytest.approx(20.0)
    assert psnr(a, np.full_like(a, np.nan)) == 0.0  # an overflowing float16 VAE must not read as lossless
