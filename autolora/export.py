"""Export a kept adapter as files that diffusers, A1111/Forge and ComfyUI load.

``export_all`` writes three files into one folder::

    pytorch_lora_weights.safetensors   diffusers format (``pipe.load_lora_weights``), with the peft LoraConfig
                                       of every component in the metadata so alpha and per-module ranks survive
    <name>.safetensors                 kohya format (A1111, Forge, ComfyUI, SD.Next, diffusers' kohya loader)
    autolora.json                      study, trial, params, scores, base model facts, library versions

The kohya file is written by hand rather than with diffusers' ``convert_state_dict_to_kohya``: that helper
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
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.adapter import KeptAdapter
from autolora.embedding_file import embedding_tensors, write_embedding
from autolora.errors import UserError
from autolora.folders import readable

if TYPE_CHECKING:
    import torch

    from autolora.methods import KohyaModule, Method, PeftMethod

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
INFO_FILE = "autolora.json"

COMPONENTS: dict[str, tuple[str, ...]] = {
    "sd1": ("unet", "text_encoder"),
    "sd2": ("unet", "text_encoder"),
    "sdxl": ("unet", "text_encoder", "text_encoder_2"),
    "sd3": ("transformer",),
    "flux": ("transformer",),
}
_PIPELINES = {
    "sd1": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}
KOHYA_ARCHS = ("sd1", "sd2", "sdxl", "flux")
"""Architectures with a kohya file: SD3 LoRAs go out in the diffusers format only, which ComfyUI reads for SD3
(``transformer.`` keys) as diffusers does."""
_KOHYA_PREFIX = {
    "sd1": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sd2": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sdxl": {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
    "flux": {"transformer": "lora_unet"},
}
_BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}
_DEFAULT_RESOLUTION = {"sd1": 512, "sd2": 768, "sdxl": 1024, "sd3": 1024, "flux": 1024}
# modelspec (https://github.com/Stability-AI/ModelSpec) spells v-prediction "v".
_MODELSPEC_PREDICTION = {"epsilon": "epsilon", "v_prediction": "v"}
_VERSIONED_PACKAGES = ("autolora", "torch", "diffusers", "peft", "transformers", "optuna", "safetensors")

_LORA_A = ".lora_A.weight"
_LORA_B = ".lora_B.weight"
_DORA = "lora_magnitude_vector"
# A file stem that is safe on every OS and in A1111's <lora:name:1> prompt syntax; no leading dot (hidden, "..").
_SAFE_STEM = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")

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

# LoraConfig fields that only record where a config came from; an older peft rejects the ones it lacks.
_CONFIG_BOOKKEEPING = {
    "peft_version",
    "base_model_name_or_path",
    "revision",
    "auto_mapping",
    "task_type",
    "inference_mode",
}
# Always written, even at their defaults, so the file does not depend on another peft version's defaults.
_CONFIG_ESSENTIAL = {"r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora"}


def export_all(adapter: KeptAdapter, out_dir: Path, name: str, *, kohya: bool = True) -> dict[str, Path]:
    """Write the diffusers file, the kohya file and ``autolora.json`` into ``out_dir``.

    Everything is checked before the first byte is written, so a ``UserError`` leaves ``out_dir`` as it was.
    Each file is written to a temporary name in ``out_dir`` and renamed into place.

    Args:
        adapter: The adapter to export.
        out_dir: Folder to write into; created when missing. Existing files of the same names are replaced.
        name: File stem of the kohya file (``<name>.safetensors``), also its ``ss_output_name``/title.
        kohya: Write the kohya file. False for adapters the kohya format cannot hold (DoRA).

    Returns:
        ``{"diffusers": path, "kohya": path, "info": path}`` (no ``"kohya"`` when ``kohya`` is False).

    Raises:
        UserError: for an unsafe ``name`` or an adapter that cannot be exported.
    """
    check_name(name)
    _check_adapter(adapter)
    method = adapter_method(adapter)
    if method.name in ("loha", "lokr"):
        return _export_lycoris_all(adapter, out_dir, name, kohya=kohya)
    if method.name == "textual_inversion":
        return _export_embedding_only(adapter, out_dir, name)
    lora = _lora_part(adapter)
    if kohya:
        _kohya_plan(lora)
    if method.name == "pivotal":
        embedding_tensors(adapter)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"diffusers": out_dir / DIFFUSERS_FILE}
    export_diffusers(lora, paths["diffusers"])
    if kohya:
        paths["kohya"] = out_dir / f"{name}.safetensors"
        export_kohya(lora, paths["kohya"], name)
    if method.name == "pivotal":
        # The diffusers advanced scripts' name for the embedding beside the LoRA.
        paths["embedding"] = out_dir / f"{name}_emb.safetensors"
        write_embedding(adapter, paths["embedding"], _write_atomically)
    return _with_info(adapter, out_dir, name, paths)


def _with_info(adapter: KeptAdapter, out_dir: Path, name: str, paths: dict[str, Path]) -> dict[str, Path]:
    """Write ``autolora.json`` (naming the files written) last, and return every path."""
    paths["info"] = out_dir / INFO_FILE
    files = {kind: path.name for kind, path in paths.items() if kind != "info"}
    text = json.dumps(_info_document(adapter, name, files), indent=2, allow_nan=False) + "\n"
    _write_atomically(paths["info"], lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return paths


def adapter_method(adapter: KeptAdapter) -> Method:
    """The adapter's method (its components' one method, or pivotal: a LoRA and token embeddings)."""
    from autolora.methods import kept_method

    try:
        return kept_method(adapter.configs)
    except ValueError as e:
        raise UserError(f"cannot export: {e}") from None


def _lora_part(adapter: KeptAdapter) -> KeptAdapter:
    """The adapter without its token embeddings (pivotal tuning's LoRA)."""
    from dataclasses import replace

    from autolora.methods import method_of

    comps = [c for c, cfg in adapter.configs.items() if method_of(cfg).name == "lora"]
    return replace(
        adapter, configs={c: adapter.configs[c] for c in comps}, state_dicts={c: adapter.state_dicts[c] for c in comps}
    )


def _export_embedding_only(adapter: KeptAdapter, out_dir: Path, name: str) -> dict[str, Path]:
    """Textual inversion: ``<name>.safetensors`` is the embedding (its name is the prompt word in A1111/ComfyUI)."""
    embedding_tensors(adapter)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"embedding": out_dir / f"{name}.safetensors"}
    write_embedding(adapter, paths["embedding"], _write_atomically)
    return _with_info(adapter, out_dir, name, paths)


