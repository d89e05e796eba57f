"""What a user looks at after a study: the HTML report (rendered in headless Chromium), optuna-dashboard on the
study's storage with the trials' pictures, the rating form's pick, and the Optuna artifacts behind them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from conftest import FAST, fuse_args, fusion_inputs, require
from PIL import Image

from autolora.cli import main
from autolora.core.artifacts import images, last_samples
from autolora.formats.export import INFO_FILE

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.fixture
def chromium() -> str:
    require(CHROMIUM is not None, "Chromium (Debian's chromium)")
    return CHROMIUM or ""


def _main(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(list(args))
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("report")
    old = os.getcwd()
    os.chdir(work)
    try:
        uri = f"sqlite:///{work}/mlflow.db"
        rc, out = _main("tune", "--trials", "3", "--out", "run", "--study-name", "rep", "--mlflow-uri", uri, *FAST)
    finally:
        os.chdir(old)
    assert rc == 0, out
    study = optuna.load_study(study_name="rep", storage=f"sqlite:///{work}/run/optuna.db")
    return {"work": work, "run": work / "run", "uri": uri, "out": out, "study": study}


def test_trials_and_study_keep_their_pictures_as_optuna_artifacts(tuned: dict[str, Any]) -> None:
    study, run = tuned["study"], tuned["run"]
    kept = images(study, run)
    assert set(kept) == {"base.png", "references.png"}
    for trial in study.trials:
        grids = images(trial, run, storage=study._storage)
        assert grids and all(re.fullmatch(r"samples_step_\d{5}\.png", k) for k in grids)
        last = last_samples(grids)
        assert last is not None and last.size == kept["base.png"].size  # same prompts x seeds as the base grid
    assert oct((run / "artifacts").stat().st_mode & 0o777) != "0o700"


def test_tune_writes_the_report_and_logs_it_to_the_parent_run(tuned: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    report = tuned["run"] / "report.html"
    assert f"report: {report}" in tuned["out"]
    assert report.stat().st_mode & 0o044 == 0o044, "the report is a kept file: readable like any saved file"
    parent = tuned["study"].user_attrs["autolora.mlflow_parent_run_id"]
    names = [a.path for a in MlflowClient(tracking_uri=tuned["uri"]).list_artifacts(parent)]
    assert "report.html" in names


def _render(page: Path, tmp: Path, chromium: str) -> tuple[dict[str, str], np.ndarray]:
    """The body's attributes after load (``--dump-dom``) and a screenshot, from headless Chromium."""
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=300)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stdout[:500]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    shot = tmp / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
        capture_output=True, timeout=300, check=True,
    )  # fmt: skip
    with Image.open(shot) as im:
        return attrs, np.asarray(im.convert("RGB"), dtype=np.float32)


