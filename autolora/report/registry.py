"""The MLflow Model Registry: an exported LoRA logged with MLflow's own ``mlflow.diffusers`` flavour (adapter
weights plus a reference to the base model, and a pyfunc that generates images) and registered as a new version.

The model is logged in its own run under the study's parent run (``register-trial<N>``), so the trial's run keeps
its record untouched; the version carries tags ``autolora.study``, ``autolora.trial``, ``autolora.base_model`` and
the trial's objective values and scores. A built-in base model (``builtin:miniworld``) is referenced by its
assembled folder on this machine; elsewhere pass ``model_config={"base_model": ...}`` to
``mlflow.pyfunc.load_model``, as MLflow's own message says.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from autolora.core.study import ATTR
from autolora.errors import UserError
from autolora.jobs import job_class, kind_of
from autolora.models.builtin import builtin_path, is_builtin

PARENT_TAG = "mlflow.parentRunId"


def check_model_name(name: str, flag: str = "--register-model") -> str:
    """A registered model name MLflow and its UI handle everywhere: letters, digits, ``_ - .`` and spaces."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_. -]{0,255}", name or ""):
        raise UserError(f"{flag} {name!r}: expected letters, digits, '_', '-', '.' or spaces (like my-style-lora)")
    return name


def base_reference(source: str) -> str:
    """What ``DiffusionPipeline.from_pretrained`` loads the base from: a hub id as given, a folder absolute."""

    if is_builtin(source):
        return str(builtin_path(source).resolve())
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def register_export(
    paths: dict[str, Path], name: str, study: Any, tracking_uri: str | None = None
) -> tuple[str, str, str]:
    """Log the exported diffusers LoRA of ``paths`` (from ``autolora export``) and register it under ``name``.

    Returns (model name, version, ``models:/`` URI).
    """
    import tempfile

    import mlflow.diffusers
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    check_model_name(name)
    if "diffusers" not in paths or "info" not in paths:
        raise UserError(f"--register-model: this export wrote no diffusers LoRA ({', '.join(paths)})")
    info = json.loads(paths["info"].read_text(encoding="utf-8"))
    uri = tracking_uri or study.user_attrs.get(ATTR + "mlflow_uri")
    if not uri:
        raise UserError("--register-model: the study records no MLflow tracking URI; pass --mlflow-uri")
    source = str((info.get("base") or {}).get("source") or "")
    if not source:
        raise UserError(f"--register-model: {paths['info']} names no base model")
    if "diffusers" not in paths:
        raise UserError(
            "--register-model: MLflow's diffusers flavour loads a LoRA file, and this adapter has none (LoHa/LoKr "
            "go out as LyCORIS and peft files); the files above are exported, register them by hand"
        )
    base = base_reference(source)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = study.user_attrs.get(ATTR + "mlflow_experiment_id")
    if not experiment_id:  # --mlflow-uri elsewhere: the study's experiment there, made if need be
        found = client.get_experiment_by_name(f"autolora/{study.study_name}")
        experiment_id = found.experiment_id if found else client.create_experiment(f"autolora/{study.study_name}")
    trial = info.get("trial")
    tags = {"mlflow.runName": f"register-trial{trial}", "autolora.study": str(study.study_name)}
    parent = study.user_attrs.get(ATTR + "mlflow_parent_run_id")
    if parent:
        tags[PARENT_TAG] = str(parent)
    run = client.create_run(experiment_id, tags=tags)
    # MLflow's fluent API (mlflow.diffusers.log_model) would set the process-wide tracking URI and active run;
    # save_model + the client keeps both untouched for whatever else runs in this process.
    with tempfile.TemporaryDirectory(prefix="autolora-mlflow-") as tmp:
        local = Path(tmp) / "adapter"
        mlflow.diffusers.save_model(
            adapter_path=str(paths["diffusers"]),
            path=str(local),
            base_model=base,
            metadata={"autolora": {"study": info.get("study"), "trial": trial, "values": info.get("values")}},
        )
        client.log_artifacts(run.info.run_id, str(local), "adapter")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version_tags = {
        "autolora.study": str(info.get("study")),
        "autolora.trial": str(trial),
        "autolora.base_model": source,
        **{f"autolora.value.{i}": str(v) for i, v in enumerate(info.get("values") or [])},
        **{f"autolora.score.{k}": str(v) for k, v in _scores(info).items()},
    }
    created = client.create_model_version(
        name,
        f"runs:/{run.info.run_id}/adapter",
        run_id=run.info.run_id,
        tags={k: v[:5000] for k, v in version_tags.items()},
    )
    version = str(created.version)
    return name, version, f"models:/{name}/{version}"


def _scores(info: dict[str, Any]) -> dict[str, Any]:
    found = info.get("scores") or info.get("metrics") or {}
    return {k: v for k, v in found.items() if isinstance(v, (int, float, str))}


def register_best(study: Any, run_dir: Path | None, name: str, tracking_uri: str | None = None) -> tuple[str, str, str]:
    """Export the study's best trial into a scratch folder and register it (``tune``/``fuse --register-model``)."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="autolora-register-"))
    try:
        paths = job_class(kind_of(study)).export(study, run_dir, None, scratch / "export", None, None)
        return register_export(paths, name, study, tracking_uri)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
