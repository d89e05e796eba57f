"""Shared fixtures: a per-session cache for the built-in models, fast study settings."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes share the 2 cores (``-n 2``): one thread each, and for the processes they start, before
    # torch reads it. Tiny models gain nothing from threads; oversubscribed cores slow everything 3-15x.
    os.environ["OMP_NUM_THREADS"] = "1"
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def interruptible() -> None:
    """Give the test process Python's Ctrl-C handler, so the processes the tests start get SIGINT's default.

    A shell without job control (``nohup make test &``, a CI runner's background step) starts its background
    jobs with SIGINT ignored; the ignore is inherited through exec, and a Python started that way installs no
    KeyboardInterrupt handler, so the Ctrl-C tests' ``send_signal(SIGINT)`` did nothing (found this session:
    SigIgn of the hung child listed SIGINT). A handler, unlike an ignore, is reset to the default on exec.
    """
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)


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
    "--set", "study.confirm_top_k=0",
    "--set", "study.presets=none",
    "--set", "train.eval_every=3",
    "--no-progress",
    "--base-model", "builtin:tiny-sd",
]  # fmt: skip
"""Study flags for unit tests: the tiny random pipeline (miniworld, the default, has its own tests); no confirmation
stage and no preset trials (test_confirmation.py and test_presets.py turn them on)."""


def require(present: bool, what: str) -> None:
    """Skip a test whose outside component (a browser, a PostgreSQL server) is missing here; under CI (``CI`` set,
    as ``.ci/run`` does) fail it instead: CI installs them, so a missing one there is a broken CI, not a skip."""
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide {what} (.ci/run installs it)")
    pytest.skip(f"{what} is not installed here")


def randomize_lora(model: Any, seed: int) -> None:
    """Give every LoRA weight (lora_A, lora_B, DoRA magnitude) seeded non-zero values (peft starts lora_B at
    zero, which would make every round-trip comparison pass trivially)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)


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
    torch.manual_seed(seed)  # peft draws lora_A's init from the global generator: else the LoRA hangs on test order
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


def _style(folder: Path, colour: tuple[int, int, int]) -> Path:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True)
    for i in range(2):
        image = Image.new("RGB", (32, 32), colour)
        ImageDraw.Draw(image).ellipse([4 + 4 * i, 4, 24, 24 + 2 * i], fill=(250, 250, 250))
        image.save(folder / f"{i}.png")
    return folder


def fusion_inputs(pipe: Any, root: Path) -> dict[str, Any]:
    """Two seeded LoRAs of the tiny SD model as a user would have them, ``ink`` (UNet attention + text encoder,
    diffusers file) and ``water`` (attention + resnet convs, kohya file), each with a style folder; a prompts file
    and an MLflow URI, all under ``root``."""
    from peft import LoraConfig

    from autolora.formats.export import export_all

    attn = ["to_q", "to_k", "to_v", "to_out.0"]
    te = LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    ink, _ = make_lora(pipe, {"unet": LoraConfig(r=4, lora_alpha=4, target_modules=attn), "text_encoder": te}, 1)
    water, _ = make_lora(pipe, {"unet": LoraConfig(r=2, lora_alpha=1, target_modules=[*attn, "conv1", "conv2"])}, 2)
    files = {
        "ink": export_all(ink, root / "ink", "ink", kohya=False)["diffusers"],
        "water": export_all(water, root / "water", "water", kohya=True)["kohya"],
    }
    (root / "prompts.txt").write_text("a red circle\na blue square\n")
    return {
        "root": root,
        "files": files,
        "styles": {"ink": _style(root / "s_ink", (20, 20, 20)), "water": _style(root / "s_water", (60, 120, 220))},
        "uri": f"sqlite:///{root}/mlflow.db",
    }


def fuse_args(work: dict[str, Any], out: Path) -> list[str]:
    """``autolora fuse`` of the two LoRAs of ``fusion_inputs`` on the tiny model, fast settings."""
    return [
        "fuse",
        "--lora", f"ink={work['files']['ink']}",
        "--lora", str(work["files"]["water"]),
        "--style-images-for", f"ink={work['styles']['ink']}",
        "--style-images-for", f"water={work['styles']['water']}",
        "--prompts", str(work["root"] / "prompts.txt"),
        "--out", str(out),
        "--mlflow-uri", work["uri"],
        "--base-model", "builtin:tiny-sd",
        "--set", "eval.inference_steps=2",
        "--set", "eval.seeds=[0]",
        "--set", "study.confirm_top_k=0",
        "--set", "fuse.baselines=[]",  # the training-free baselines' fixed trials: tests/test_fuse_baselines.py
        "--objective", str(DATA / "fuse-unconstrained.yaml"),
        "--no-progress",
    ]  # fmt: skip


def wait_for(url: str, name: str, ready: Callable[[list[Any]], bool], what: str, timeout: float = 900) -> list[Any]:
    """Poll the study's trials until ``ready(trials)`` (``timeout`` only bounds a wait that would never end).

    One storage (one connection pool) serves the whole wait: on a database server, a storage per poll runs it
    out of connections. A SQLite file is opened only once it exists, under autolora's creation lock.
    """
    import optuna

    from autolora.core.locks import sqlite_init_lock

    deadline = time.time() + timeout
    db = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    while db is not None and not db.exists():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {db} (for {what})")
        time.sleep(0.2)
    with sqlite_init_lock(url):  # the study's own process may be creating the tables right now
        storage = optuna.storages.RDBStorage(url)  # plain reads: no write lock taken for a poll
    try:
        while time.time() < deadline:
            try:
                trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
            except KeyError:  # not created yet
                trials = []
            if ready(trials):
                return trials
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
    finally:
        storage.remove_session()
        storage.engine.dispose()


def running_in(proc: subprocess.Popen[str]) -> Callable[[list[Any]], bool]:
    """Whether a trial of ``proc`` (a worker) is RUNNING with all its parameters drawn (mid-trial).

    Both jobs record ``spec`` once every parameter is suggested; waiting on a non-empty ``params`` alone
    raced with the sampling of the rest (a kill then left a trial with part of its parameters).
    """
    return lambda trials: any(
        t.state.name == "RUNNING" and "spec" in t.user_attrs and t.user_attrs.get("worker", "").endswith(f":{proc.pid}")
        for t in trials
    )


@pytest.fixture(scope="module")
def pg() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster for one test file (``tests/postgres.py``)."""
    from postgres import available, postgres

    require(available(), "PostgreSQL's server binaries (Debian's postgresql)")
    with postgres() as server:
        yield server


@pytest.fixture(scope="module")
def fusion(tiny_sd: object, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Two style LoRAs and their style folders on the tiny pipeline, for the fuse worker tests."""
    return fusion_inputs(tiny_sd, tmp_path_factory.mktemp("fusion"))
