"""Dynamic Layer-wise Fusion (DLF): several style LoRAs on one pipeline, mixed per layer without reloading.

``load_loras`` checks every LoRA file cheaply (header only), then loads each as its own diffusers adapter and
activates them all together. From then on a fusion is only a set of numbers: ``FusedAdapters.set_coefficients``
sets, for every peft ``LoraLayer`` and every adapter, ``scaling = base_scaling * coefficient``. No weight is
copied, merged or reloaded, so an Optuna trial costs one generation.

Coefficients are ``{lora_name: {group_key: value}}``; the group keys of a granularity come from
``FusedAdapters.group_keys``:

* ``global``: one key, ``all``.
* ``block``: ``down.N``, ``mid``, ``up.N`` (``autolora.models.layers.block_of``), ``unet`` for UNet modules outside
  the blocks (``conv_in``, ``time_embedding``...), and one key per text encoder, ``text_encoder`` and (SDXL)
  ``text_encoder_2``.
* ``layer``: one key per transformer (or resnet/sampler) unit of a block, ``down.1.attentions.0``,
  ``mid.attentions.0``, ``up.0.resnets.2``; ``unet.conv_in`` etc. outside the blocks; one per text-encoder layer,
  ``text_encoder.layers.5`` (``text_encoder.other`` for embeddings/projection). A transformer unit rather than
  single projections keeps the search space at tens of parameters instead of hundreds.

Text-encoder coefficients act when the prompt is encoded, i.e. before the first denoising step, so in a
``TwoPhase`` run only the early set matters for them.

``fused_adapter`` turns a fusion into one exact adapter (ranks concatenated) that ``autolora.export.export_all``
writes; ``reduce_rank`` compresses it by SVD. ``a1111_block_weights`` and ``diffusers_set_adapters_weights``
translate block coefficients for other tools.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.adapter import KeptAdapter
from autolora.errors import UserError
from autolora.models.layers import block_of

if TYPE_CHECKING:
    import torch

GRANULARITIES = ("global", "block", "layer")
Coefficients = dict[str, dict[str, float]]
"""LoRA name -> group key -> coefficient."""

TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
_COMPONENTS = ("unet", *TEXT_ENCODERS)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Any key of a LoRA in the formats diffusers loads: peft (lora_A/B), kohya (lora_down/up), old diffusers (lora.down).
_LORA_KEY = re.compile(r"lora_A|lora_B|lora_down|lora_up|lora\.down|lora\.up|lora_linear_layer")
_KNOWN_PREFIX = ("unet.", "text_encoder.", "text_encoder_2.", "lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
# The down (input) matrix of a cross-attention key/value projection, in every spelling: its input width is the
# text-embedding width the LoRA was trained for.
_CROSS_KV_DOWN = re.compile(r"attn2[._](?:processor[._])?to_[kv](?:_lora)?[._](?:lora_A|lora_down|lora[._]down|down)")
_WIDTH_ARCH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_TE_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
# lora-block-weight's 17 slots for SD 1.x (the blocks holding attentions) and the block group feeding each.
A1111_SLOTS = (
    "BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID",
    "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11",
)  # fmt: skip
_A1111_GROUP = {
    "BASE": "text_encoder",
    "IN01": "down.0", "IN02": "down.0", "IN04": "down.1", "IN05": "down.1", "IN07": "down.2", "IN08": "down.2",
    "MID": "mid",
    "OUT03": "up.1", "OUT04": "up.1", "OUT05": "up.1", "OUT06": "up.2", "OUT07": "up.2", "OUT08": "up.2",
    "OUT09": "up.3", "OUT10": "up.3", "OUT11": "up.3",
}  # fmt: skip


# --- the loaded state ---------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One peft LoRA layer of the pipeline and what the fusion needs to know about it."""

    component: str
    name: str
    """Module name inside its component (``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``)."""
    module: Any
    """The peft ``LoraLayer``."""
    groups: dict[str, str]
    """Granularity -> group key of this module."""
    base: dict[str, float]
    """Adapter name -> the scaling peft gave it at load time (coefficient 1)."""


