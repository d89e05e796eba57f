"""Keep library chatter (progress bars of weight loading, INFO logs, experimental warnings) off the terminal."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    """Silence what the field's libraries print that says nothing to an autolora user."""
    # mlflow configures its own loggers when it is imported (later, lazily): tell it through its env var.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import diffusers
    import optuna
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Already found a `peft_config`.*")
    # fuse's CMA-ES samples without the constraints (docs/fuse.md); they still decide which blends can be best.
    warnings.filterwarnings("ignore", message="Constraints have been set, but CmaEsSampler will not use them.*")
    for name in ("mlflow", "alembic", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.WARNING)
