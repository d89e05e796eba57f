"""Dynamic Layer-wise Fusion (DLF): several style LoRAs on one pipeline, mixed per layer without reloading.

The engine and what ``autolora fuse`` builds on it, one concept per module:

* ``groups``: the group keys of the granularities ``global``, ``block`` and ``layer``;
* ``files``: cheap header checks of a LoRA file (readable, a LoRA, made for this base model);
* ``engine``: ``load_loras`` -> ``FusedAdapters`` (per-module coefficients by scaling peft's ``scaling``);
* ``schedule``: ``TwoPhase``, early (layout) and late (detail) coefficient sets in one generation;
* ``fused`` and ``rank``: the fusion as one exact LoRA (ranks concatenated), and its SVD rank reduction;
* ``translate``: block coefficients as diffusers ``set_adapters`` weights and A1111 lora-block-weight vectors;
* ``config``, ``space``, ``plan``, ``session``, ``trial``, ``study``, ``summary``, ``exporting``, ``cli``: the
  ``autolora fuse`` command (an Optuna study over coefficients), its report and its export.
"""

from autolora.fuse.engine import FusedAdapters, load_loras, unload
from autolora.fuse.facts import base_facts
from autolora.fuse.files import check_lora_file
from autolora.fuse.groups import GRANULARITIES, TEXT_ENCODERS, Coefficients
from autolora.fuse.one_lora import fused_adapter
from autolora.fuse.rank import reduce_rank
from autolora.fuse.schedule import TwoPhase
from autolora.fuse.translate import A1111_SLOTS

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
