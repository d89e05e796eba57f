"""Textual-inversion embeddings as the file A1111/Forge, ComfyUI and diffusers load.

One safetensors file: ``emb_params`` (vectors x 768 for SD 1.x, x 1024 for SD 2.x) or, for SDXL, ``clip_l`` and
``clip_g`` (the two text encoders' vectors), the layout A1111 (``textual_inversion.py``) and ComfyUI
(``comfy/sd1_clip.py``, ``load_embed``) read. In A1111 and ComfyUI the file's name is the word the prompt uses
(``my-style`` or ``embedding:my-style``); diffusers loads it with ``pipe.load_textual_inversion(path,
token="<autolora>")`` (SDXL: each key with its text encoder and tokenizer).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from autolora.atomic import write_file
from autolora.errors import UserError
from autolora.methods import method_of

if TYPE_CHECKING:
    import torch

    from autolora.adapter import KeptAdapter

KEY = "emb_params"
SDXL_KEYS = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}


def embedding_tensors(adapter: KeptAdapter) -> dict[str, torch.Tensor]:
    """The embedding file's tensors; raises ``UserError`` when the adapter has no token embeddings."""

    comps = [c for c, cfg in adapter.configs.items() if method_of(cfg).name == "textual_inversion"]
    if not comps:
        raise UserError("cannot export an embedding: the adapter learnt no token embeddings")
    arch = adapter.base.get("arch")
    if arch == "sdxl":
        if set(comps) != set(SDXL_KEYS):
            raise UserError(f"cannot export the SDXL embedding: it needs both text encoders' vectors, got {comps}")
        return {SDXL_KEYS[c]: adapter.state_dicts[c][KEY].float().contiguous() for c in comps}
    if comps != ["text_encoder"]:
        raise UserError(f"cannot export the {arch} embedding: expected the text_encoder's vectors, got {comps}")
    return {KEY: adapter.state_dicts["text_encoder"][KEY].float().contiguous()}


def write_embedding(adapter: KeptAdapter, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = embedding_tensors(adapter)
    meta = {"autolora.token": "<autolora>", "autolora.arch": str(adapter.base.get("arch"))}
    write_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
