"""Export a kept adapter as files that diffusers, A1111/Forge and ComfyUI load.

``export_all`` writes three files into one folder::

    pytorch_lora_weights.safetensors   diffusers format (``pipe.load_lora_weights``), with the peft LoraConfig
                                       of every component in the metadata so alpha and per-module ranks survive
    <name>.safetensors                 kohya format (A1111, Forge, ComfyUI, SD.Next, diffusers' kohya loader)
    autolora.json                      study, trial, params, scores, base model facts, library versions

The one entry point both jobs export through (``export_all``); each format has its module beside this one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from autolora.adapter import KeptAdapter
from autolora.atomic import write_text
from autolora.errors import UserError
from autolora.formats.diffusers import DIFFUSERS_FILE, export_diffusers
from autolora.formats.embedding import embedding_tensors, write_embedding
from autolora.formats.extract import DEFAULT_RANK, extract_lora, load_base_denoiser, save_tuned
from autolora.formats.kept import adapter_method, check_adapter
from autolora.formats.kohya import KOHYA_ARCHS, export_kohya, is_dora, kohya_plan
from autolora.formats.lycoris import LYCORIS_ARCHS, lycoris_plan, write_lycoris
from autolora.formats.peft import PEFT_FOLDER, export_peft
from autolora.methods import method_of

INFO_FILE = "autolora.json"
_VERSIONED_PACKAGES = ("autolora", "torch", "diffusers", "peft", "transformers", "optuna", "safetensors")


# A file stem that is safe on every OS and in A1111's <lora:name:1> prompt syntax; no leading dot (hidden, "..").
_SAFE_STEM = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def export_adapter(
    adapter: KeptAdapter, out: Path, name: str, *, rank: int | None = None, echo: Callable[[str], None] = print
) -> dict[str, Path]:
    """Write every file the users of the adapter's method load, and say which files were skipped and why.

    The one entry point both jobs export through. The method's ``files`` decide the layout
    (``autolora.methods.base.Method.files``); within it, the kohya/LyCORIS file is written where the format holds
    the adapter (its architecture has one; not DoRA).

    Args:
        adapter: The adapter to export.
        out: Folder to write into; created when missing.
        name: File stem of the files named after the adapter.
        rank: The rank of the LoRA extracted from a fine-tuned denoiser (a ``denoiser`` method); None: 16.
        echo: Where the skip lines go.

    Returns:
        What was written, by kind (``diffusers``, ``kohya``, ``peft``, ``embedding``, ``info``, a denoiser folder).
    """
    method = adapter_method(adapter)
    arch = adapter.base.get("arch")
    if method.files == "denoiser":
        return _export_denoiser(adapter, out, name, rank, echo)
    if method.files == "embedding":
        echo("diffusers skipped: a textual inversion is one embedding file (A1111, ComfyUI and diffusers load it)")
        return export_all(adapter, out, name, kohya=False)
    if method.files == "lycoris":
        echo(
            f"diffusers skipped: diffusers' load_lora_weights reads LoRA only; the {method.name} adapter goes out "
            "as the LyCORIS file (A1111, Forge, ComfyUI) and peft folders"
        )
        if arch not in LYCORIS_ARCHS:
            echo(f"kohya     skipped: no LyCORIS file for {arch}; load the peft folder")
        return export_all(adapter, out, name, kohya=arch in LYCORIS_ARCHS)
    dora = is_dora(adapter)
    if dora:
        # The kohya format has no DoRA encoding that diffusers, A1111 and ComfyUI read alike.
        echo("kohya     skipped: DoRA adapters are exported in the diffusers format only")
    elif arch not in KOHYA_ARCHS:
        echo(f"kohya     skipped: {arch} LoRAs go out in the diffusers format, which ComfyUI and diffusers load")
    return export_all(adapter, out, name, kohya=not dora and arch in KOHYA_ARCHS)


def _export_denoiser(
    adapter: KeptAdapter, out: Path, name: str, rank: int | None, echo: Callable[[str], None]
) -> dict[str, Path]:
    """The fine-tuned denoiser (diffusers folder) and the LoRA extracted from it (diffusers + kohya files)."""

    check_name(name)
    if rank is not None and rank < 1:
        raise UserError(f"--rank {rank}: expected at least 1")
    model = load_base_denoiser(adapter)
    tuned = next(iter(adapter.state_dicts.values()))
    base = {k: model.get_parameter(k).detach().clone() for k in tuned}
    found = extract_lora(adapter, base, rank or DEFAULT_RANK)
    paths = export_all(found.adapter, out, name, kohya=adapter.base.get("arch") in KOHYA_ARCHS)
    comp = next(iter(adapter.state_dicts))
    paths[comp] = out / f"{name}-{comp}"
    save_tuned(model, tuned, paths[comp])
    echo(
        f"extracted LoRA rank {rank or DEFAULT_RANK}: relative error {found.error:.4f} of the fine-tuned update "
        f"(Frobenius, {len(tuned)} tensors; worst {found.worst[0]} {found.worst[1]:.4f}); bias updates "
        f"({found.bias_share:.1%} of it) are not in a LoRA: use the {comp} folder for all of it"
    )
    return paths


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
    check_adapter(adapter)
    method = adapter_method(adapter)
    if method.files not in WRITERS:
        raise UserError(f"cannot export a {method.name} adapter as files of one adapter: export it with export_adapter")
    return WRITERS[method.files](adapter, out_dir, name, kohya)


def _export_lora(adapter: KeptAdapter, out_dir: Path, name: str, kohya: bool) -> dict[str, Path]:
    """The diffusers file and the kohya file; a method that learns tokens too (pivotal) adds their embedding."""
    tokens = adapter_method(adapter).learns_tokens
    lora = _lora_part(adapter)
    if kohya:
        kohya_plan(lora)
    if tokens:
        embedding_tensors(adapter)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"diffusers": out_dir / DIFFUSERS_FILE}
    export_diffusers(lora, paths["diffusers"])
    if kohya:
        paths["kohya"] = out_dir / f"{name}.safetensors"
        export_kohya(lora, paths["kohya"], name)
    if tokens:
        # The diffusers advanced scripts' name for the embedding beside the LoRA.
        paths["embedding"] = out_dir / f"{name}_emb.safetensors"
        write_embedding(adapter, paths["embedding"])
    return _with_info(adapter, out_dir, name, paths)


def _with_info(adapter: KeptAdapter, out_dir: Path, name: str, paths: dict[str, Path]) -> dict[str, Path]:
    """Write ``autolora.json`` (naming the files written) last, and return every path."""
    paths["info"] = out_dir / INFO_FILE
    files = {kind: path.name for kind, path in paths.items() if kind != "info"}
    text = json.dumps(_info_document(adapter, name, files), indent=2, allow_nan=False) + "\n"
    write_text(paths["info"], text)
    return paths


def _lora_part(adapter: KeptAdapter) -> KeptAdapter:
    """The adapter without its token embeddings (pivotal tuning's LoRA)."""
    from dataclasses import replace

    comps = [c for c, cfg in adapter.configs.items() if method_of(cfg).name == "lora"]
    return replace(
        adapter, configs={c: adapter.configs[c] for c in comps}, state_dicts={c: adapter.state_dicts[c] for c in comps}
    )


def _export_embedding_only(adapter: KeptAdapter, out_dir: Path, name: str, kohya: bool) -> dict[str, Path]:
    """Textual inversion: ``<name>.safetensors`` is the embedding (its name is the prompt word in A1111/ComfyUI)."""
    embedding_tensors(adapter)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"embedding": out_dir / f"{name}.safetensors"}
    write_embedding(adapter, paths["embedding"])
    return _with_info(adapter, out_dir, name, paths)


def _export_lycoris_all(adapter: KeptAdapter, out_dir: Path, name: str, kohya: bool) -> dict[str, Path]:
    """LoHa/LoKr: the LyCORIS file (kohya key layout, what A1111, Forge and ComfyUI read) and peft's own folders;
    diffusers' ``load_lora_weights`` reads LoRA only, so there is no diffusers file."""

    plan = lycoris_plan(adapter) if kohya else []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"peft": out_dir / PEFT_FOLDER}
    export_peft(adapter, paths["peft"])
    if kohya:
        paths["kohya"] = out_dir / f"{name}.safetensors"
        write_lycoris(adapter, paths["kohya"], name, plan)
    return _with_info(adapter, out_dir, name, paths)


WRITERS: dict[str, Callable[[KeptAdapter, Path, str, bool], dict[str, Path]]] = {
    "lora": _export_lora,
    "lycoris": _export_lycoris_all,
    "embedding": _export_embedding_only,
}
"""The files of one adapter by its method's ``files``; ``denoiser`` (DreamBooth) is ``export_adapter``'s own."""


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
