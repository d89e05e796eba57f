"""Group keys: which coefficient of a fusion scales which module, at each granularity.

* ``global``: one key, ``all``.
* ``block``: ``down.N``, ``mid``, ``up.N`` (``autolora.models.layers.block_of``), ``unet`` for UNet modules outside
  the blocks (``conv_in``, ``time_embedding``...), and one key per text encoder, ``text_encoder`` and (SDXL)
  ``text_encoder_2``.
* ``layer``: one key per transformer (or resnet/sampler) unit of a block, ``down.1.attentions.0``,
  ``mid.attentions.0``, ``up.0.resnets.2``; ``unet.conv_in`` etc. outside the blocks; one per text-encoder layer,
  ``text_encoder.layers.5`` (``text_encoder.other`` for embeddings/projection). A transformer unit rather than
  single projections keeps the search space at tens of parameters instead of hundreds.

SD3 and Flux transformers (component ``transformer``, ``autolora.models.dit_layers``): ``block`` keys are the
transformer blocks, ``double.3`` (SD3's joint blocks too) and ``single.12``, and ``transformer`` for modules
outside them; ``layer`` keys one layer kind of a block, ``double.3.attn``, ``double.3.context_attn``,
``double.3.ff``, ``double.3.context_ff``, ``double.3.norm``, ``single.12.ff``.
"""

from __future__ import annotations

import re

from autolora.models import dit_layers
from autolora.models.layers import block_of

GRANULARITIES = ("global", "block", "layer")
Coefficients = dict[str, dict[str, float]]
"""LoRA name -> group key -> coefficient."""

TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
COMPONENTS = ("unet", "transformer", *TEXT_ENCODERS)
_TE_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_HEAD_ORDER = {
    "all": 0,
    "down": 1,
    "mid": 2,
    "up": 3,
    "unet": 4,
    "double": 1,
    "single": 2,
    "transformer": 4,
    "text_encoder": 5,
    "text_encoder_2": 6,
}


def key_order(key: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key for group keys: UNet path order first, numbers compared as numbers (``up.10`` after ``up.9``)."""
    head, *rest = key.split(".")
    return ((0, _HEAD_ORDER.get(head, 9)), *((0, int(p)) if p.isdigit() else (1, p) for p in rest))


def check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r}: expected one of {', '.join(GRANULARITIES)}")


def groups_of(component: str, name: str) -> dict[str, str]:
    """The group key of a module at every granularity."""
    if component == "transformer":
        found_dit = dit_layers.block_of(name)
        kind = dit_layers.layer_of(name)
        if found_dit is None:
            return {"global": "all", "block": "transformer", "layer": f"transformer.{name.split('.')[0]}"}
        block = f"{found_dit[0]}.{found_dit[1]}"
        return {"global": "all", "block": block, "layer": f"{block}.{kind[0] if kind else 'other'}"}
    if component != "unet":
        layer = _TE_LAYER.search(name)
        return {
            "global": "all",
            "block": component,
            "layer": f"{component}.layers.{layer[1]}" if layer else f"{component}.other",
        }
    parts = name.split(".")
    found = block_of(name)
    if found is None:
        return {"global": "all", "block": "unet", "layer": f"unet.{parts[0]}"}
    side, level = found
    if side == "mid":
        return {"global": "all", "block": "mid", "layer": f"mid.{parts[1]}.{parts[2]}"}
    return {"global": "all", "block": f"{side}.{level}", "layer": f"{side}.{level}.{parts[2]}.{parts[3]}"}
