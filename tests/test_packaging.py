"""The wheel, as a user installs it: ``pip wheel .`` offline, installed into a fresh virtualenv, runs a study on
the embedded default with the weights, search spaces and objectives it carries (not the source tree's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _source_copy(dest: Path) -> Path:
    """The working tree's files as git sees them (tracked and new, not ignored): what a clone would build."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_wheel_builds_offline_installs_fresh_and_tunes_the_embedded_default(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "src")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "--no-index", "-v",
         "-w", str(tmp_path / "wheels")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "absent from the `packages` configuration" not in built.stdout + built.stderr
    (wheel,) = (tmp_path / "wheels").glob("autolora-*.whl")

    # A fresh environment: the wheel is its only autolora; the dependencies (torch and friends, gigabytes)
    # are seen through a path file pointing at this environment's site-packages, whose .pth files (the
    # editable install of the source tree among them) are not processed from there.
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    fresh_site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    (fresh_site / "_autolora_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index",
         str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["AUTOLORA_CACHE"] = str(tmp_path / "cache")  # the built-in model is assembled from the wheel's weights
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import autolora; print(autolora.__file__)"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(str(fresh_site)), f"autolora imported from {where}, not from the wheel"

    run = subprocess.run(
        [str(venv / "bin" / "autolora"), "tune", "--trials", "1", "--out", "run", "--search-space", "quick",
         "--objective", "balanced", "--mlflow-uri", f"sqlite:///{work}/mlflow.db", "--no-progress"],
        cwd=work, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "base model builtin:miniworld" in run.stdout
    # One trial of the quick space may keep the subject or not: either way the study ends with its verdict.
    verdicts = ("best: trial 0", "no feasible trial: all 1 complete trials", "no confirmed trial: the top 1")
    assert any(v in run.stdout for v in verdicts), run.stdout
    if "best: trial 0" in run.stdout:  # the default confirms the best on 6 other seeds
        assert "on 6 other seeds" in run.stdout, run.stdout
    assert (work / "run" / "report.html").is_file()


def test_every_subpackage_is_in_the_wheel() -> None:
    """A new ``autolora/<name>/__init__.py`` must be named in pyproject's packages (the wheel above takes minutes)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "autolora").rglob("__init__.py")}
    assert found - listed == set()
