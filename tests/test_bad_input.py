"""Every bad input: one line naming the culprit, exit code 2, and nothing created."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import FAST

from autolora.cli import main


def _empty_dir(d: Path) -> list[str]:
    (d / "styles").mkdir()
    return ["--style-images", "styles"]


def _bad_image(d: Path) -> list[str]:
    (d / "styles").mkdir()
    (d / "styles" / "broken.png").write_bytes(b"not a png")
    return ["--style-images", "styles"]


def _text_file(name: str, text: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_text(text)
        return d / name

    return make


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "config missing": (lambda d: ["nope.yaml"], "config file nope.yaml does not exist"),
    "config unparsable": (lambda d: [str(_text_file("c.yaml", "study:\n  trials: [\n")(d))], "not valid YAML at line"),
    "unknown key": (lambda d: ["--set", "train.batch_sise=2"], "did you mean 'batch_size'"),
    "wrong type": (lambda d: ["--set", "study.trials=many"], "study.trials: expected an integer, got 'many'"),
    "out of range": (lambda d: ["--set", "eval.inference_steps=0"], "eval.inference_steps: expected an integer >= 1"),
    "bounds inverted": (
        lambda d: ["--search-space", str(_text_file("s.yaml", "params:\n  rank: {low: 8, high: 2}\n")(d))],
        "low (8) is greater than high (2)",
    ),
    "style folder missing": (lambda d: ["--style-images", "nope"], "style images nope: no such folder"),
    "style folder empty": (_empty_dir, "the folder has no images"),
    "unreadable image": (_bad_image, "broken.png is not a readable image"),
    "prompts missing": (lambda d: ["--prompts", "p.txt"], "prompts file p.txt: no such file"),
    "prompts empty": (lambda d: ["--prompts", str(_text_file("p.txt", "# nothing\n\n")(d))], "no prompts"),
    "not a diffusers model": (lambda d: ["--base-model", str(d)], "not a diffusers model folder"),
    "hub id offline": (lambda d: ["--base-model", "nobody/no-model"], "not in the local Hugging Face cache"),
    "unknown search space": (lambda d: ["--search-space", "quikc"], "did you mean 'quick'"),
    "unknown objective": (lambda d: ["--objective", "pareot"], "did you mean 'pareto'"),
    "storage folder missing": (lambda d: ["--storage", "sqlite:////no/such/dir/o.db"], "does not exist"),
    "storage unreachable": (lambda d: ["--storage", "postgresql://u@127.0.0.1:9/x"], "cannot be opened"),
}
if not torch.cuda.is_available():
    CASES["cuda unavailable"] = (lambda d: ["--device", "cuda"], "CUDA was requested")


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    make, message = CASES[case]
    args = make(tmp_path)
    config = [a for a in args if a.endswith((".yaml", ".toml")) and not a.endswith("s.yaml")]
    flags = [a for a in args if a not in config]
    before = set(tmp_path.rglob("*"))
    rc = main(["tune", *config, *FAST, *flags, "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    out, err = capsys.readouterr()
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autolora: error: "), err
    assert message in lines[0]
    assert set(tmp_path.rglob("*")) - before <= {tmp_path / "hf"}  # no run folder, storage or MLflow store
