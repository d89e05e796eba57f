"""Dynamic Layer-wise Fusion (DLF): several style LoRAs on one pipeline, mixed per layer without reloading.

The machinery of loaded LoRAs (group keys, header checks, ``load_loras`` -> ``FusedAdapters``, the two-phase
schedule, folding a fusion into one exact LoRA, SVD rank reduction, block weights in other tools' terms) lives in
``autolora.loras``, shared with ``autolora explain``; the names below are re-exported from there. What
``autolora fuse`` builds on it, one concept per module: ``config``, ``space``, ``plan``, ``session``, ``trial``,
``studies``, ``baselines``, ``klora``, ``warm``, ``summary``, ``exporting``, ``cli``: an Optuna study over
coefficients, its report and its export.
"""

from autolora.loras.engine import FusedAdapters, load_loras, unload
from autolora.loras.facts import base_facts
from autolora.loras.files import check_lora_file
from autolora.loras.folded import fused_adapter
from autolora.loras.groups import GRANULARITIES, TEXT_ENCODERS, Coefficients
from autolora.loras.rank import reduce_rank
from autolora.loras.schedule import TwoPhase
from autolora.loras.translate import A1111_SLOTS

__all__ = [
    "A1111_SLOTS",
    "GRANULARITIES",
    "TEXT_ENCODERS",
    "Coefficients",
    "FusedAdapters",
    "TwoPhase",
    "base_facts",
    "check_lora_file",
    "fused_adapter",
    "load_loras",
    "reduce_rank",
    "unload",
]