def _export_lycoris_all(adapter: KeptAdapter, out_dir: Path, name: str, *, kohya: bool) -> dict[str, Path]:
    """LoHa/LoKr: the LyCORIS file (kohya key layout, what A1111, Forge and ComfyUI read) and peft's own folders;
    diffusers' ``load_lora_weights`` reads LoRA only, so there is no diffusers file."""
    from autolora.peft_files import PEFT_FOLDER, export_peft

    plan = _lycoris_plan(adapter) if kohya else []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"peft": out_dir / PEFT_FOLDER}
    export_peft(adapter, paths["peft"])
    if kohya:
        paths["kohya"] = out_dir / f"{name}.safetensors"
        _write_lycoris(adapter, paths["kohya"], name, plan)
    return _with_info(adapter, out_dir, name, paths)


def check_name(name: str) -> None:
    """Raise ``UserError`` unless ``name`` is a safe file stem (letters, digits, ``-``, ``_``, ``.``).

    Args:
        name: The proposed file stem.

    Raises:
        UserError: naming the bad value.
    """
    if not _SAFE_STEM.fullmatch(name):
        raise UserError(
            f"export name {name!r} is not a safe file name: use letters, digits, '-', '_' and '.', "
            "not starting with '.'"
        )
    if f"{name}.safetensors" == DIFFUSERS_FILE:
        raise UserError(f"export name {name!r} would overwrite the diffusers file {DIFFUSERS_FILE}; choose another")


