"""Several style LoRAs loaded on one pipeline, mixed per module without reloading.

``load_loras`` checks every LoRA file cheaply (header only), then loads each as its own diffusers adapter and
activates them all together. From then on a fusion is only a set of numbers: ``FusedAdapters.set_coefficients``
sets, for every peft ``LoraLayer`` and every adapter, ``scaling = base_scaling * coefficient``. No weight is
copied, merged or reloaded, so an Optuna trial costs one generation. Group keys: ``autolora.loras.groups``.

Text-encoder coefficients act when the prompt is encoded, i.e. before the first denoising step, so in a
``TwoPhase`` run only the early set matters for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolora.errors import UserError
from autolora.loras import translate
from autolora.loras.files import check_lora_file
from autolora.loras.groups import COMPONENTS, GRANULARITIES, Coefficients, check_granularity, groups_of, key_order
from autolora.loras.schedule import TwoPhase

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class Slot:
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
    slots: list[Slot] = field(default_factory=list, repr=False)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)
    """What blends compute once from the loaded weights (K-LoRA's magnitudes)."""

    def group_keys(self, granularity: str) -> list[str]:
        """Group keys of ``granularity`` that hold at least one module of any loaded LoRA.

        Args:
            granularity: ``global``, ``block`` or ``layer``.

        Returns:
            The keys in the order down, mid, up, unet, text encoders (numbers numerically), e.g.
            ``["down.0", "down.1", "mid", "up.0", "up.1", "text_encoder"]``.
        """
        check_granularity(granularity)
        return sorted({slot.groups[granularity] for slot in self.slots}, key=key_order)

    def lora_group_keys(self, lora: str, granularity: str) -> list[str]:
        """Group keys of ``granularity`` in which LoRA ``lora`` has modules (the coefficients it needs), ordered
        as ``group_keys``."""
        check_granularity(granularity)
        return sorted({s.groups[granularity] for s in self.slots if lora in s.base}, key=key_order)

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

    def _coefficient_of(self, slot: Slot, adapter: str, coeffs: Mapping[str, Mapping[str, float]]) -> float:
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
        return translate.set_adapters_weights(self, coeffs)

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
        return translate.a1111_vector(self, coeffs, lora)

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


def lora_components(pipe: Any) -> list[str]:
    return [c for c in COMPONENTS if getattr(pipe, c, None) is not None]


def load_loras(pipe: Any, files: Sequence[Path], names: Sequence[str]) -> FusedAdapters:
    """Load every LoRA file as its own adapter and make them all active at coefficient 1.

    Every file is checked before the first is loaded; a failure while loading removes what was loaded, so an
    error leaves the pipeline as it was.

    Args:
        pipe: A loaded SD 1.x/2.x, SDXL, SD 3.x or Flux.1 pipeline.
        files: LoRA files (diffusers/PEFT or kohya/A1111 ``.safetensors``; LyCORIS LoHa/LoKr files of UNet
            models load as their exact LoRA).
        names: One adapter name per file: letters, digits, ``_`` and ``-`` (a ``.`` would make
            ``f"{lora}.{group}"`` parameter names ambiguous, and peft refuses it).

    Returns:
        The loaded adapters.

    Raises:
        UserError: for a bad name, a file that is missing, unreadable, not a LoRA or for another base model.
    """
    files = [Path(f) for f in files]
    _check_names(pipe, files, names)
    components = lora_components(pipe)
    unet = getattr(pipe, "unet", None)
    width = int(unet.config.cross_attention_dim) if unet is not None else 0
    kinds = [check_lora_file(path, width, components) for path in files]
    try:
        for path, name, kind in zip(files, names, kinds, strict=True):
            if kind == "lycoris":
                _load_lycoris(pipe, path, name)
            else:
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


def _load_one(pipe: Any, path: Path, name: str, shown: Path | None = None) -> None:
    """Load ``path`` as adapter ``name``; errors name ``shown`` (the user's file) when given."""
    import logging

    shown = shown or path

    # diffusers logs the whole traceback at ERROR before it raises; the user gets our one line instead.
    diffusers_log = logging.getLogger("diffusers")
    level = diffusers_log.level
    diffusers_log.setLevel(logging.CRITICAL)
    try:
        pipe.load_lora_weights(str(path), adapter_name=name)
    except Exception as e:  # diffusers raises ValueError/KeyError/RuntimeError for files it cannot map
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"LoRA file {shown}: diffusers could not load it into this model ({reason})") from None
    finally:
        diffusers_log.setLevel(level)
    if not any(name in a for a in pipe.get_list_adapters().values()):
        # diffusers only warns when no key matches a module of the model
        raise UserError(f"LoRA file {shown}: none of its modules exists in the base model (made for another model?)")


def _load_lycoris(pipe: Any, path: Path, name: str) -> None:
    """A LyCORIS LoHa/LoKr file as its exact LoRA (``autolora.loras.lycoris``), written as a diffusers file for
    diffusers' loader (which maps LoRA factors only) and loaded from there; the written file is gone afterwards."""
    import tempfile

    from autolora.formats.export import export_all
    from autolora.loras.lycoris import read_lycoris

    adapter = read_lycoris(path, pipe)
    with tempfile.TemporaryDirectory(prefix="autolora-lycoris-") as folder:
        _load_one(pipe, export_all(adapter, Path(folder), path.stem, kohya=False)["diffusers"], name, path)


def _slots(pipe: Any, names: list[str]) -> list[Slot]:
    from peft.tuners.lora import LoraLayer

    slots = []
    for comp in lora_components(pipe):
        for module_name, module in getattr(pipe, comp).named_modules():
            if not isinstance(module, LoraLayer):
                continue
            base = {n: _scaling_of(module, n) for n in names if n in module.lora_A}
            if base:
                slots.append(Slot(comp, module_name, module, groups_of(comp, module_name), base))
    return slots


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