def test_report_renders_in_chromium_with_every_picture_decoded(
    tuned: dict[str, Any], tmp_path: Path, capsys: Any, chromium: str
) -> None:
    out = tmp_path / "mine.html"
    rc = main(["report", str(tuned["run"]), "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and f"report: {out}" in printed and "logged to MLflow run" in printed
    text = out.read_text()
    for section in (
        "Data and judge diagnostics",
        "Samples: the top trials beside the base model",
        "Optimisation",
        "Trials",
    ):
        assert section in text
    assert 'src="http' not in text and "src='http" not in text, "the report must be self-contained"
    n_images = text.count("<img ")
    assert n_images >= 5  # base, references, 3 trials' grids, the history plot (importances need 2+ varying)

    attrs, shot = _render(out, tmp_path, chromium)
    assert attrs.get("data-images") == str(n_images)
    assert attrs.get("data-decoded") == str(n_images), f"the browser decoded {attrs.get('data-decoded')} pictures"
    assert shot.std() > 10, "the screenshot is blank"
    assert (shot.reshape(-1, 3).std(axis=1) > 20).mean() > 0.005, "no coloured pixels: the pictures did not show"


def test_a_broken_picture_is_seen_by_the_browser_check(tuned: dict[str, Any], tmp_path: Path, chromium: str) -> None:
    """The decoded-pictures check can fail: a report with one corrupt inline image reads N-1 of N."""
    text = (tuned["run"] / "report.html").read_text()
    broken = re.sub(r'src="data:image/png;base64,[^"]{8}', 'src="data:image/png;base64,AAAAAAAA', text, count=1)
    page = tmp_path / "broken.html"
    page.write_text(broken)
    attrs, _ = _render(page, tmp_path, chromium)
    assert int(attrs["data-decoded"]) == int(attrs["data-images"]) - 1


def test_report_errors_name_the_bad_value(tuned: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "not an autolora run folder" in capsys.readouterr().err
    assert main(["report", str(tuned["run"]), "--out", str(tmp_path / "no" / "such" / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return bytes(r.read())


def test_dashboard_serves_the_study_with_its_pictures_and_the_rating_picks_the_export(
    tuned: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autolora", "dashboard", str(tuned["run"]), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/dashboard/studies/" in line, line
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):  # the server starts after the line; wait for it to answer, not for a time
            try:
                studies = json.loads(_get(f"{base}/api/studies"))
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"dashboard exited: {proc.stdout.read()}") from None
                time.sleep(0.5)
        (entry,) = [s for s in studies["study_summaries"] if s["study_name"] == "rep"]
        study = tuned["study"]
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        trial = min(complete, key=lambda t: t.values[0])  # the worst: the rating, not the score, must pick it
        meta = json.loads(_get(f"{base}/api/studies/{entry['study_id']}"))
        assert {"base.png", "references.png"} <= {a["filename"] for a in meta["artifacts"]}
        dash_trial = next(t for t in meta["trials"] if t["number"] == trial.number)
        trial_id = dash_trial["trial_id"]
        (art,) = [a for a in dash_trial["artifacts"] if a["filename"].startswith("samples_step_")][-1:]
        png = _get(f"{base}/artifacts/{entry['study_id']}/{trial_id}/{art['artifact_id']}")
        with Image.open(io.BytesIO(png)) as im:
            assert im.size == last_samples(images(trial, tuned["run"], storage=study._storage)).size  # type: ignore[union-attr]
        note = dash_trial["note"]
        assert note["body"].startswith("rating:"), "dashboard gives each complete trial a note to rate it in"
        # What the dashboard's note editor sends when a person writes the rating and saves.
        body = note["body"].replace("rating:", "rating: 5", 1)
        request = urllib.request.Request(
            f"{base}/api/studies/{entry['study_id']}/{trial_id}/note",
            data=json.dumps({"version": note["version"] + 1, "body": body}).encode(),
            headers={"Content-Type": "application/json"},
            method="PUT",
        )
        urllib.request.urlopen(request, timeout=30).close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    assert main(["show", str(tuned["run"])]) == 0
    assert f"rated in the dashboard: trial {trial.number} 5" in capsys.readouterr().out
    assert main(["export", str(tuned["run"]), "--top-rated", "--out", str(tmp_path / "pick")]) == 0
    info = json.loads((tmp_path / "pick" / INFO_FILE).read_text())
    assert info["trial"] == trial.number


def test_dashboard_refuses_a_port_in_use(tuned: dict[str, Any], capsys: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["dashboard", str(tuned["run"]), "--port", str(port)]) == 2
    assert f"--port {port}" in capsys.readouterr().err


def test_fusion_report_has_dlf_against_linear_and_the_heatmap_and_fuse_registers(
    tmp_path: Path, tiny_sd: Any, capsys: Any
) -> None:
    work = fusion_inputs(tiny_sd, tmp_path / "in")
    run = tmp_path / "fuse-run"
    args = [*fuse_args(work, run), "--granularity", "block", "--trials", "2", "--study-name", "mixrep"]
    assert main([*args, "--register-model", "fused-style"]) == 0
    assert "registered fused-style version 1" in capsys.readouterr().out
    assert main(["report", str(run)]) == 0
    text = (run / "report.html").read_text()
    assert "Layer-wise fusion (DLF) against its baselines" in text
    assert "Coefficients of the best DLF trial" in text
    assert "linear" in text


def _generate_from_registry(uri: str, tracking: str, monkeypatch: pytest.MonkeyPatch) -> Image.Image:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)  # as a user's shell would; no process-wide state left
    model = mlflow.pyfunc.load_model(uri, model_config={"device": "cpu", "torch_dtype": "float32"})
    png = model.predict(
        {"prompt": ["a red circle in sks style"]},
        params={"num_inference_steps": 2, "height": 32, "width": 32, "guidance_scale": 1.0},
    )
    first = png[0] if isinstance(png, list) else png.iloc[0, 0]
    return Image.open(io.BytesIO(first)).convert("RGB")


def test_export_registers_the_adapter_and_the_registry_model_generates(
    tuned: dict[str, Any], tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    assert main(["export", str(tuned["run"]), "--out", str(tmp_path / "e"), "--register-model", "tiny-style"]) == 0
    printed = capsys.readouterr().out
    assert "registered tiny-style version 1: load it with mlflow.pyfunc.load_model('models:/tiny-style/1')" in printed
    client = MlflowClient(tracking_uri=tuned["uri"])
    version = client.get_model_version("tiny-style", "1")
    best = tuned["study"].best_trial
    assert version.tags["autolora.study"] == "rep" and version.tags["autolora.trial"] == str(best.number)
    assert float(version.tags["autolora.value.0"]) == pytest.approx(best.values[0])
    run = client.get_run(version.run_id)
    assert run.data.tags["mlflow.parentRunId"] == tuned["study"].user_attrs["autolora.mlflow_parent_run_id"]

    assert client.get_run(version.run_id).info.status == "FINISHED"
    image = _generate_from_registry("models:/tiny-style/1", tuned["uri"], monkeypatch)
    assert image.size == (32, 32)
    assert np.asarray(image).std() > 0, "the registered model generated a flat picture"

    # Registering again makes version 2; a bad name is refused before anything is written.
    assert main(["export", str(tuned["run"]), "--out", str(tmp_path / "f"), "--register-model", "tiny-style"]) == 0
    assert "version 2" in capsys.readouterr().out
    assert main(["export", str(tuned["run"]), "--out", str(tmp_path / "g"), "--register-model", "bad/name"]) == 2
    assert "--register-model 'bad/name'" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