@dataclass
class FusedAdapters:
    """Several LoRAs loaded into one pipeline as separate, simultaneously active adapters.

    Built by ``load_loras``; released by ``unload``.
    """

    pipe: Any = field(repr=False)
    names: list[str]
    files: list[Path]
    slots: list[_Slot] = field(default_factory=list, repr=False)

    def group_keys(self, granularity: str) -> list[str]:
        """Group keys of ``granularity`` that hold at least one module of any loaded LoRA.

        Args:
            granularity: ``global``, ``block`` or ``layer``.

        Returns:
            The keys in the order down, mid, up, unet, text encoders (numbers numerically), e.g.
            ``["down.0", "down.1", "mid", "up.0", "up.1", "text_encoder"]``.
        """
        _check_granularity(granularity)
        return sorted({slot.groups[granularity] for slot in self.slots}, key=_key_order)

    def lora_group_keys(self, lora: str, granularity: str) -> list[str]:
        """Group keys of ``granularity`` in which LoRA ``lora`` has modules (the coefficients it needs), ordered
        as ``group_keys``."""
        _check_granularity(granularity)
        return sorted({s.groups[granularity] for s in self.slots if lora in s.base}, key=_key_order)

    def param_names(self, granularity: str, prefix: str = "") -> list[str]:
        """Names of the search parameters, ``f"{prefix}{lora}.{group}"``, one per coefficient needed."""
        return [f"{prefix}{lora}.{key}" for lora in self.names for key in self.lora_group_keys(lora, granularity)]

    def coefficients_from_params(self, params: Mapping[str, Any], prefix: str = "") -> Coefficients:
        """Coefficients from flat parameters named ``f"{prefix}{lora}.{group}"`` (as ``param_names`` gives).

        Parameters that do not start with ``prefix`` followed by a loaded LoRA name are ignored, so a trial's
        whole ``params`` (holding e.g. ``switch_at`` too) can be passed.

        Args:
            params: Flat parameters, e.g. ``trial.params``.
            prefix: Only parameters with this prefix, e.g. ``"early."`` for a two-phase search.
        """
        coeffs: Coefficients = {}
        for key, value in params.items():
            if not key.startswith(prefix):
                continue
            lora, _, group = key.removeprefix(prefix).partition(".")
            if lora in self.names and group:
                coeffs.setdefault(lora, {})[group] = float(value)
        return coeffs

    def set_coefficients(self, coeffs: Mapping[str, Mapping[str, float]]) -> None:
        """Set every adapter's scale in every module to its base scale times its group's coefficient.

        Each LoRA's coefficients must all be of one granularity and cover every group it has modules in.

        Args:
            coeffs: ``{lora: {group: coefficient}}``.

        Raises:
            ValueError: for a missing or unknown LoRA or group.
        """
        granularity = self._check_coefficients(coeffs)
        for slot in self.slots:
            for adapter, base in slot.base.items():
                _set_scaling(slot.module, adapter, base * coeffs[adapter][slot.groups[granularity[adapter]]])

    def _coefficient_of(self, slot: _Slot, adapter: str, coeffs: Mapping[str, Mapping[str, float]]) -> float:
        """The coefficient ``coeffs`` gives ``adapter`` in ``slot`` (``coeffs`` already checked)."""
        keys = coeffs[adapter]
        granularity = next(g for g in GRANULARITIES if slot.groups[g] in keys)
        return float(keys[slot.groups[granularity]])

    def two_phase(
        self, early: Mapping[str, Mapping[str, float]], late: Mapping[str, Mapping[str, float]], switch_at: float
    ) -> TwoPhase:
        """A ``callback_on_step_end`` that uses ``early`` up to ``switch_at`` of the steps, then ``late``.

        The early coefficients are applied at once (so the call that uses the callback starts with them).
        """
        return TwoPhase(self, early, late, switch_at)

    def diffusers_set_adapters_weights(self, coeffs: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
        """Block coefficients as diffusers' ``pipe.set_adapters(names, adapter_weights=...)`` takes them.

        Use as ``w = fa.diffusers_set_adapters_weights(c); pipe.set_adapters(fa.names, [w[n] for n in fa.names])``.

        diffusers' block weights (0.42, ``_maybe_expand_lora_scales`` and ``set_weights_and_activate_adapters``)
        reach only modules of down/up blocks that hold attentions (a resnet ``J`` follows attention ``J`` of its
        block) and the mid block's attentions; mid-block resnets, blocks without attentions and modules outside
        the blocks get 1.0 or make diffusers fail. This refuses coefficients diffusers cannot honour.

        Args:
            coeffs: Block-granularity coefficients.

        Returns:
            LoRA name -> ``{"unet": {"down": {"block_0": w, ...}, "mid": w, "up": {...}}, "text_encoder": w}``.

        Raises:
            UserError: for coefficients of another granularity or that diffusers' block weights cannot express.
        """
        granularity = self._check_coefficients(coeffs)
        out: dict[str, dict[str, Any]] = {}
        for lora in self.names:
            if granularity[lora] != "block":
                raise UserError(f"diffusers block weights need block coefficients; {lora} has {granularity[lora]}")
            self._check_diffusers_reach(lora, coeffs[lora])
            out[lora] = _diffusers_weights(coeffs[lora])
        return out

    def a1111_block_weights(self, coeffs: Mapping[str, Mapping[str, float]], lora: str) -> str:
        """LoRA ``lora``'s block coefficients as A1111 lora-block-weight's 17 values (SD 1.x only).

        Slots: ``BASE`` <- ``text_encoder``; ``IN01,IN02`` <- ``down.0``; ``IN04,IN05`` <- ``down.1``;
        ``IN07,IN08`` <- ``down.2``; ``MID`` <- ``mid``; ``OUT03-05`` <- ``up.1``; ``OUT06-08`` <- ``up.2``;
        ``OUT09-11`` <- ``up.3`` (SD 1.5's layout: two transformers per down block, three per up block; ``down.3``
        and ``up.0`` hold no attentions and have no slot). A group the LoRA does not touch gets 1.

        Args:
            coeffs: Block-granularity coefficients.
            lora: Which loaded LoRA.

        Returns:
            ``"1,0.5,..."``, 17 comma-separated values, for ``<lora:name:1:lbw=...>``.

        Raises:
            UserError: for another architecture or granularity, or a coefficient that has no slot.
        """
        arch = base_facts(self.pipe)["arch"]
        if arch != "sd1":
            raise UserError(f"A1111 17-value block weights exist for SD 1.x only; the loaded model is {arch}")
        granularity = self._check_coefficients(coeffs)
        if granularity[lora] != "block":
            raise UserError(f"A1111 block weights need block coefficients; {lora} has {granularity[lora]}")
        values = coeffs[lora]
        slotless = {g: v for g, v in values.items() if g not in _A1111_GROUP.values() and v != 1.0}
        if slotless:
            raise UserError(f"A1111's 17-value block weights have no slot for {lora} groups {sorted(slotless)}")
        return ",".join(f"{float(values.get(_A1111_GROUP[slot], 1.0)):.6g}" for slot in A1111_SLOTS)

    # --- checks ---------------------------------------------------------------------------------------------

    def _check_coefficients(self, coeffs: Mapping[str, Mapping[str, float]]) -> dict[str, str]:
        """Check ``coeffs`` fits the loaded LoRAs; return each LoRA's granularity."""
        unknown = sorted(set(coeffs) - set(self.names))
        missing = [n for n in self.names if n not in coeffs]
        if unknown or missing:
            raise ValueError(f"coefficients for LoRAs {sorted(coeffs)}, but the loaded LoRAs are {self.names}")
        return {lora: self._granularity_of(lora, coeffs[lora]) for lora in self.names}

    def _granularity_of(self, lora: str, groups: Mapping[str, float]) -> str:
        for granularity in GRANULARITIES:
            needed = self.lora_group_keys(lora, granularity)
            if groups and set(groups) <= set(self.group_keys(granularity)):
                lacking = [g for g in needed if g not in groups]
                if lacking:
                    raise ValueError(f"{granularity} coefficients of {lora} lack groups {lacking}")
                return granularity
        raise ValueError(
            f"coefficients of {lora} ({sorted(groups)}) are not all group keys of one granularity; "
            f"block keys are {self.group_keys('block')}"
        )

    def _check_diffusers_reach(self, lora: str, groups: Mapping[str, float]) -> None:
        unet = self.pipe.unet
        with_attn = {
            f"{side}.{i}"
            for side, blocks in (("down", unet.down_blocks), ("up", unet.up_blocks))
            for i, block in enumerate(blocks)
            if hasattr(block, "attentions")
        }
        for slot in self.slots:
            if lora not in slot.base or slot.component != "unet":
                continue
            group = slot.groups["block"]
            if group == "unet":  # diffusers' lookup indexes name parts these names lack and fails
                raise UserError(f"diffusers' block weights cannot handle {lora} module {slot.name} outside the blocks")
            reached = group in with_attn or slot.name.startswith("mid_block.attentions.")
            if not reached and groups[group] != 1.0:
                raise UserError(
                    f"diffusers' block weights cannot scale {lora} module {slot.name} (group {group}); "
                    "use set_coefficients or coefficient 1 there"
                )


_HEAD_ORDER = {"all": 0, "down": 1, "mid": 2, "up": 3, "unet": 4, "text_encoder": 5, "text_encoder_2": 6}


def _key_order(key: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key for group keys: UNet path order first, numbers compared as numbers (``up.10`` after ``up.9``)."""
    head, *rest = key.split(".")
    return ((0, _HEAD_ORDER.get(head, 9)), *((0, int(p)) if p.isdigit() else (1, p) for p in rest))


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r}: expected one of {', '.join(GRANULARITIES)}")


def _diffusers_weights(groups: Mapping[str, float]) -> dict[str, Any]:
    unet: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for group, value in groups.items():
        if group in TEXT_ENCODERS:
            out[group] = float(value)
        elif group == "mid":
            unet["mid"] = float(value)
        elif group != "unet":  # modules outside the blocks: checked to be 1, diffusers' default
            side, _, level = group.partition(".")
            unet.setdefault(side, {})[f"block_{level}"] = float(value)
    out["unet"] = unet
    return out


# --- peft internals -----------------------------------------------------------------------------------------


def _set_scaling(module: Any, adapter: str, value: float) -> None:
    """Write one adapter's scale in one peft ``LoraLayer``.

    The only place touching peft internals: ``LoraLayer.scaling`` is a plain dict that the forward pass reads.
    peft's public ``set_scale`` recomputes the scale from ``lora_alpha``/``r`` and would work as well, but
    scaling the value read at load time stays right for whatever scale the loader derived.
    """
    module.scaling[adapter] = value


def _scaling_of(module: Any, adapter: str) -> float:
    """The scale peft applies to ``adapter`` in ``module`` (see ``_set_scaling``)."""
    return float(module.scaling[adapter])


# --- loading ------------------------------------------------------------------------------------------------


def base_facts(pipe: Any) -> dict[str, Any]:
    """The ``KeptAdapter.base`` facts of a loaded SD/SDXL pipeline (what ``autolora.export`` needs).

    Raises:
        UserError: for a pipeline that is neither ``StableDiffusionPipeline`` nor ``StableDiffusionXLPipeline``.
    """
    cls = type(pipe).__name__
    if cls not in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        raise UserError(f"LoRA fusion supports StableDiffusionPipeline and StableDiffusionXLPipeline, not {cls}")
    unet_config = pipe.unet.config
    sd_arch = "sd2" if unet_config.cross_attention_dim == 1024 else "sd1"  # the rule autolora.models.loading uses
    arch = "sdxl" if cls == "StableDiffusionXLPipeline" else sd_arch
    return {
        "source": str(pipe.config.get("_name_or_path", "") or ""),
        "arch": arch,
        "layers_per_block": unet_config.layers_per_block,
        "resolution": int(unet_config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8)),
        "prediction_type": pipe.scheduler.config.get("prediction_type", "epsilon"),
        "pipeline_class": cls,
    }


def check_lora_file(path: Path, cross_attention_dim: int, components: Iterable[str] = _COMPONENTS) -> None:
    """Check a LoRA file from its header alone (no tensor is read).

    Args:
        path: The file.
        cross_attention_dim: The base model's text-embedding width (``unet.config.cross_attention_dim``).
        components: The pipeline's LoRA-loadable components present (``unet``, ``text_encoder``...).

    Raises:
        UserError: one line naming the file and what was expected.
    """
    from safetensors import safe_open

    if not path.is_file():
        raise UserError(f"LoRA file {path}: not found (expected a .safetensors LoRA file)")
    if path.suffix != ".safetensors":
        raise UserError(f"LoRA file {path}: expected a .safetensors file (pickle files can run code)")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            widths = {f.get_slice(k).get_shape()[1] for k in keys if _CROSS_KV_DOWN.search(k)}
    except Exception as e:  # safetensors raises several types for a damaged header
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"LoRA file {path}: not a readable safetensors file ({reason})") from None
    lora_keys = [k for k in keys if _LORA_KEY.search(k)]
    if not lora_keys or not any(k.startswith(_KNOWN_PREFIX) for k in lora_keys):
        raise UserError(
            f"LoRA file {path}: no LoRA weights (expected diffusers keys unet.*/text_encoder*.* or kohya keys "
            "lora_unet_*/lora_te*)"
        )
    _check_width(path, widths, cross_attention_dim)
    has_te2 = any(k.startswith(("text_encoder_2.", "lora_te2_")) for k in lora_keys)
    if has_te2 and "text_encoder_2" not in components:
        raise UserError(f"LoRA file {path}: has text_encoder_2 weights (an SDXL LoRA) but the base model has none")


def _check_width(path: Path, widths: set[int], cross_attention_dim: int) -> None:
    def arch(width: int) -> str:
        return _WIDTH_ARCH.get(width, "an unknown model")

    if len(widths) > 1:
        raise UserError(f"LoRA file {path}: cross-attention widths {sorted(widths)} disagree (a damaged LoRA)")
    for width in widths:
        if width != cross_attention_dim:
            raise UserError(
                f"LoRA file {path}: made for {arch(width)} (cross-attention width {width}), but the base model "
                f"is {arch(cross_attention_dim)} (width {cross_attention_dim})"
            )


def _lora_components(pipe: Any) -> list[str]:
    return [c for c in _COMPONENTS if getattr(pipe, c, None) is not None]


def load_loras(pipe: Any, files: Sequence[Path], names: Sequence[str]) -> FusedAdapters:
    """Load every LoRA file as its own adapter and make them all active at coefficient 1.

    Every file is checked before the first is loaded; a failure while loading removes what was loaded, so an
    error leaves the pipeline as it was.

    Args:
        pipe: A loaded ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``.
        files: LoRA files (diffusers/PEFT or kohya/A1111 ``.safetensors``).
        names: One adapter name per file: letters, digits, ``_`` and ``-`` (a ``.`` would make
            ``f"{lora}.{group}"`` parameter names ambiguous, and peft refuses it).

    Returns:
        The loaded adapters.

    Raises:
        UserError: for a bad name, a file that is missing, unreadable, not a LoRA or for another base model.
    """
    files = [Path(f) for f in files]
    _check_names(pipe, files, names)
    components = _lora_components(pipe)
    for path in files:
        check_lora_file(path, int(pipe.unet.config.cross_attention_dim), components)
    try:
        for path, name in zip(files, names, strict=True):
            _load_one(pipe, path, name)
        pipe.set_adapters(list(names))  # weights 1.0: from now on only the scales change
        fa = FusedAdapters(pipe=pipe, names=list(names), files=files)
        fa.slots = _slots(pipe, list(names))
    except BaseException:
        # also the adapter that failed half-way (loaded into the UNet but not the text encoder, say)
        present = {a for adapters in pipe.get_list_adapters().values() for a in adapters}
        _remove(pipe, [n for n in names if n in present])
        raise
    return fa


def _check_names(pipe: Any, files: Sequence[Path], names: Sequence[str]) -> None:
    if len(files) != len(names):
        raise UserError(f"{len(files)} LoRA files but {len(names)} names; give one name per file")
    if not names:
        raise UserError("no LoRA files to fuse")
    for name in names:
        if not _SAFE_NAME.fullmatch(name):
            raise UserError(f"LoRA name {name!r}: use letters, digits, '_' and '-' only")
    if len(set(names)) != len(names):
        raise UserError(f"LoRA names {list(names)} repeat; give each file its own name")
    present = {a for adapters in pipe.get_list_adapters().values() for a in adapters}
    taken = sorted(present & set(names))
    if taken:
        raise UserError(f"LoRA names {taken} are already adapters of this pipeline; choose others")


def _load_one(pipe: Any, path: Path, name: str) -> None:
    try:
        pipe.load_lora_weights(str(path), adapter_name=name)
    except Exception as e:  # diffusers raises ValueError/KeyError/RuntimeError for files it cannot map
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"LoRA file {path}: diffusers could not load it into this model ({reason})") from None
    if not any(name in a for a in pipe.get_list_adapters().values()):
        # diffusers only warns when no key matches a module of the model
        raise UserError(f"LoRA file {path}: none of its modules exists in the base model (made for another model?)")


def _slots(pipe: Any, names: list[str]) -> list[_Slot]:
    from peft.tuners.lora import LoraLayer

    slots = []
    for comp in _lora_components(pipe):
        for module_name, module in getattr(pipe, comp).named_modules():
            if not isinstance(module, LoraLayer):
                continue
            base = {n: _scaling_of(module, n) for n in names if n in module.lora_A}
            if base:
                slots.append(_Slot(comp, module_name, module, _groups(comp, module_name), base))
    return slots


def _groups(component: str, name: str) -> dict[str, str]:
    """The group key of a module at every granularity."""
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


def unload(fa: FusedAdapters) -> None:
    """Remove the fusion's adapters; with no other adapter left, restore the original modules.

    peft never writes to the base weights of an unmerged adapter, so afterwards they are bit-identical.
    """
    _remove(fa.pipe, fa.names)
    fa.slots = []


def _remove(pipe: Any, names: Sequence[str]) -> None:
    if names:
        pipe.delete_adapters(list(names))
    if not any(pipe.get_list_adapters().values()):
        pipe.unload_lora_weights()  # delete_adapters leaves empty peft wrappers around the base layers


# --- two phases ---------------------------------------------------------------------------------------------


class TwoPhase:
    """``callback_on_step_end`` switching coefficient sets: ``early`` for layout, ``late`` for detail.

    Steps ``0 .. k-1`` use ``early`` and steps ``k ..`` use ``late``, with ``k = round(switch_at * steps)`` kept
    within ``1 .. steps`` (``switch_at`` 1 never switches). After the last step ``early`` is set again, so the
    same callback serves the next call; call ``start`` after an interrupted generation.
    """

    def __init__(
        self,
        fa: FusedAdapters,
        early: Mapping[str, Mapping[str, float]],
        late: Mapping[str, Mapping[str, float]],
        switch_at: float,
    ) -> None:
        if not 0.0 < switch_at <= 1.0:
            raise ValueError(f"switch_at {switch_at}: expected a fraction of the steps in (0, 1]")
        fa._check_coefficients(late)  # fail now, not in the middle of a generation
        self.fa, self.early, self.late, self.switch_at = fa, early, late, switch_at
        self.start()

    def start(self) -> None:
        """Set the early coefficients (done at construction and after each generation's last step)."""
        self.fa.set_coefficients(self.early)

    def switch_step(self, steps: int) -> int:
        """The first step that uses the late coefficients, out of ``steps``."""
        return min(max(round(self.switch_at * steps), 1), steps)

    def __call__(self, pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        steps = int(pipe.num_timesteps)
        if step_index + 1 >= steps:
            self.start()
        elif step_index + 1 == self.switch_step(steps):
            self.fa.set_coefficients(self.late)
        return callback_kwargs


# --- one exact adapter --------------------------------------------------------------------------------------


def fused_adapter(fa: FusedAdapters, coeffs: Mapping[str, Mapping[str, float]]) -> KeptAdapter:
    """The fusion ``coeffs`` as one exact LoRA adapter, ranks concatenated.

    Per module: ``A = cat_r(A_i)``, ``B = cat_r(coef_i * scale_i * B_i)`` over the adapters with a non-zero
    coefficient, so ``B @ A = sum_i coef_i * scale_i * B_i @ A_i`` exactly. See ``_kept`` for how the scale is
    stored.

    Args:
        fa: The loaded LoRAs.
        coeffs: Coefficients of any granularity.

    Returns:
        A ``KeptAdapter`` for the unet and the text encoders the LoRAs touch, ready for ``export_all``.

    Raises:
        UserError: for DoRA or bias-carrying adapters (their effect is not a sum of low-rank products) or a
            fusion with every coefficient zero.
    """
    import torch

    fa._check_coefficients(coeffs)
    factors: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    with torch.no_grad():
        for slot in fa.slots:
            downs, ups = [], []
            for adapter, base in slot.base.items():
                coef = fa._coefficient_of(slot, adapter, coeffs)
                if coef == 0.0:
                    continue
                _check_plain(slot, adapter)
                downs.append(slot.module.lora_A[adapter].weight.detach().float().cpu())
                ups.append(slot.module.lora_B[adapter].weight.detach().float().cpu() * (coef * base))
            if downs:
                factors.setdefault(slot.component, {})[slot.name] = (torch.cat(downs, 0), torch.cat(ups, 1))
    if not factors:
        raise UserError("cannot build a fused adapter: every coefficient is zero")
    return _kept(factors, base_facts(fa.pipe), {"fusion": {"files": [str(f) for f in fa.files], "coeffs": coeffs}})


def _check_plain(slot: _Slot, adapter: str) -> None:
    module = slot.module
    if getattr(module, "use_dora", {}).get(adapter) or getattr(module, "lora_bias", {}).get(adapter):
        raise UserError(f"cannot fuse {adapter}: module {slot.name} is DoRA or has a LoRA bias (not low-rank)")


def _kept(
    factors: Mapping[str, Mapping[str, tuple[torch.Tensor, torch.Tensor]]], base: dict[str, Any], info: dict[str, Any]
) -> KeptAdapter:
    """A ``KeptAdapter`` whose modules apply exactly ``B @ A`` (``factors`` carry any scale in ``B``).

    ``lora_alpha`` is the most common rank R for every module and ``rank_pattern`` lists the other ranks, whose
    ``B`` is multiplied by ``r / R`` to cancel their scale ``R / r``. One alpha for all modules (rather than
    ``alpha = r`` per module) because diffusers' kohya loader gives attention projections the file's most
    common alpha (see ``autolora.export``), so only a single alpha reloads exactly from both files.
    """
    configs: dict[str, dict[str, Any]] = {}
    state_dicts: dict[str, dict[str, torch.Tensor]] = {}
    for comp, modules in factors.items():
        ranks = {name: int(down.shape[0]) for name, (down, _) in modules.items()}
        common = Counter(ranks.values()).most_common(1)[0][0]
        state: dict[str, torch.Tensor] = {}
        for name, (down, up) in modules.items():
            state[f"{name}.lora_A.weight"] = down.contiguous()
            state[f"{name}.lora_B.weight"] = (up * (ranks[name] / common)).contiguous()
        configs[comp] = _config(ranks, common)
        state_dicts[comp] = state
    return KeptAdapter(configs=configs, state_dicts=state_dicts, base=dict(base), info=info)


def _config(ranks: Mapping[str, int], common: int) -> dict[str, Any]:
    from peft import LoraConfig

    from autolora.adapter import config_to_dict

    # Exact names, escaped: peft reads rank_pattern keys as regular expressions matched at the name's end.
    pattern = {re.escape(name): rank for name, rank in ranks.items() if rank != common}
    config = LoraConfig(
        r=common,
        lora_alpha=common,
        target_modules=sorted(ranks),
        rank_pattern=pattern,
        init_lora_weights=False,
    )
    return config_to_dict(config)


# --- rank reduction -----------------------------------------------------------------------------------------


def reduce_rank(adapter: KeptAdapter, rank: int) -> tuple[KeptAdapter, float]:
    """Compress every module's ``delta = scale * B @ A`` to at most ``rank`` by truncated SVD.

    The SVD works on the small ``r x r`` core of QR factors of ``B`` and ``A^T`` (``delta`` itself is never
    formed), so it is cheap even for SDXL and exact up to float rounding.

    Args:
        adapter: A plain LoRA adapter (e.g. from ``fused_adapter``); DoRA is refused.
        rank: The largest rank to keep (>= 1).

    Returns:
        The reduced adapter and the largest relative Frobenius error ``||delta - delta_k|| / ||delta||`` over
        its modules (the worst module, not an average: one ruined layer shows).

    Raises:
        UserError: for a DoRA adapter or a rank below 1.
    """
    if rank < 1:
        raise UserError(f"rank {rank}: expected at least 1")
    if any(cfg.get("use_dora") for cfg in adapter.configs.values()):
        raise UserError("cannot reduce the rank of a DoRA adapter (its magnitude vector is not low-rank)")
    factors: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    worst = 0.0
    for comp, modules in _adapter_factors(adapter):
        for name, down, up in modules:
            new_down, new_up, error = _truncate(down, up, rank)
            factors.setdefault(comp, {})[name] = (new_down, new_up)
            worst = max(worst, error)
    info = {**adapter.info, "reduced_rank": rank, "rank_error": worst}
    return _kept(factors, adapter.base, info), worst


def _adapter_factors(
    adapter: KeptAdapter,
) -> Iterator[tuple[str, Iterator[tuple[str, torch.Tensor, torch.Tensor]]]]:
    """Per component, every module's ``(name, A, scale * B)`` in float32."""
    for comp, state in adapter.state_dicts.items():
        config = adapter.configs[comp]
        yield comp, _module_factors(state, config)


def _module_factors(
    state: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    for key in sorted(k for k in state if k.endswith(".lora_A.weight")):
        name = key.removesuffix(".lora_A.weight")
        down = state[key].float()
        scale = _module_scale(config, name, int(down.shape[0]))
        yield name, down, state[f"{name}.lora_B.weight"].float() * scale


def _module_scale(config: Mapping[str, Any], module: str, rank: int) -> float:
    """peft's scale of ``module``: ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA), patterns as peft reads them."""
    from peft.utils.other import get_pattern_key

    alphas = config.get("alpha_pattern") or {}
    alpha = float(alphas.get(get_pattern_key(list(alphas), module), config.get("lora_alpha", 8)))
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _truncate(down: torch.Tensor, up: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-``rank`` factors of ``up @ down`` (convs flattened) and the relative Frobenius error."""
    import torch

    flat_down = down.reshape(down.shape[0], -1).double()  # (r, in * kh * kw)
    flat_up = up.reshape(up.shape[0], -1).double()  # (out, r), also for a 1x1 conv lora_B
    q_up, r_up = torch.linalg.qr(flat_up)
    q_down, r_down = torch.linalg.qr(flat_down.T)
    u, s, vh = torch.linalg.svd(r_up @ r_down.T)
    k = min(rank, int(s.shape[0]))
    total = float(s.square().sum())
    error = math.sqrt(float(s[k:].square().sum()) / total) if total > 0 else 0.0
    root = s[:k].sqrt()
    new_up = (q_up @ u[:, :k]) * root
    new_down = (root[:, None] * vh[:k]) @ q_down.T
    shape_down = (k, *down.shape[1:])
    shape_up = (up.shape[0], k, *up.shape[2:])
    return new_down.reshape(shape_down).to(down.dtype), new_up.reshape(shape_up).to(up.dtype), error
