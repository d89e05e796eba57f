"""The extension point of adapter methods: attach to the loaded pipeline, say what trains, keep, detach.

A method is a small strategy class registered in ``autolora.methods``. A trial calls, in order: ``attach`` (the
adapter goes onto the pipeline's components, base weights untouched), ``param_groups`` (what the optimiser
trains, at which learning rate), ``prompt`` (how the trigger is spelled for this method, for training captions
and evaluation prompts), ``after_step`` (after each optimiser step), ``weights`` (a copy of the adapter, at each
improving rung), ``kept_configs`` (what the kept adapter's ``adapter.json`` records per component) and ``detach``
(the base put back bit-identically).

A kept adapter is reloaded component by component: ``load``/``unload`` of the method its config names
(``method_of``), which is how the confirmation stage and the benchmarks draw a kept trial again.

``PeftMethod`` is the base of the peft tuners (LoRA, LoHa, LoKr): a method there says only which peft config
it builds and how its keys are laid out in the kohya/LyCORIS file A1111 and ComfyUI load.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from autolora.adapter import adapter_state_dict, attach, config_to_dict, detach, load_into
from autolora.methods.param import Param
from autolora.models.family import denoiser_name
from autolora.models.layers import TEXT_ENCODER_TARGETS

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig

TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
TOKENIZERS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}


class Settings(Protocol):
    """A trial's settings by search-space name and the modules it targets (``autolora.tune.search.LoraSpec``)."""

    modules: list[str]

    def __getitem__(self, key: str) -> Any: ...

    def rank_pattern(self) -> dict[str, int]: ...


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


def text_encoders(pipe: Any) -> list[str]:
    """The pipeline's text encoders (``text_encoder``, ``text_encoder_2``) that are present."""
    return [n for n in TEXT_ENCODERS if getattr(pipe, n, None) is not None]


