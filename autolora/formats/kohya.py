"""The kohya sd-scripts LoRA file that A1111, Forge, ComfyUI, SD.Next and diffusers' kohya loader read.

The file is written by hand rather than with diffusers' ``convert_state_dict_to_kohya``: that helper
writes every ``.alpha`` as the rank (wrong unless lora_alpha == r) and mangles files that mix UNet and
text-encoder weights. Here every module's ``.alpha`` is its true effective alpha, so that the kohya scale
``alpha / rank`` equals the scale peft trained with (``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with
rsLoRA), including per-module ``rank_pattern`` / ``alpha_pattern`` entries.

Known limits of diffusers' kohya *loader* (not of the file): it builds its per-module alpha table with keys
such as ``...attn1.processor.to_v_lora.down.weight`` that match no module, so on reload an attention
projection (to_q/k/v/out, q/k/v/out_proj) whose alpha differs from the file's most common alpha gets the
common alpha instead. A1111 and ComfyUI read every ``.alpha`` and are not affected; diffusers users should
load the diffusers file, which carries the LoraConfig and reloads exactly.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.adapter import KeptAdapter
from autolora.atomic import write_file
from autolora.errors import UserError
from autolora.formats.diffusers import DIFFUSERS_FILE
from autolora.formats.kept import COMPONENTS, LORA_A, LORA_B, canonical_key, check_adapter
from autolora.formats.kohya_flux import flux_modules

if TYPE_CHECKING:
    import torch
KOHYA_ARCHS = ("sd1", "sd2", "sdxl", "flux")
"""Architectures with a kohya file: SD3 LoRAs go out in the diffusers format only, which ComfyUI reads for SD3
(``transformer.`` keys) as diffusers does."""
KOHYA_PREFIX = {
    "sd1": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sd2": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sdxl": {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
    "flux": {"transformer": "lora_unet"},
}
_BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}
_DEFAULT_RESOLUTION = {"sd1": 512, "sd2": 768, "sdxl": 1024, "sd3": 1024, "flux": 1024}


# modelspec (https://github.com/Stability-AI/ModelSpec) spells v-prediction "v".
_MODELSPEC_PREDICTION = {"epsilon": "epsilon", "v_prediction": "v"}
_DORA = "lora_magnitude_vector"


# Diffusers ResnetBlock2D layer -> SGM ResBlock layer (what kohya and A1111 call them for SDXL).
_SGM_RESNET = {
    "conv1": "in_layers.2",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


# UNet layers outside the down/mid/up blocks.
_SGM_TOP = {
    "conv_in": "input_blocks.0.0",
    "conv_out": "out.2",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}
_DIFFUSERS_BLOCK = re.compile(
    r"(down_blocks|up_blocks)\.(\d+)\.(attentions|resnets|downsamplers|upsamplers)\.(\d+)\.(.+)"
)
_DIFFUSERS_MID = re.compile(r"mid_block\.(attentions|resnets)\.(\d+)\.(.+)")


def export_kohya(adapter: KeptAdapter, path: Path, name: str) -> None:
    """Write the adapter in the kohya sd-scripts LoRA format that A1111, Forge and ComfyUI load.

    Keys are ``<prefix>_<module>.lora_down.weight`` (peft lora_A), ``.lora_up.weight`` (lora_B) and ``.alpha``
    (the module's true effective alpha, ``peft scale * rank``). SD 1.x/2.x UNet modules keep diffusers names
    (kohya's SD1/2 convention); SDXL UNet modules get the SGM names kohya and A1111 use for SDXL.

    Args:
        adapter: The adapter to export.
        path: Destination file; replaced atomically.
        name: Model name recorded as ``ss_output_name`` and ``modelspec.title``.

    Raises:
        UserError: for a DoRA adapter (the kohya format has no DoRA encoding autolora can verify), weights
            the format cannot hold, or a UNet module without a known kohya name. Raised before writing.
    """
    from safetensors.torch import save_file

    plan = kohya_plan(adapter)
    tensors: dict[str, torch.Tensor] = {}
    for entry in plan:
        tensors.update(_kohya_tensors(entry))
    meta = _kohya_metadata(adapter, name, plan)
    write_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def is_dora(adapter: KeptAdapter) -> bool:
    in_config = any(cfg.get("use_dora") for cfg in adapter.configs.values())
    return in_config or any(_DORA in key for sd in adapter.state_dicts.values() for key in sd)


@dataclass(frozen=True)
class _KohyaModule:
    """One LoRA module as the kohya file will hold it."""

    comp: str
    kohya_name: str
    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def is_conv3(self) -> bool:
        """A conv with a spatial kernel (kohya's ``conv_dim``); 1x1 convs count as linear layers there."""
        return self.down.dim() == 4 and tuple(self.down.shape[2:]) != (1, 1)


def kohya_plan(adapter: KeptAdapter) -> list[_KohyaModule]:
    """Check the adapter fits the kohya format and name every module; raises before anything is written."""
    check_adapter(adapter)
    if is_dora(adapter):
        raise UserError(
            "cannot write the kohya file: this is a DoRA adapter and the kohya format has no DoRA encoding "
            "autolora can verify (diffusers drops kohya 'dora_scale' keys on load, and A1111 normalises the DoRA "
            f"magnitude per input column where peft does per output row); use the diffusers file {DIFFUSERS_FILE} "
            "(export without the kohya file)"
        )
    arch = adapter.base["arch"]
    if arch not in KOHYA_ARCHS:
        raise UserError(
            f"cannot write the kohya file for a {arch} adapter: use the diffusers file {DIFFUSERS_FILE}, which "
            "ComfyUI and diffusers load"
        )
    if arch == "flux":
        return _flux_plan(adapter)
    plan: list[_KohyaModule] = []
    for comp in COMPONENTS[arch]:
        state_dict = adapter.state_dicts.get(comp)
        if not state_dict:
            continue
        config = adapter.configs[comp]
        for key in state_dict:
            if not key.endswith((LORA_A, LORA_B)):
                raise UserError(f"cannot write the kohya file: it has no place for {comp} weight {key!r}")
        for key in sorted(k for k in state_dict if k.endswith(LORA_A)):
            module = key.removesuffix(LORA_A)
            up_key = module + LORA_B
            if up_key not in state_dict:
                raise UserError(f"cannot export: {comp} module {module!r} has lora_A but no lora_B")
            down = state_dict[key]
            alpha = _kohya_alpha(comp, module, int(down.shape[0]), config)
            kohya_name = f"{KOHYA_PREFIX[arch][comp]}_{kohya_module(adapter, comp, module).replace('.', '_')}"
            plan.append(_KohyaModule(comp, kohya_name, down, state_dict[up_key], alpha))
    return plan


def _flux_plan(adapter: KeptAdapter) -> list[_KohyaModule]:
    """Flux: BFL module names with fused q/k/v (``autolora.formats.kohya_flux``)."""

    state_dict = adapter.state_dicts["transformer"]
    config = adapter.configs["transformer"]
    for key in state_dict:
        if not key.endswith((LORA_A, LORA_B)):
            raise UserError(f"cannot write the kohya file: it has no place for transformer weight {key!r}")

    def scale_of(module: str, rank: int) -> float:
        return _kohya_alpha("transformer", module, rank, config) / rank

    return [
        _KohyaModule("transformer", f"lora_unet_{m.name.replace('.', '_')}", m.down, m.up, m.alpha)
        for m in flux_modules(state_dict, scale_of)
    ]


def kohya_module(adapter: KeptAdapter, comp: str, module: str) -> str:
    """The dotted module name kohya uses (before ``.`` becomes ``_``)."""
    if comp != "unet":
        return canonical_key(comp, module)
    if adapter.base["arch"] != "sdxl":
        return module  # kohya trains SD 1.x/2.x on a diffusers-layout UNet and keeps its names
    layers = adapter.base.get("layers_per_block")
    if not isinstance(layers, int) or layers < 1:
        raise UserError(f"cannot write the SDXL kohya file: base model fact layers_per_block is {layers!r}")
    return _sgm_unet_name(module, layers)


def _sgm_unet_name(module: str, layers_per_block: int) -> str:
    """Map a diffusers UNet module name to the SGM/LDM name kohya and A1111 use for SDXL.

    Each diffusers down block becomes ``layers_per_block`` SGM input blocks plus one for its downsampler;
    each up block ``layers_per_block + 1`` output blocks, the last also holding the upsampler. This is the
    inverse of diffusers' ``_maybe_map_sgm_blocks_to_diffusers``.
    """
    if module in _SGM_TOP:
        return _SGM_TOP[module]
    span = layers_per_block + 1  # SGM blocks per diffusers block
    if m := _DIFFUSERS_BLOCK.fullmatch(module):
        side, block, kind, index, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        if kind == "downsamplers" and rest == "conv":
            return f"input_blocks.{(block + 1) * span}.0.op"
        if kind == "upsamplers" and rest == "conv":
            # SDXL's upsampling up blocks all carry attentions, so the upsampler is the block's third layer.
            return f"output_blocks.{block * span + layers_per_block}.2.conv"
        sgm = (
            f"input_blocks.{block * span + index + 1}"
            if side == "down_blocks"
            else f"output_blocks.{block * span + index}"
        )
        layer = _sgm_layer(kind, rest)
        if layer is not None:
            return f"{sgm}.{0 if kind == 'resnets' else 1}.{layer}"  # resnet in slot 0, attention in slot 1
    elif m := _DIFFUSERS_MID.fullmatch(module):
        kind, index, rest = m[1], int(m[2]), m[3]
        layer = _sgm_layer(kind, rest)
        # SGM middle block: resnet 0, attention, resnet 1.
        if layer is not None and kind == "resnets":
            return f"middle_block.{2 * index}.{layer}"
        if layer is not None and index == 0:
            return f"middle_block.1.{layer}"
    raise UserError(f"cannot write the SDXL kohya file: no kohya (SGM) name is known for UNet module {module!r}")


def _sgm_layer(kind: str, rest: str) -> str | None:
    """The SGM name of a layer inside a resnet or attention block, or None when there is none."""
    if kind == "resnets":
        return _SGM_RESNET.get(rest)
    if kind == "attentions":
        return rest  # the transformer's own layer names are the same in SGM
    return None


def _pattern_value(patterns: Mapping[str, Any] | None, module: str, default: Any) -> Any:
    """peft's lookup of ``rank_pattern``/``alpha_pattern``: the first key matching the end of the name."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _kohya_alpha(comp: str, module: str, rank: int, config: Mapping[str, Any]) -> float:
    """Kohya alpha giving the same scale as peft: kohya scales by alpha/rank, peft by lora_alpha/r (or /sqrt r)."""
    expected_rank = _pattern_value(config.get("rank_pattern"), module, config.get("r", 8))
    if int(expected_rank) != rank:
        # The alpha lookup below relies on the same pattern matching; if ranks disagree it cannot be trusted.
        raise UserError(
            f"cannot export: {comp} module {module!r} has rank {rank} but its LoraConfig says {expected_rank}"
        )
    lora_alpha = float(_pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8)))
    return _peft_scale(lora_alpha, rank, bool(config.get("use_rslora"))) * rank


def _peft_scale(lora_alpha: float, rank: int, rslora: bool) -> float:
    """The factor peft multiplies ``lora_B @ lora_A`` by."""
    return lora_alpha / (math.sqrt(rank) if rslora else rank)


def _kohya_tensors(entry: _KohyaModule) -> dict[str, torch.Tensor]:
    import torch

    return {
        f"{entry.kohya_name}.lora_down.weight": entry.down.detach().cpu().contiguous(),
        f"{entry.kohya_name}.lora_up.weight": entry.up.detach().cpu().contiguous(),
        f"{entry.kohya_name}.alpha": torch.tensor(entry.alpha, dtype=torch.float32),
    }


def model_name(source: str) -> str:
    """The base model's name as kohya records it: a local folder or file by its last part (a shared LoRA should
    not carry its author's directory layout), a hub id (``org/name``) or ``builtin:...`` as given."""
    local = source.startswith(("/", "~", ".", "\\")) or re.match(r"^[A-Za-z]:[\\/]", source) is not None
    if local or (os.path.exists(source) and not source.startswith("builtin:")):
        return re.split(r"[\\/]", source.rstrip("/\\"))[-1] or source
    return source


def _most_common(values: list[Any], default: Any) -> Any:
    return Counter(values).most_common(1)[0][0] if values else default


def _kohya_metadata(adapter: KeptAdapter, name: str, plan: list[_KohyaModule]) -> dict[str, str]:
    """kohya ``ss_*`` and modelspec metadata; safetensors metadata values must all be strings."""
    arch = adapter.base["arch"]
    denoiser = "transformer" if arch == "flux" else "unet"
    main_comp = denoiser if denoiser in adapter.configs and adapter.state_dicts.get(denoiser) else plan[0].comp
    config = adapter.configs[main_comp]
    dim = int(config.get("r", 8))
    # The alpha a module of rank ``dim`` without patterns has in this file (differs from lora_alpha under rsLoRA).
    network_alpha = _peft_scale(float(config.get("lora_alpha", 8)), dim, bool(config.get("use_rslora"))) * dim
    conv = [e for e in plan if e.is_conv3]
    network_args: dict[str, Any] = {
        "use_rslora": bool(config.get("use_rslora")),
        "module_dims": {e.kohya_name: e.rank for e in plan if e.rank != dim},
        "module_alphas": {e.kohya_name: e.alpha for e in plan if e.alpha != network_alpha},
    }
    if conv:
        network_args["conv_dim"] = str(_most_common([e.rank for e in conv], dim))
        network_args["conv_alpha"] = str(_most_common([e.alpha for e in conv], network_alpha))
    return {
        "ss_network_module": "networks.lora_flux" if arch == "flux" else "networks.lora",
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(network_alpha),
        "ss_network_args": json.dumps(network_args),
        **base_metadata(adapter, name, {e.comp for e in plan}),
    }


def base_metadata(adapter: KeptAdapter, name: str, comps: set[str]) -> dict[str, str]:
    """The ``ss_*`` and modelspec facts of the base model and the export, shared by LoRA and LyCORIS files."""
    arch = adapter.base["arch"]
    denoiser = "transformer" if arch == "flux" else "unet"
    prediction = adapter.base.get("prediction_type", "epsilon")
    resolution = int(adapter.base.get("resolution") or _DEFAULT_RESOLUTION[arch])
    meta = {
        "ss_base_model_version": _BASE_MODEL_VERSION[arch],
        "ss_output_name": name,
        "ss_sd_model_name": model_name(str(adapter.base.get("source", ""))),
        "ss_v2": str(arch == "sd2"),
        "ss_v_parameterization": str(prediction == "v_prediction"),
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_network_train_unet_only": str(comps == {denoiser}),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": _modelspec_architecture(arch, prediction),
        "modelspec.implementation": "https://github.com/huggingface/diffusers",
        "modelspec.title": name,
        "modelspec.date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.prediction_type": _MODELSPEC_PREDICTION.get(prediction, str(prediction)),
    }
    study, trial = adapter.info.get("study"), adapter.info.get("trial")
    if study is not None:
        meta["modelspec.description"] = f"autolora study {study}, trial {trial}"
    return meta


def _modelspec_architecture(arch: str, prediction: str) -> str:
    if arch == "flux":
        return "flux-1-dev/lora"
    if arch == "sd1":
        return "stable-diffusion-v1/lora"
    if arch == "sd2":
        return "stable-diffusion-v2-768-v/lora" if prediction == "v_prediction" else "stable-diffusion-v2-512/lora"
    return "stable-diffusion-xl-v1-base/lora"
