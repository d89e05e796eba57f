"""Textual Inversion (Gal et al. 2022): new token embeddings for the trigger, every weight of the model frozen.

The learnt tokens are ``<autolora>``, ``<autolora>_1``... (``ti_vectors`` of them), added with diffusers' own
``load_textual_inversion`` (tokenizer + resized input embeddings; its pipelines expand ``<autolora>`` into all
the vectors) and removed with ``unload_textual_inversion``, which resizes the embeddings back: the original rows
are copied unchanged, and their dtype is restored, so the base is bit-identical afterwards. In the captions and
evaluation prompts the trigger's identifier (``data.identifier``, ``sks``) is written as the token and the rest of the
trigger kept (``in <autolora> style``); a trigger without it is replaced whole.

Only the new rows train: the whole input-embedding matrix is the optimiser's parameter (as in diffusers'
``textual_inversion.py``), with a gradient hook that zeroes every other row and no weight decay, so AdamW's
update of an old row is exactly zero. The trainable parameter count is the new rows only.

Retraction (``ti_retract``, off by default, searchable): plain TI lets the new vectors grow without bound (on the
built-in world 8-13x the vocabulary's row norm after 300 steps at lr 0.02). With it, after each step the new rows
are scaled by ``(std_vocab / std_new) ** 0.1``, the retraction of diffusers' advanced DreamBooth-LoRA scripts
(``TokenEmbeddingsHandler.retract_embeddings``): the same run ends at 2x the vocabulary's norm. Written here
because diffusers ships it only inside those example scripts. Off by default because it is not measured to help:
on the built-in world TI loses the subject with or without it (content_text_ratio 0.69-0.76 either way, 2 runs
each; at lr 1e-7, i.e. the initial vectors, 0.99), so the subject is lost through what the token learns, not its
size. ``benchmarks/methods.py`` searches it.

``Pivotal`` (pivotal tuning, as diffusers' "advanced" scripts do it): this embedding and a UNet LoRA trained
together, each at its own learning rate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autolora.errors import UserError
from autolora.methods.base import TEXT_ENCODERS, TOKENIZERS, Method, Settings, text_encoders
from autolora.methods.lora import Lora
from autolora.methods.param import Param

if TYPE_CHECKING:
    import torch

TOKEN = "<autolora>"
PEFT_TYPE = "TEXTUAL_INVERSION"
KEY = "emb_params"


TI_PARAMS: dict[str, Param] = {
    "ti_vectors": Param(
        "int",
        1,
        lambda v: 1 <= v <= 75,
        "an integer in [1, 75]",
        help="textual inversion: vectors of the token",
    ),
    "ti_init": Param(
        "word",
        "style",
        lambda v: bool(re.fullmatch(r"[A-Za-z][A-Za-z'-]*", v)),
        "a word (letters)",
        help="textual inversion: the word whose embedding the vectors start from",
    ),
    "ti_learning_rate": Param(
        "float",
        5e-3,
        lambda v: 0 < v < 1,
        "a number in (0, 1)",
        help="textual inversion: the tokens' AdamW lr",
    ),
    "ti_retract": Param(
        "bool",
        False,
        help="textual inversion: after each step pull the tokens' vectors back towards the vocabulary's scale "
        "(diffusers' advanced scripts); false: plain TI (Gal et al.), whose vectors may grow without bound",
    ),
}
"""The tokens' settings: read by textual inversion and by pivotal tuning."""


@dataclass
class _Slot:
    tokens: list[str]
    ids: list[int]
    dtype: Any
    vocab_std: float
    """The std of the embedding matrix before the tokens were added (the retraction's target scale)."""
    hook: Any = None


_SLOTS: dict[tuple[int, str], _Slot] = {}
"""(id of the text encoder, adapter name) -> the tokens added there."""


def tokens_of(vectors: int) -> list[str]:
    """The tokens diffusers registers for a multi-vector embedding called ``TOKEN``."""
    return [TOKEN] + [f"{TOKEN}_{i}" for i in range(1, vectors)]


def _init_vectors(pipe: Any, comp: str, word: str, vectors: int) -> torch.Tensor:
    """``vectors`` copies of the initialisation word's embedding (the mean of its tokens' rows)."""
    te, tok = getattr(pipe, comp), getattr(pipe, TOKENIZERS[comp])
    ids = tok(word, add_special_tokens=False).input_ids
    if not ids:
        raise UserError(f"params.ti_init: {word!r} has no token in the {comp}'s tokenizer")
    weight = te.get_input_embeddings().weight
    return weight[ids].detach().float().mean(0, keepdim=True).repeat(vectors, 1)


