"""Pictures kept with the study itself, in Optuna's artifact store (``<run>/artifacts``).

Every trial's sample grid (one per evaluation) and the study's base-model grid are uploaded with
``optuna.artifacts.upload_artifact``, so optuna-dashboard (``autolora dashboard``) shows them beside the
numbers and ``autolora report`` puts them side by side, without MLflow. Names: ``base.png`` and
``references.png`` on the study, ``samples_step_00040.png`` (tune) or ``samples.png`` (fuse) on a trial.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from PIL import Image

ARTIFACT_DIR = "artifacts"


def artifact_store(run_dir: Path) -> Any:
    """The study's ``FileSystemArtifactStore`` (the folder is created on first use)."""
    from optuna.artifacts import FileSystemArtifactStore

    folder = Path(run_dir) / ARTIFACT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def upload_image(
    run_dir: Path, target: optuna.Trial | optuna.Study | optuna.trial.FrozenTrial, image: Image.Image, name: str
) -> str:
    """Upload ``image`` as PNG ``name`` to the study or trial ``target``; returns the artifact id."""
    from optuna.artifacts import upload_artifact

    with tempfile.TemporaryDirectory(prefix="autolora-artifact-") as folder:
        path = Path(folder) / name  # upload_artifact names the artifact after the file
        image.save(path, format="PNG")
        store = artifact_store(run_dir)
        return str(
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=target, mimetype="image/png")
        )


def has_artifact(target: optuna.Study | optuna.trial.FrozenTrial, name: str, storage: Any = None) -> bool:
    from optuna.artifacts import get_all_artifact_meta

    return any(m.filename == name for m in get_all_artifact_meta(target, storage=storage))


def images(
    target: optuna.Study | optuna.trial.FrozenTrial, run_dir: Path, storage: Any = None
) -> dict[str, Image.Image]:
    """The PNG artifacts of ``target`` by file name (the last upload of a name wins); missing files are skipped."""
    import io

    from optuna.artifacts import get_all_artifact_meta
    from optuna.artifacts.exceptions import ArtifactNotFound
    from PIL import Image

    if not (Path(run_dir) / ARTIFACT_DIR).is_dir():
        return {}
    store = artifact_store(run_dir)
    out: dict[str, Image.Image] = {}
    for meta in get_all_artifact_meta(target, storage=storage):
        if meta.mimetype != "image/png":
            continue
        try:
            with store.open_reader(meta.artifact_id) as f:
                data = f.read()
        except ArtifactNotFound:
            continue
        with Image.open(io.BytesIO(data)) as im:
            out[meta.filename] = im.convert("RGB")
    return out


def last_samples(found: dict[str, Image.Image], step: int | None = None) -> Image.Image | None:
    """A trial's result grid: ``samples.png``, else ``samples_step_<step>.png`` (a tune trial's ``best_step``: its
    result is its best rung), else the ``samples_step_N.png`` with the largest N."""
    if "samples.png" in found:
        return found["samples.png"]
    if step is not None and f"samples_step_{step:05d}.png" in found:
        return found[f"samples_step_{step:05d}.png"]
    steps = sorted((int(m.group(1)), k) for k in found if (m := re.fullmatch(r"samples_step_(\d+)\.png", k)))
    return found[steps[-1][1]] if steps else None
