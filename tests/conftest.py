"""Shared fixtures: a per-session cache for the built-in models, fast study settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def autolora_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built-in models are built once per session into a temp cache, never into the user's."""
    path = tmp_path_factory.mktemp("autolora-cache")
    os.environ["AUTOLORA_CACHE"] = str(path)
    return path


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder: MLflow's default artifact root is ./mlruns of the cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def quiet() -> None:
    from autolora.quiet import quiet_libraries

    quiet_libraries()


@pytest.fixture(scope="session")
def tiny_sd(quiet: None) -> object:
    """The tiny SD pipeline, loaded through the same code path as a user's model."""
    import torch

    from autolora.models.loading import load_pipeline, resolve_model

    return load_pipeline(resolve_model("builtin:tiny-sd"), "cpu", torch.float32)


@pytest.fixture(scope="session")
def tiny_sdxl(quiet: None) -> object:
    import torch

    from autolora.models.loading import load_pipeline, resolve_model

    return load_pipeline(resolve_model("builtin:tiny-sdxl"), "cpu", torch.float32)


FAST = [
    "--search-space", str(DATA / "tiny.yaml"),
    "--set", "eval.inference_steps=2",
    "--set", "eval.seeds=[0]",
    "--set", "train.eval_every=3",
    "--no-progress",
]  # fmt: skip


def generate(pipe: object, **kwargs: object) -> object:
    """Two denoising steps at 32 px from a fixed seed, as a numpy array: the tests' standard picture."""
    import numpy as np
    import torch

    out = pipe(  # type: ignore[operator]
        "a watercolor fox",
        num_inference_steps=2,
        height=32,
        width=32,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
    return np.asarray(out.images)