class Method(ABC):
    """An adapter method: ``name`` in search spaces, ``peft_type`` in kept configs."""

    name: ClassVar[str]
    peft_type: ClassVar[str]
    """A kept config's ``peft_type`` (``LORA``, ``LOHA``, ``LOKR``; ``TEXTUAL_INVERSION`` is autolora's own)."""
    learns_tokens: ClassVar[bool] = False
    """True when ``prompt`` rewrites the trigger (captions are then encoded at every training step)."""
    params: ClassVar[dict[str, Param]] = {}
    """The settings only this method reads (LoKr's ``lokr_factor``...), declared here and searchable by name in
    any search space that can train the method (``autolora.tune.search`` assembles them)."""
    reads: ClassVar[frozenset[str]] = frozenset()
    """Which of the settings only some methods read (``autolora.tune.search.SHARED``: rank, learning_rate,
    text_encoder...) this one reads; a setting no method lists is read by all."""
    files: ClassVar[str] = "lora"
    """What ``autolora export`` writes of it (``autolora.formats.export.WRITERS``): ``lora`` (the diffusers and
    kohya files, with the learnt tokens' embedding beside them when ``learns_tokens``), ``lycoris`` (the LyCORIS
    file and peft's folders), ``embedding`` (one embedding file), ``denoiser`` (the fine-tuned denoiser and a LoRA
    extracted from it)."""

    def describe(self, values: Mapping[str, Any]) -> list[str]:
        """This method's own settings as a trial's one-line summary shows them (``factor=4``), after its name."""
        return []

    @abstractmethod
    def attach(self, pipe: Any, spec: Settings, name: str, attached: list[str]) -> None:
        """Put the trial's adapter on the pipeline as ``name``; append each component as it is done (so that
        ``detach`` undoes a half-done attach)."""

    @abstractmethod
    def load(
        self, pipe: Any, comp: str, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], name: str
    ) -> None:
        """Attach a kept component (its config and weights) as adapter ``name``."""

    @abstractmethod
    def unload(self, pipe: Any, comp: str, name: str) -> None:
        """Remove adapter ``name`` from ``comp`` and put its base layers back bit-identically."""

    @abstractmethod
    def state(self, pipe: Any, comp: str, name: str) -> dict[str, torch.Tensor]:
        """The trained weights of adapter ``name`` on ``comp`` (detached copies)."""

    @abstractmethod
    def kept_configs(self, spec: Settings, attached: list[str]) -> dict[str, dict[str, Any]]:
        """Component -> the config its kept weights are reloaded with (a dict with ``peft_type``)."""

    def detach(self, pipe: Any, name: str, attached: list[str]) -> None:
        for comp in reversed(attached):
            self.unload(pipe, comp, name)

    def weights(self, pipe: Any, name: str, attached: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        return {comp: self.state(pipe, comp, name) for comp in attached}

    def param_groups(self, pipe: Any, spec: Settings, attached: list[str]) -> list[dict[str, Any]]:
        """The optimiser's parameter groups (``params``, ``lr``, optionally ``weight_decay``): the denoiser's
        trainable weights at ``learning_rate``, a text encoder's at ``learning_rate * text_encoder_lr_ratio``."""
        lr = float(spec["learning_rate"])
        groups = []
        for comp in attached:
            params = [p for p in getattr(pipe, comp).parameters() if p.requires_grad]
            scale = float(spec["text_encoder_lr_ratio"]) if comp in TEXT_ENCODERS else 1.0
            if params:
                groups.append({"params": params, "lr": lr * scale})
        return groups

    def trainable_count(self, pipe: Any, spec: Settings, attached: list[str]) -> int:
        return sum(p.numel() for g in self.param_groups(pipe, spec, attached) for p in g["params"])

    def spelled_trigger(self, trigger: str, identifier: str = "") -> str:
        """The trigger as this method's trials write it (textual inversion: with its learnt tokens in it)."""
        return trigger

    def prompt(self, text: str, trigger: str, identifier: str = "") -> str:
        """The prompt as this method's trial spells it (textual inversion writes its learnt tokens in place of
        ``identifier``, a word of ``trigger``)."""
        return text

    def after_step(self, pipe: Any, spec: Settings, attached: list[str]) -> None:  # noqa: B027 (optional hook)
        """Called after each optimiser step, under ``torch.no_grad``: a method that constrains its trained
        weights (textual inversion's retraction) does it here. Nothing by default."""


class PeftMethod(Method):
    """A peft tuner: attached with ``peft.inject_adapter_in_model`` to the denoiser (and, with ``text_encoder``,
    to the text encoders), detached with the original layers put back (``autolora.adapter``)."""

    reads = frozenset(
        {
            "rank",
            "alpha_ratio",
            "rank_scale_down",
            "rank_scale_mid",
            "rank_scale_up",
            "scaled_learning_rate",
            "learning_rate",
            "text_encoder",
            "text_encoder_lr_ratio",
        }
    )
    lycoris_algo: ClassVar[str] = ""
    """LyCORIS's name of the algorithm (``ss_network_args.algo``); empty for plain LoRA."""

    @abstractmethod
    def config(self, spec: Settings, modules: list[str], rank_of: Mapping[str, int]) -> PeftConfig:
        """The peft config of the denoiser's adapter (``rank_of``: per-module ranks that differ from the spec's)."""

    def text_encoder_config(self, spec: Settings, modules: list[str]) -> PeftConfig:
        """The peft config of a text encoder's adapter: the denoiser's settings, no per-group ranks."""
        return self.config(spec, modules, {})

    @abstractmethod
    def config_class(self) -> type[PeftConfig]:
        """The peft config class a kept config dict is read back with."""

    def kohya_modules(
        self, comp: str, name_of: Mapping[str, str], state: Mapping[str, torch.Tensor], config: Mapping[str, Any]
    ) -> list[KohyaModule]:
        """The state dict of one component in the LyCORIS layout (``name_of``: peft module -> kohya name).

        Plain LoRA's kohya file is written by ``autolora.formats`` (per-module alphas, SDXL and Flux names), so
        only the LyCORIS methods implement this. Raises ``UserError`` for a weight the format has no place for.
        """
        raise NotImplementedError(f"{self.name}: its kohya file is written by autolora.formats")

    def lycoris_args(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """What the LyCORIS file's ``ss_network_args`` records of a kept config besides ``algo`` and ``preset``."""
        return {}

    def read_config(self, config: Mapping[str, Any]) -> PeftConfig:
        """A kept config dict as this method's peft config (fields this peft does not know are dropped)."""
        cls = self.config_class()
        return cls(**{k: v for k, v in config.items() if k in cls.__dataclass_fields__ and k != "peft_type"})

    def denoiser_config(self, spec: Settings) -> PeftConfig:
        return self.config(spec, list(spec.modules), spec.rank_pattern())

    def attach(self, pipe: Any, spec: Settings, name: str, attached: list[str]) -> None:
        main = denoiser_name(pipe)
        attach(getattr(pipe, main), self.denoiser_config(spec), name)
        attached.append(main)
        if spec["text_encoder"]:
            for comp in text_encoders(pipe):
                attach(getattr(pipe, comp), self.text_encoder_config(spec, list(TEXT_ENCODER_TARGETS)), name)
                attached.append(comp)

    def load(
        self, pipe: Any, comp: str, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], name: str
    ) -> None:
        load_into(getattr(pipe, comp), self.read_config(config), dict(state), name)

    def unload(self, pipe: Any, comp: str, name: str) -> None:
        detach(getattr(pipe, comp), name)

    def state(self, pipe: Any, comp: str, name: str) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in adapter_state_dict(getattr(pipe, comp), name).items()}

    def kept_configs(self, spec: Settings, attached: list[str]) -> dict[str, dict[str, Any]]:
        return {
            comp: config_to_dict(
                self.text_encoder_config(spec, list(TEXT_ENCODER_TARGETS))
                if comp in TEXT_ENCODERS
                else self.denoiser_config(spec)
            )
            for comp in attached
        }


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
