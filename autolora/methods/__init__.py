"""Adapter methods, registered by name (search spaces' ``method``) and by type (kept configs' ``peft_type``).

``lora`` (with DoRA / rsLoRA variants), ``loha`` and ``lokr`` are peft tuners (``PeftMethod``);
``textual_inversion`` learns token embeddings; ``pivotal`` trains both; ``dreambooth`` fine-tunes the chosen
modules of the denoiser in full. Each is a ``Method`` strategy
(``autolora.methods.base``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from autolora.methods.base import KohyaModule, Method, PeftMethod
from autolora.methods.dreambooth import DreamBooth
from autolora.methods.loha import LoHa
from autolora.methods.lokr import LoKr
from autolora.methods.lora import Lora
from autolora.methods.textual_inversion import Pivotal, TextualInversion
from autolora.models.family import denoiser

__all__ = [
    "METHODS",
    "KohyaModule",
    "Method",
    "PeftMethod",
    "base_view",
    "get",
    "kept_method",
    "load_kept",
    "method_of",
]


def _register(*methods: Method) -> dict[str, Method]:
    out: dict[str, Method] = {}
    for m in methods:
        if m.name in out or any(o.peft_type == m.peft_type for o in out.values()):
            raise ValueError(f"method {m.name!r} ({m.peft_type}) registered twice")
        out[m.name] = m
    return out


METHODS: dict[str, Method] = _register(Lora(), LoHa(), LoKr(), TextualInversion(), Pivotal(), DreamBooth())


def get(name: str) -> Method:
    """The method called ``name`` (a search space's ``method`` value, validated there)."""
    return METHODS[name]


def method_of(config: Mapping[str, Any]) -> Method:
    """The method of one kept component's config, by its ``peft_type`` (a config without one is a LoRA)."""
    peft_type = str(config.get("peft_type") or "LORA").removeprefix("PeftType.")
    for m in METHODS.values():
        if m.peft_type == peft_type:
            return m
    raise ValueError(f"adapter method {peft_type!r} is not one autolora knows ({', '.join(METHODS)})")


def kept_method(configs: Mapping[str, Mapping[str, Any]]) -> Method:
    """The method of a whole kept adapter: its components' one method, or pivotal (a LoRA + the tokens).

    Raises ValueError for a mix no method makes.
    """
    names = {method_of(c).name for c in configs.values()}
    if names == {"lora", "textual_inversion"}:
        return METHODS["pivotal"]
    if len(names) != 1:
        raise ValueError(f"the adapter's components mix methods ({', '.join(sorted(names))})")
    return METHODS[names.pop()]


def load_kept(pipe: Any, configs: Mapping[str, Mapping[str, Any]], states: Mapping[str, Any], name: str) -> list[str]:
    """Attach a kept adapter to the pipeline as ``name``; return the components (``kept_method(...).detach``
    takes them off again). A failure half-way takes off what was attached."""
    method = kept_method(configs)
    attached: list[str] = []
    try:
        for comp, config in configs.items():
            method.load(pipe, comp, config, states[comp], name)
            attached.append(comp)
    except BaseException:
        method.detach(pipe, name, attached)
        raise
    return attached


@contextmanager
def base_view(pipe: Any) -> Iterator[None]:
    """The pipeline's denoiser as the base model for the duration: every peft tuner layer on it switched off (a
    trial's LoRA, LoHa or LoKr, a fusion's loaded LoRAs) and DreamBooth's fine-tuned modules holding their original
    weights; all put back as they were afterwards. For reads that must not see the adapter (the base model's own
    style features, ``autolora.models.features``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = denoiser(pipe)
    # peft's ``enable_adapters(True)`` would also mark the active adapter's weights trainable again; the flag its
    # layers' forward reads is toggled instead, so the read changes nothing a trial's optimiser sees.
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer) and not m.disable_adapters]
    for layer in layers:
        layer._disable_adapters = True
    try:
        with DreamBooth.base_weights(model):
            yield
    finally:
        for layer in layers:
            layer._disable_adapters = False
