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


def _text_file(name: str, text: str, encoding: str = "utf-8") -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_bytes(text.encode(encoding))
        return d / name

    return make


def _captioned(caption: bytes) -> Callable[[Path], list[str]]:
    """A style folder of one picture whose caption file holds ``caption``."""

    def make(d: Path) -> list[str]:
        from PIL import Image

        (d / "styles").mkdir()
        Image.new("RGB", (32, 32), (200, 40, 40)).save(d / "styles" / "a.png")
        (d / "styles" / "a.txt").write_bytes(caption)
        return ["--style-images", "styles"]

    return make


def _garbage(name: str, data: bytes = b"this is not a database, just text\n" * 40) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return make


def _foreign_db(d: Path) -> Path:
    """A real SQLite database of another program."""
    import sqlite3

    with sqlite3.connect(d / "other.db") as db:
        db.execute("create table invoices (id integer primary key, total real)")
    return d / "other.db"


NOT_UTF8 = "un café à la crème"  # cp1252 bytes for é and à are not UTF-8


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
    "storage not a database": (
        lambda d: ["--storage", f"sqlite:///{_garbage('notes.db')(d)}"],
        "notes.db: is not an SQLite database",
    ),
    "storage of another program": (
        lambda d: ["--storage", f"sqlite:///{_foreign_db(d)}"],
        "a database of another program (tables invoices)",
    ),
    "storage a folder": (lambda d: ["--storage", f"sqlite:///{d}"], "is not a file (expected an SQLite database)"),
    "caption cp1252": (_captioned(NOT_UTF8.encode("cp1252")), "caption "),
    "caption latin-1 named": (
        _captioned(b"ok\n" + NOT_UTF8.encode("latin-1")),
        "a.txt: not UTF-8 text (byte 0xe9 on line 2",
    ),
    "prompts cp1252": (
        lambda d: ["--prompts", str(_text_file("p.txt", NOT_UTF8, "cp1252")(d))],
        "prompts file",
    ),
    "config cp1252": (
        lambda d: [str(_text_file("c.yaml", f"data:\n  trigger: {NOT_UTF8}\n", "cp1252")(d))],
        "c.yaml: not UTF-8 text",
    ),
    "search space cp1252": (
        lambda d: ["--search-space", str(_text_file("s.yaml", f"description: {NOT_UTF8}\n", "cp1252")(d))],
        "s.yaml: not UTF-8 text",
    ),
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


def test_captions_in_utf16_and_with_a_bom_are_read(tmp_path: Path) -> None:
    from autolora.data import load_style_set

    for i, data in enumerate([NOT_UTF8.encode("utf-16"), NOT_UTF8.encode("utf-8-sig"), NOT_UTF8.encode()]):
        folder = tmp_path / f"s{i}"
        _captioned(data)(tmp_path)
        (tmp_path / "styles").rename(folder)
        assert load_style_set(folder).captions == [NOT_UTF8]


STORAGES: dict[str, Callable[[Path], str]] = {
    "not a database": lambda d: f"sqlite:///{_garbage('notes.db')(d)}",
    "another program's": lambda d: f"sqlite:///{_foreign_db(d)}",
    "missing file": lambda d: f"sqlite:///{d}/missing.db",
    "unreachable server": lambda d: "postgresql://u@127.0.0.1:9/x",
}
COMMANDS: dict[str, list[str]] = {
    "worker": ["worker", "--study-name", "s"],
    "show": ["show", "--study-name", "s"],
    "export": ["export", "--study-name", "s", "--out", "exported"],
    "fuse": ["fuse", "--lora", "nofile.safetensors", "--no-progress"],
}


@pytest.mark.parametrize("storage", list(STORAGES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_storage_for_every_command(
    command: str, storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    url = STORAGES[storage](tmp_path)
    if command == "fuse":
        _lora_file(tmp_path / "nofile.safetensors")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    rc = main([*COMMANDS[command], "--storage", url])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    # A new fuse run creates its storage: a missing file passes the storage check, and the next check (this LoRA
    # does not fit the model's layers) still stops it before the database or anything else is created.
    refused = "LoRA file nofile.safetensors" if (command, storage) == ("fuse", "missing file") else "storage "
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"autolora: error: {refused}"), err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing created or touched


def _lora_file(path: Path) -> None:
    """A LoRA for the embedded model's text encoder width, so that ``fuse`` reaches the storage check (its output
    width fits no layer: loading it into the model, after the storage check, refuses it)."""
    import json

    from safetensors.torch import save_file

    from autolora.models.builtin import builtin_path

    width = json.loads((builtin_path("miniworld") / "unet" / "config.json").read_text())["cross_attention_dim"]
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora"
    save_file({f"{key}_A.weight": torch.zeros(2, width), f"{key}_B.weight": torch.zeros(320, 2)}, str(path))