def export_diffusers(adapter: KeptAdapter, path: Path) -> None:
    """Write the adapter in diffusers' LoRA format with diffusers' own ``save_lora_weights``.

    The LoraConfig of each component goes into the file's metadata: without it diffusers infers the config
    from tensor shapes on reload and loses ``lora_alpha``, rsLoRA and per-module alphas.

    Args:
        adapter: The adapter to export.
        path: Destination file (normally ``pytorch_lora_weights.safetensors``); replaced atomically.

    Raises:
        UserError: for an adapter that does not fit its base architecture.
    """
    import diffusers

    _check_adapter(adapter)
    arch = adapter.base["arch"]
    pipeline_cls = getattr(diffusers, _PIPELINES[arch])
    kwargs: dict[str, Any] = {}
    for comp in COMPONENTS[arch]:
        if adapter.state_dicts.get(comp):
            kwargs[f"{comp}_lora_layers"] = _diffusers_layers(comp, adapter.state_dicts[comp])
            kwargs[f"{comp}_lora_adapter_metadata"] = _portable_config(adapter.configs[comp])
    path.parent.mkdir(parents=True, exist_ok=True)
    # save_lora_weights writes into a folder; write into a private one beside the target and move the file.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        pipeline_cls.save_lora_weights(tmp_dir, weight_name=path.name, safe_serialization=True, **kwargs)
        os.replace(readable(tmp_dir / path.name), path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


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

    plan = _kohya_plan(adapter)
    tensors: dict[str, torch.Tensor] = {}
    for entry in plan:
        tensors.update(_kohya_tensors(entry))
    meta = _kohya_metadata(adapter, name, plan)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=meta)
        readable(tmp)

    _write_atomically(path, write)


# --- checks -------------------------------------------------------------------------------------------------


def _check_adapter(adapter: KeptAdapter) -> None:
    """Raise ``UserError`` unless the adapter's components and weights fit its base architecture."""
    arch = adapter.base.get("arch")
    if arch not in COMPONENTS:
        raise UserError(f"cannot export: unknown base architecture {arch!r} (expected one of {sorted(COMPONENTS)})")
    allowed = COMPONENTS[arch]
    for comp in adapter.state_dicts:
        if comp not in allowed:
            raise UserError(f"cannot export: a {arch} model has no component {comp!r} (it has {', '.join(allowed)})")
        if comp not in adapter.configs:
            raise UserError(f"cannot export: component {comp!r} has weights but no LoraConfig")
    if not any(adapter.state_dicts.values()):
        raise UserError("cannot export: the adapter has no LoRA weights")


def _is_dora(adapter: KeptAdapter) -> bool:
    in_config = any(cfg.get("use_dora") for cfg in adapter.configs.values())
    return in_config or any(_DORA in key for sd in adapter.state_dicts.values() for key in sd)


# --- diffusers file -----------------------------------------------------------------------------------------


def _canonical_key(comp: str, key: str) -> str:
    """Give text-encoder keys the ``text_model.`` prefix that older transformers (and kohya) use.

    transformers 5 flattens ``CLIPTextModel`` (its modules are ``encoder.layers...``) but not
    ``CLIPTextModelWithProjection``; diffusers strips the prefix again when the loaded model has none,
    so the prefixed spelling loads under both old and new transformers.
    """
    if comp in ("unet", "transformer") or key.startswith(("text_model.", "text_projection.")):
        return key
    return f"text_model.{key}"


