"""DreamBooth (Ruiz et al. 2023): the chosen modules of the denoiser fine-tuned in full.

The modules are the trial's targets (``target_blocks`` x ``target_layers`` x ``target_projections``, as for a
LoRA); every weight and bias of theirs trains at ``learning_rate``. DreamBooth's prior-preservation loss (the
base model's own class pictures, drawn once per study) is ``prior_weight`` in the search space, open to every
method. Attach keeps a CPU copy of the modules' weights; detach puts the copy back (dtype included), so the base
is bit-identical afterwards. A kept DreamBooth trial holds the fine-tuned weights of those modules; export
writes the whole fine-tuned UNet and a LoRA extracted from the difference (``autolora.formats.extract``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from autolora.methods.base import Method, Settings
from autolora.models.family import denoiser_name

if TYPE_CHECKING:
    import torch

PEFT_TYPE = "DREAMBOOTH"

_SAVED: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
"""(id of the denoiser, adapter name) -> the original weights of the modules it fine-tunes."""


class DreamBooth(Method):
    name = "dreambooth"
    files = "denoiser"
    reads = frozenset({"learning_rate"})
    peft_type = PEFT_TYPE

    def attach(self, pipe: Any, spec: Settings, name: str, attached: list[str]) -> None:
        main = denoiser_name(pipe)
        model = getattr(pipe, main)
        keys = [f"{m}.{p}" for m in spec.modules for p, _ in model.get_submodule(m).named_parameters(recurse=False)]
        self._save(model, name, keys)
        attached.append(main)
        for key in keys:
            model.get_parameter(key).requires_grad_(True)

    def _save(self, model: Any, name: str, keys: list[str]) -> None:
        if (id(model), name) in _SAVED:
            raise ValueError(f"adapter {name!r} is already attached")
        _SAVED[(id(model), name)] = {k: model.get_parameter(k).detach().to("cpu", copy=True) for k in keys}

    def load(
        self, pipe: Any, comp: str, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], name: str
    ) -> None:
        import torch

        model = getattr(pipe, comp)
        unknown = [k for k in state if k not in dict(model.named_parameters())]
        if unknown:
            raise ValueError(f"fine-tuned weights do not fit the {comp}: unknown {unknown[:3]}")
        self._save(model, name, list(state))
        with torch.no_grad():
            for key, value in state.items():
                param = model.get_parameter(key)
                param.copy_(value.to(param.device, param.dtype))

    def unload(self, pipe: Any, comp: str, name: str) -> None:
        model = getattr(pipe, comp)
        saved = _SAVED.pop((id(model), name), None)
        for key, value in (saved or {}).items():
            param = model.get_parameter(key)
            param.data = value.to(param.device)  # the copy's dtype too: training made the weights fp32
            param.requires_grad_(False)

    def state(self, pipe: Any, comp: str, name: str) -> dict[str, torch.Tensor]:
        model = getattr(pipe, comp)
        saved = _SAVED[(id(model), name)]
        return {k: model.get_parameter(k).detach().to("cpu", copy=True) for k in saved}

    def kept_configs(self, spec: Settings, attached: list[str]) -> dict[str, dict[str, Any]]:
        return {comp: {"peft_type": PEFT_TYPE, "target_modules": list(spec.modules)} for comp in attached}

    @staticmethod
    @contextmanager
    def base_weights(model: Any) -> Iterator[None]:
        """``model`` with the original weights of every module fine-tuned on it, put back as trained afterwards."""
        import torch

        trained: dict[str, torch.Tensor] = {}
        try:
            with torch.no_grad():
                for (owner, _), saved in _SAVED.items():
                    if owner != id(model):
                        continue
                    for key, value in saved.items():
                        param = model.get_parameter(key)
                        trained[key] = param.detach().clone()
                        param.copy_(value.to(param.device, param.dtype))
            yield
        finally:
            with torch.no_grad():
                for key, value in trained.items():
                    model.get_parameter(key).copy_(value)
