"""Adapter methods, registered by name (search spaces' ``method``) and by peft type (kept configs).

``lora`` (with DoRA / rsLoRA variants), ``loha`` and ``lokr`` are peft tuners; each is a ``Method`` strategy
(``autolora.methods.base``) that builds its peft config and lays out its LyCORIS keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autolora.methods.base import KohyaModule, Method
from autolora.methods.loha import LoHa
from autolora.methods.lokr import LoKr
from autolora.methods.lora import Lora

__all__ = ["METHODS", "KohyaModule", "Method", "get", "method_of"]


def _register(*methods: Method) -> dict[str, Method]:
    out: dict[str, Method] = {}
    for m in methods:
        if m.name in out or any(o.peft_type == m.peft_type for o in out.values()):
            raise ValueError(f"method {m.name!r} ({m.peft_type}) registered twice")
        out[m.name] = m
    return out


METHODS: dict[str, Method] = _register(Lora(), LoHa(), LoKr())


def get(name: str) -> Method:
    """The method called ``name`` (a search space's ``method`` value, validated there)."""
    return METHODS[name]


def method_of(config: Mapping[str, Any]) -> Method:
    """The method of a kept peft config dict, by its ``peft_type`` (a config without one is a LoRA)."""
    peft_type = str(config.get("peft_type") or "LORA").removeprefix("PeftType.")
    for m in METHODS.values():
        if m.peft_type == peft_type:
            return m
    raise ValueError(f"adapter method {peft_type!r} is not one autolora knows ({', '.join(METHODS)})")