def _diffusers_layers(comp: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {_canonical_key(comp, k): v.detach().cpu().contiguous() for k, v in state_dict.items()}


def _portable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The LoraConfig fields diffusers passes back to ``LoraConfig(**...)`` on reload.

    Only the fields this peft knows and that differ from its defaults (plus the essentials), so a reader
    with an older peft, which rejects unknown fields, can still build the config.
    """
    from peft import LoraConfig

    defaults = LoraConfig().to_dict()
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key not in LoraConfig.__dataclass_fields__ or key in _CONFIG_BOOKKEEPING:
            continue
        default = defaults.get(key)
        if isinstance(default, set):
            default = sorted(default)
        if key in _CONFIG_ESSENTIAL or value != default:
            out[key] = sorted(value) if isinstance(value, set) else value
    return out


# --- kohya file ---------------------------------------------------------------------------------------------


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


def _kohya_plan(adapter: KeptAdapter) -> list[_KohyaModule]:
    """Check the adapter fits the kohya format and name every module; raises before anything is written."""
    _check_adapter(adapter)
    if _is_dora(adapter):
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
            if not key.endswith((_LORA_A, _LORA_B)):
                raise UserError(f"cannot write the kohya file: it has no place for {comp} weight {key!r}")
        for key in sorted(k for k in state_dict if k.endswith(_LORA_A)):
            module = key.removesuffix(_LORA_A)
            up_key = module + _LORA_B
            if up_key not in state_dict:
                raise UserError(f"cannot export: {comp} module {module!r} has lora_A but no lora_B")
            down = state_dict[key]
            alpha = _kohya_alpha(comp, module, int(down.shape[0]), config)
            kohya_name = f"{_KOHYA_PREFIX[arch][comp]}_{_kohya_module(adapter, comp, module).replace('.', '_')}"
            plan.append(_KohyaModule(comp, kohya_name, down, state_dict[up_key], alpha))
    return plan


def _flux_plan(adapter: KeptAdapter) -> list[_KohyaModule]:
    """Flux: BFL module names with fused q/k/v (``autolora.kohya_flux``)."""
    from autolora.kohya_flux import flux_modules

    state_dict = adapter.state_dicts["transformer"]
    config = adapter.configs["transformer"]
    for key in state_dict:
        if not key.endswith((_LORA_A, _LORA_B)):
            raise UserError(f"cannot write the kohya file: it has no place for transformer weight {key!r}")

    def scale_of(module: str, rank: int) -> float:
        return _kohya_alpha("transformer", module, rank, config) / rank

    return [
        _KohyaModule("transformer", f"lora_unet_{m.name.replace('.', '_')}", m.down, m.up, m.alpha)
        for m in flux_modules(state_dict, scale_of)
    ]


def _kohya_module(adapter: KeptAdapter, comp: str, module: str) -> str:
    """The dotted module name kohya uses (before ``.`` becomes ``_``)."""
    if comp != "unet":
        return _canonical_key(comp, module)
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
        **_base_metadata(adapter, name, {e.comp for e in plan}),
    }


def _base_metadata(adapter: KeptAdapter, name: str, comps: set[str]) -> dict[str, str]:
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


# --- LyCORIS file (LoHa, LoKr) ------------------------------------------------------------------------------

LYCORIS_ARCHS = ("sd1", "sd2", "sdxl")
"""Architectures with a LyCORIS file. Flux's kohya names fuse q/k/v into one module, which a Kronecker or
Hadamard factorisation of three separate updates cannot be rewritten into; SD3 has no kohya file at all."""


def _peft_method(adapter: KeptAdapter) -> PeftMethod:
    from autolora.methods import PeftMethod

    method = adapter_method(adapter)
    assert isinstance(method, PeftMethod), method.name
    return method


def _lycoris_plan(adapter: KeptAdapter) -> list[KohyaModule]:
    """Every module of the adapter in LyCORIS's key layout, checked; raises before anything is written."""
    method = _peft_method(adapter)
    arch = adapter.base["arch"]
    if arch not in LYCORIS_ARCHS:
        raise UserError(
            f"cannot write the LyCORIS file for a {arch} {method.name} adapter (kohya's {arch} names fuse modules "
            "this factorisation keeps apart): use the peft folder"
        )
    plan: list[KohyaModule] = []
    for comp in COMPONENTS[arch]:
        state_dict = adapter.state_dicts.get(comp)
        if not state_dict:
            continue
        modules = sorted({k.rsplit(".", 1)[0] for k in state_dict})
        name_of = {
            m: f"{_KOHYA_PREFIX[arch][comp]}_{_kohya_module(adapter, comp, m).replace('.', '_')}" for m in modules
        }
        plan += method.kohya_modules(comp, name_of, state_dict, adapter.configs[comp])
    return plan


def _write_lycoris(adapter: KeptAdapter, path: Path, name: str, plan: list[KohyaModule]) -> None:
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for entry in plan:
        for key, tensor in entry.tensors.items():
            tensors[f"{entry.name}.{key}"] = tensor.detach().cpu().float().contiguous()
        if entry.alpha is not None:
            tensors[f"{entry.name}.alpha"] = torch.tensor(entry.alpha, dtype=torch.float32)
    method = _peft_method(adapter)
    main = adapter.configs.get("unet") or next(iter(adapter.configs.values()))
    args: dict[str, Any] = {"algo": method.lycoris_algo, "preset": "attn-only"}
    if method.name == "lokr":
        args.update(factor=main.get("decompose_factor", -1), decompose_both=bool(main.get("decompose_both")))
    meta = _base_metadata(adapter, name, {e.comp for e in plan})
    meta.update(
        {
            "ss_network_module": "lycoris.kohya",
            "ss_network_dim": str(int(main.get("r", 8))),
            "ss_network_alpha": str(float(main.get("alpha", 8))),
            "ss_network_args": json.dumps(args),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=meta)
        readable(tmp)

    _write_atomically(path, write)


# --- autolora.json ------------------------------------------------------------------------------------------


def _info_document(adapter: KeptAdapter, name: str, files: dict[str, str]) -> dict[str, Any]:
    """Everything the adapter knows about itself, JSON-safe (NaN/inf become null)."""
    info = _json_safe(adapter.info)
    doc: dict[str, Any] = {"study": None, "trial": None, "params": {}, "scores": {}, "values": []}
    doc.update(info)
    doc.update(
        {
            "name": name,
            "base": _json_safe(adapter.base),
            "lora": _json_safe(adapter.configs),
            "files": files,
            "method": adapter_method(adapter).name,
            "exported_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "versions": _versions(),
        }
    )
    if "embedding" in files:
        from autolora.methods.textual_inversion import TOKEN

        stem = files["embedding"].removesuffix(".safetensors")
        # the trigger as the trials wrote it (``in <autolora> style``); adapters kept before it was recorded: the token
        phrase = str(info.get("trigger") or TOKEN)
        doc["usage"] = (
            f"A1111/Forge: put {files['embedding']} in embeddings/ and write '{phrase.replace(TOKEN, stem)}' in the "
            f"prompt; ComfyUI: '{phrase.replace(TOKEN, 'embedding:' + stem)}'; diffusers: "
            f"pipe.load_textual_inversion(path, token='{TOKEN}') and write '{phrase}'"
            + ("; load the LoRA file beside it as well" if "diffusers" in files else "")
        )
    return doc


def _versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata so nothing heavy is imported."""
    found: dict[str, str | None] = {}
    for package in _VERSIONED_PACKAGES:
        try:
            found[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            found[package] = None
    return found


def _json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps(allow_nan=False)`` accepts."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [_json_safe(v) for v in sorted(value, key=str)]
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return _json_safe(value.tolist())
    return str(value)


# --- files --------------------------------------------------------------------------------------------------


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file beside ``path`` and rename, so readers never see half a file.

    The temporary name is built by hand (not ``mkstemp``) so the file gets the usual umask permissions
    instead of 0600, which would hide it from a UI running as another user.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