class TextualInversion(Method):
    name = "textual_inversion"
    files = "embedding"
    params = TI_PARAMS
    peft_type = PEFT_TYPE
    learns_tokens = True

    def describe(self, values: Mapping[str, Any]) -> list[str]:
        v = values
        return [f"vectors={v['ti_vectors']}", f"init={v['ti_init']}", f"ti_lr={v['ti_learning_rate']:.2g}"] + (
            ["retract"] if v["ti_retract"] else []
        )

    def attach(self, pipe: Any, spec: Settings, name: str, attached: list[str]) -> None:
        for comp in text_encoders(pipe):
            vectors = _init_vectors(pipe, comp, str(spec["ti_init"]), int(spec["ti_vectors"]))
            self._add(pipe, comp, vectors, name, trainable=True)
            attached.append(comp)

    def _add(self, pipe: Any, comp: str, vectors: torch.Tensor, name: str, trainable: bool) -> None:
        import torch

        te, tok = getattr(pipe, comp), getattr(pipe, TOKENIZERS[comp])
        dtype = te.get_input_embeddings().weight.dtype
        vocab_std = float(te.get_input_embeddings().weight.detach().float().std())
        pipe.load_textual_inversion(vectors.to(dtype), token=TOKEN, text_encoder=te, tokenizer=tok)
        tokens = tokens_of(int(vectors.shape[0]))
        ids = [int(i) for i in tok.convert_tokens_to_ids(tokens)]
        slot = _Slot(tokens, ids, dtype, vocab_std)
        _SLOTS[(id(te), name)] = slot
        weight = te.get_input_embeddings().weight
        weight.requires_grad_(trainable)
        if trainable:
            mask = torch.zeros(weight.shape[0], 1, device=weight.device)
            mask[ids] = 1.0
            slot.hook = weight.register_hook(lambda g: g * mask.to(g.dtype))

    def after_step(self, pipe: Any, spec: Settings, attached: list[str]) -> None:
        if not spec["ti_retract"]:
            return
        for comp in attached:
            if comp not in TEXT_ENCODERS:
                continue
            te = getattr(pipe, comp)
            weight = te.get_input_embeddings().weight
            for (owner, _), slot in _SLOTS.items():
                if owner == id(te) and slot.hook is not None:  # the slots training now
                    rows = weight.data[slot.ids]
                    weight.data[slot.ids] = rows * (slot.vocab_std / float(rows.std())) ** 0.1

    def load(
        self, pipe: Any, comp: str, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], name: str
    ) -> None:
        self._add(pipe, comp, state[KEY], name, trainable=False)

    def unload(self, pipe: Any, comp: str, name: str) -> None:
        te, tok = getattr(pipe, comp), getattr(pipe, TOKENIZERS[comp])
        slot = _SLOTS.pop((id(te), name), None)
        if slot is None:
            return
        if slot.hook is not None:
            slot.hook.remove()
        pipe.unload_textual_inversion(tokens=slot.tokens, tokenizer=tok, text_encoder=te)
        emb = te.get_input_embeddings()
        emb.weight.data = emb.weight.data.to(slot.dtype)  # training made it fp32; the old rows convert back exactly
        emb.weight.requires_grad_(False)

    def state(self, pipe: Any, comp: str, name: str) -> dict[str, torch.Tensor]:
        te = getattr(pipe, comp)
        ids = _SLOTS[(id(te), name)].ids
        return {KEY: te.get_input_embeddings().weight[ids].detach().float().cpu().clone()}

    def kept_configs(self, spec: Settings, attached: list[str]) -> dict[str, dict[str, Any]]:
        config = {
            "peft_type": PEFT_TYPE,
            "token": TOKEN,
            "vectors": int(spec["ti_vectors"]),
            "init": spec["ti_init"],
            "retract": bool(spec["ti_retract"]),
        }
        return {comp: dict(config) for comp in attached if comp in TEXT_ENCODERS}

    def param_groups(self, pipe: Any, spec: Settings, attached: list[str]) -> list[dict[str, Any]]:
        params = [getattr(pipe, c).get_input_embeddings().weight for c in attached if c in TEXT_ENCODERS]
        return [{"params": params, "lr": float(spec["ti_learning_rate"]), "weight_decay": 0.0}] if params else []

    def trainable_count(self, pipe: Any, spec: Settings, attached: list[str]) -> int:
        width = [getattr(pipe, c).get_input_embeddings().weight.shape[1] for c in attached if c in TEXT_ENCODERS]
        return int(spec["ti_vectors"]) * sum(width)

    def spelled_trigger(self, trigger: str, identifier: str = "") -> str:
        """``identifier``'s word in ``trigger`` replaced by the token (``in sks style`` -> ``in <autolora> style``);
        the whole trigger when it has no such word. Keeping the trigger's frame keeps the words the text encoder
        knows around the new token: on the built-in world, replacing the whole trigger lost the subject
        (content_text_ratio 0.69-0.76 of the base model's) where the framed token kept more of it (0.82-0.85)."""
        if identifier:
            pattern = re.compile(rf"(?<!\S){re.escape(identifier)}(?=[\s,.;:!?]|$)")
            if pattern.search(trigger):
                return pattern.sub(TOKEN, trigger)
        return TOKEN

    def prompt(self, text: str, trigger: str, identifier: str = "") -> str:
        spelled = self.spelled_trigger(trigger, identifier)
        if trigger and trigger in text:
            return text.replace(trigger, spelled)
        return f"{text}, {spelled}"


