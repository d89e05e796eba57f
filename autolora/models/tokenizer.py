"""An offline ``CLIPTokenizer`` built from the BPE vocabulary that open_clip ships.

Stable Diffusion's tokenizer is OpenAI's CLIP BPE. open_clip carries the same merges
(``bpe_simple_vocab_16e6.txt.gz``), so we can write ``vocab.json`` and ``merges.txt``
without the hub. The construction mirrors ``open_clip.tokenizer.SimpleTokenizer``; only the
special tokens are spelled as Hugging Face spells them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

VOCAB_SIZE = 49408


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_clip_tokenizer_files(folder: Path) -> None:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer configs into ``folder``."""
    import open_clip

    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe_path) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # as open_clip: 48,894 merges, 49,408 tokens
    vocab = list(_bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


# Words a T5 tokenizer should keep whole for the built-in prompts; anything else falls back to characters.
_T5_WORDS = [
    *("a", "an", "the", "in", "of", "and", "with", "on", "style", "sks"),
    *("plain", "striped", "dotted", "outline", "pastel", "grain", "checker"),
    *("red", "green", "blue", "yellow", "purple", "orange", "circle", "square", "triangle", "star", "shape"),
]


def write_t5_tokenizer_files(folder: Path) -> None:
    """A small offline T5 (SentencePiece unigram) tokenizer: miniworld's words whole, other text by character.

    Built through transformers' own ``T5Tokenizer(vocab=...)``, so ``from_pretrained`` reads it as it reads
    Flux's and SD3's ``tokenizer_2`` / ``tokenizer_3``.
    """
    import string

    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -2.0 - i * 0.01) for i, w in enumerate(_T5_WORDS)]
    vocab += [("\u2581", -4.0)] + [(c, -5.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(str(folder))


T5_VOCAB_SIZE = 3 + len(_T5_WORDS) + 1 + 26 + 10 + 32
