"""Shared fixtures: a per-session cache for the built-in models, fast study settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads; on a busy 2-core machine spinning threads slow them down."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    "--base-model", "builtin:tiny-sd",
]  # fmt: skip
"""Study flags for unit tests: the tiny random pipeline (miniworld, the default, has its own tests)."""


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


def make_lora(pipe: Any, configs: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """Attach random LoRAs (peft ``LoraConfig`` per component), keep them as a KeptAdapter and the image they
    give; leaves the pipe clean."""
    import torch

    from autolora.adapter import KeptAdapter, adapter_state_dict, attach, config_to_dict, detach

    name = f"make{seed}"
    gen = torch.Generator().manual_seed(seed)
    try:
        for comp, config in configs.items():
            attach(getattr(pipe, comp), config, name)
            with torch.no_grad():
                for key, param in getattr(pipe, comp).named_parameters():
                    if "lora_" in key:
                        param.add_(torch.randn(param.shape, generator=gen) * 0.3)
        image = generate(pipe)
        adapter = KeptAdapter(
            configs={comp: config_to_dict(cfg) for comp, cfg in configs.items()},
            state_dicts={comp: adapter_state_dict(getattr(pipe, comp), name) for comp in configs},
            base={"source": "builtin:tiny-sd", "arch": "sd1", "layers_per_block": 1, "resolution": 32},
        )
    finally:
        for comp in configs:
            detach(getattr(pipe, comp), name)
    return adapter, image
