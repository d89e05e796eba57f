"""The extension point of adapter methods: how a trial's spec becomes a peft config, and how its weights go out.

A method is a small strategy class registered in ``autolora.methods``. Every method shares the trial's way of
working (attach with ``peft.inject_adapter_in_model``, train the parameters peft marks trainable, keep the peft
state dict, detach with the base layers put back), so a method says only what differs: the peft config it builds,
the config class that reads a kept config back, and the key layout of the kohya/LyCORIS file A1111 and ComfyUI
load. Methods that are not a peft tuner (textual inversion, DreamBooth) are not in this interface yet.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig


class Settings(Protocol):
    """A trial's settings by search-space name (``autolora.tune.search.LoraSpec`` is one)."""

    def __getitem__(self, key: str) -> Any: ...


@dataclass(frozen=True)
class KohyaModule:
    """One adapted module as the kohya/LyCORIS file holds it: ``<name>.<key>`` tensors plus ``<name>.alpha``."""

    comp: str
    name: str
    tensors: dict[str, torch.Tensor]
    """Key suffix (``lora_down.weight``, ``hada_w1_a``, ``lokr_w1``...) -> tensor."""
    alpha: float | None
    """The ``.alpha`` to write; None writes none (a reader then scales by 1)."""
    rank: int
    is_conv3: bool = False


class Method(ABC):
    """An adapter method: ``name`` in search spaces, ``peft_type`` in kept configs."""

    name: ClassVar[str]
    peft_type: ClassVar[str]
    """``PeftConfig.peft_type`` as a kept config's dict spells it (``LORA``, ``LOHA``, ``LOKR``)."""
    lycoris_algo: ClassVar[str] = ""
    """LyCORIS's name of the algorithm (``ss_network_args.algo``); empty for plain LoRA."""

    @abstractmethod
    def config(self, spec: Settings, modules: list[str], rank_of: Mapping[str, int]) -> PeftConfig:
        """The peft config of the denoiser's adapter (``rank_of``: per-module ranks that differ from the spec's)."""

    @abstractmethod
    def text_encoder_config(self, spec: Settings, modules: list[str]) -> PeftConfig:
        """The peft config of a text encoder's adapter."""

    @abstractmethod
    def config_class(self) -> type[PeftConfig]:
        """The peft config class a kept config dict is read back with."""

    def kohya_modules(
        self, comp: str, name_of: Mapping[str, str], state: Mapping[str, torch.Tensor], config: Mapping[str, Any]
    ) -> list[KohyaModule]:
        """The state dict of one component in the LyCORIS layout (``name_of``: peft module -> kohya name).

        Plain LoRA's kohya file is written by ``autolora.export`` (per-module alphas, SDXL and Flux names), so
        only the LyCORIS methods implement this. Raises ``UserError`` for a weight the format has no place for.
        """
        raise NotImplementedError(f"{self.name}: its kohya file is written by autolora.export")

    def read_config(self, config: Mapping[str, Any]) -> PeftConfig:
        """A kept config dict as this method's peft config (fields this peft does not know are dropped)."""
        cls = self.config_class()
        return cls(**{k: v for k, v in config.items() if k in cls.__dataclass_fields__ and k != "peft_type"})


def modules_of(state: Mapping[str, Any], suffixes: tuple[str, ...]) -> list[str]:
    """The module names of a peft state dict whose keys end in one of ``suffixes`` (``<module>.<suffix>``)."""
    found = {k.rsplit(".", 1)[0] for k in state if k.rsplit(".", 1)[-1] in suffixes}
    return sorted(found)


def pattern_value(patterns: Mapping[str, Any] | None, module: str, default: Any) -> Any:
    """peft's lookup of ``rank_pattern``/``alpha_pattern``: the first key matching the end of the module name."""
    import re

    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default
