"""The measured block prior's probes: ``explain``'s readings of each LoRA run as fixed trials of a fusion run.

For every LoRA of a run whose layout has no published style/content blocks: the LoRA alone at full strength
(``probe:<lora>:full``), then each of its block groups alone (``probe:<lora>:alone:<group>``) and left out
(``probe:<lora>:without:<group>``), the other LoRAs off: the coefficients ``autolora explain`` draws
(``explain.groups``). Each probe trial keeps its per-seed readings (``READING_ATTR``), and the LoRA's map is built
from them with ``explain``'s arithmetic (``explain.reading.StyleMap``): a group's share of the style is the mean of
its normalised style alone and its normalised loss when left out. The style reading is the LoRA's own
``style_gain.<lora>`` against its references (the fusion judge's; the base model reads 0 by construction), the
content reading ``content_text_delta``.

So the block prior and ``autolora explain`` are one measurement: ``explain`` run with the fusion judge.
"""

from __future__ import annotations

from collections.abc import Mapping

from autolora.explain.groups import Coefficients, alone, constant, without
from autolora.explain.reading import GroupReading, Reading, StyleMap
from autolora.loras.groups import TEXT_ENCODERS, key_order

READING_ATTR = "per_seed"
"""The trial attribute holding a probe's readings: metric -> one value per seed."""
CONTENT = "content_text_delta"
VIEWS = ("alone", "without")


def is_text(key: str) -> bool:
    return key.split(".")[0] in TEXT_ENCODERS


def probe_names(lora: str, keys: list[str]) -> list[str]:
    """The probes of one LoRA over its block group keys: full, then each group alone and without."""
    return [f"probe:{lora}:full"] + [f"probe:{lora}:{view}:{key}" for key in keys for view in VIEWS]


def parse(name: str) -> tuple[str, str, str]:
    """``probe:<lora>:<view>[:<group>]`` -> (lora, view, group; ``""`` for the full reading)."""
    kind, lora, rest = (name.split(":", 2) + ["", ""])[:3]
    view, _, group = rest.partition(":")
    if kind != "probe" or view not in ("full", *VIEWS) or (view != "full") != bool(group):
        raise ValueError(f"not a probe: {name!r}; expected probe:<lora>:full or probe:<lora>:alone|without:<group>")
    return lora, view, group


def probe_coefficients(name: str, block_keys: Mapping[str, list[str]]) -> dict[str, Coefficients]:
    """The coefficients of every LoRA for probe ``name``: the probed LoRA as ``explain`` reads it, the others off."""
    lora, view, group = parse(name)
    keys = block_keys[lora]
    mine = constant(keys, 1.0) if view == "full" else alone(keys, group) if view == "alone" else without(keys, group)
    return {other: mine if other == lora else constant(ks, 0.0) for other, ks in block_keys.items()}


def maps_of(readings: Mapping[str, Mapping[str, dict[str, list[float]]]]) -> dict[str, StyleMap]:
    """LoRA -> its map, from LoRA -> ``<view>[:<group>]`` -> per-seed readings (the probes finished so far; a LoRA
    without its full reading, or a group without both views, is left out)."""
    out = {}
    for lora, views in readings.items():
        if "full" not in views:
            continue
        metric = f"style_gain.{lora}"
        full = Reading(views["full"])
        zeros = [0.0] * len(full.per_seed[metric])
        base = Reading({metric: zeros, CONTENT: zeros})  # gains and deltas are against the base model: 0 there
        keys = sorted({v.partition(":")[2] for v in views if v != "full"}, key=key_order)
        groups = [
            GroupReading(k, Reading(views[f"alone:{k}"]), Reading(views[f"without:{k}"]))
            for k in keys
            if f"alone:{k}" in views and f"without:{k}" in views
        ]
        out[lora] = StyleMap("block", metric, [CONTENT], base, full, groups, "style images")
    return out


def prior_shares(maps: Mapping[str, StyleMap]) -> dict[str, dict[str, float]]:
    """LoRA -> UNet/transformer block -> its share of that LoRA's style (text encoders are not assigned: both
    LoRAs keep theirs at 1)."""
    return {lora: {k: v for k, v in m.shares().items() if not is_text(k)} for lora, m in maps.items()}