class Pivotal(Lora):
    """Pivotal tuning: a LoRA on the denoiser and the textual-inversion tokens on the text encoders, trained
    together (``learning_rate`` for the LoRA, ``ti_learning_rate`` for the tokens)."""

    name = "pivotal"
    peft_type = "PIVOTAL"  # never in a kept config: its components are LORA and TEXTUAL_INVERSION
    learns_tokens = True
    params = {**Lora.params, **TI_PARAMS}
    reads = Lora.reads - {"text_encoder", "text_encoder_lr_ratio"}  # the text encoders train tokens, not a LoRA
    _ti = TextualInversion()

    def describe(self, values: Mapping[str, Any]) -> list[str]:
        return self._ti.describe(values)

    def attach(self, pipe: Any, spec: Settings, name: str, attached: list[str]) -> None:
        super().attach(pipe, spec, name, attached)  # the denoiser only: pivotal's text encoders take no LoRA
        self._ti.attach(pipe, spec, name, attached)

    def load(
        self, pipe: Any, comp: str, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], name: str
    ) -> None:
        if comp in TEXT_ENCODERS:
            self._ti.load(pipe, comp, config, state, name)
        else:
            super().load(pipe, comp, config, state, name)

    def unload(self, pipe: Any, comp: str, name: str) -> None:
        if comp in TEXT_ENCODERS:
            self._ti.unload(pipe, comp, name)
        else:
            super().unload(pipe, comp, name)

    def state(self, pipe: Any, comp: str, name: str) -> dict[str, torch.Tensor]:
        return self._ti.state(pipe, comp, name) if comp in TEXT_ENCODERS else super().state(pipe, comp, name)

    def kept_configs(self, spec: Settings, attached: list[str]) -> dict[str, dict[str, Any]]:
        lora = super().kept_configs(spec, [c for c in attached if c not in TEXT_ENCODERS])
        return {**lora, **self._ti.kept_configs(spec, attached)}

    def param_groups(self, pipe: Any, spec: Settings, attached: list[str]) -> list[dict[str, Any]]:
        lora = super().param_groups(pipe, spec, [c for c in attached if c not in TEXT_ENCODERS])
        return lora + self._ti.param_groups(pipe, spec, attached)

    def trainable_count(self, pipe: Any, spec: Settings, attached: list[str]) -> int:
        lora = super().trainable_count(pipe, spec, [c for c in attached if c not in TEXT_ENCODERS])
        return lora + self._ti.trainable_count(pipe, spec, attached)

    def spelled_trigger(self, trigger: str, identifier: str = "") -> str:
        return self._ti.spelled_trigger(trigger, identifier)

    def prompt(self, text: str, trigger: str, identifier: str = "") -> str:
        return self._ti.prompt(text, trigger, identifier)

    def after_step(self, pipe: Any, spec: Settings, attached: list[str]) -> None:
        self._ti.after_step(pipe, spec, attached)
