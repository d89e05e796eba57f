"""The layer map of DiT transformers (SD 3.x ``SD3Transformer2DModel``, Flux.1 ``FluxTransformer2DModel``).

Diffusers names both models' blocks alike: ``transformer_blocks.N`` are SD3's joint (MMDiT) blocks and
Flux's double-stream blocks, each with an image stream (``attn.to_q``..., ``ff``) and a text ("context")
stream (``attn.add_q_proj``..., ``attn.to_add_out``, ``ff_context``); ``single_transformer_blocks.N`` are
Flux's single-stream blocks (``attn.to_q/k/v``, ``proj_mlp``, ``proj_out``). Groups:

- blocks: ``double`` (also spelt ``joint``, SD3's name), ``single``; one block ``double.3``; a depth range
  ``single.10-37`` (inclusive).
- layers: ``attn`` (image-stream attention q/k/v/out, SD 3.5's second attention ``attn2`` too),
  ``context_attn`` (the text stream's added projections), ``ff`` (image-stream feed-forward; a single block's
  ``proj_mlp`` and its fused output ``proj_out``), ``context_ff``, ``norm`` (the adaLN modulation linears).
- projections ``q``/``k``/``v``/``out`` filter ``attn`` and ``context_attn``.
"""

from __future__ import annotations

import re

BLOCKS = ("double", "single")
ALIASES = {"joint": "double"}
LAYERS = ("attn", "context_attn", "ff", "context_ff", "norm")

_BLOCK_RE = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")
_SPEC_RE = re.compile(r"^(double|joint|single)(?:\.(\d+)(?:-(\d+))?)?$")
_ATTN = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "out"}
_CONTEXT = {"add_q_proj": "q", "add_k_proj": "k", "add_v_proj": "v", "to_add_out": "out"}


def block_of(name: str) -> tuple[str, int] | None:
    """``transformer_blocks.3.x`` -> ("double", 3); ``single_transformer_blocks.0.x`` -> ("single", 0)."""
    m = _BLOCK_RE.match(name)
    if not m:
        return None
    return ("double" if m.group(1) == "transformer_blocks" else "single", int(m.group(2)))


def layer_of(name: str) -> tuple[str, str | None] | None:
    """The layer kind (and attention projection) of a module inside a transformer block."""
    m = _BLOCK_RE.match(name)
    if not m:
        return None
    rest = m.group(3)
    attn, _, tail = rest.partition(".")
    if attn in ("attn", "attn2"):
        if tail in _ATTN:
            return ("attn", _ATTN[tail])
        if tail in _CONTEXT:
            return ("context_attn", _CONTEXT[tail])
        return None
    if rest in ("ff.net.0.proj", "ff.net.2", "proj_mlp", "proj_out"):
        return ("ff", None)
    if rest in ("ff_context.net.0.proj", "ff_context.net.2"):
        return ("context_ff", None)
    if rest in ("norm1.linear", "norm1_context.linear", "norm.linear"):
        return ("norm", None)
    return None


def check_block_name(block: str) -> bool:
    m = _SPEC_RE.match(block)
    if m is None:
        return False
    return m.group(3) is None or int(m.group(3)) >= int(m.group(2))


def block_matches(found: tuple[str, int | None], block: str) -> bool:
    """Does block spec ``block`` (``double``, ``joint.2``, ``single.10-37``) contain the block ``found``?"""
    m = _SPEC_RE.match(block)
    if not m:
        return False
    group = ALIASES.get(m.group(1), m.group(1))
    if group != found[0]:
        return False
    if m.group(2) is None:
        return True
    low = int(m.group(2))
    high = int(m.group(3)) if m.group(3) is not None else low
    return found[1] is not None and low <= found[1] <= high
