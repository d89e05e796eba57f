"""Content checks that a style cannot fake (the judge's content side; see ``autolora.scoring.clip``).

``content_text_ratio`` (the sample's agreement with its prompt over the base's) cannot tell a yellow star turned
orange from a yellow star drawn in a new style: both lower the agreement a little. The checks here ask sharper
questions of the same judge:

- **choice** (``content_choice``): zero-shot, is the sample still its prompt rather than one of its *alternatives*?
  The alternatives are the other evaluation prompts, the references' captions (a LoRA that draws the references'
  subjects instead of the prompt's picks one of them) and the prompt with one word swapped for the word another
  prompt or caption has at the same place ("a yellow star" -> "a orange star", "a yellow circle"): built from the
  study's own texts, so the question is always one the prompt set can ask. The metric is the probability the
  judge gives the prompt among them (softmax at the judge's own logit scale), per sample; its ``_delta`` is that
  minus the base sample's of the same prompt and seed.
- **leak** (``content_leak``): how much closer the sample moved to the references' captions than to its own
  prompt, against the base sample (0: none; > 0: the references' content is leaking in). NaN without captions.
- **structure** (``content_structure``): the self-similarity of the judge's patch tokens (which patch looks like
  which: Tumanyan et al. 2022's appearance-free structure descriptor) against the base sample of the same prompt
  and seed, as a correlation (1: the same layout; a new texture or palette moves it little, another shape a lot).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MAX_ALTERNATIVES = 64
"""Per prompt: enough for every one-word swap of a short prompt set, few enough to embed in one batch."""


def alternatives(
    prompts: list[str], captions: list[str] | None = None, limit: int = MAX_ALTERNATIVES
) -> list[list[str]]:
    """Per prompt, the texts it competes with (the prompt itself first, no duplicates, at most ``limit`` + 1).

    Order of preference when ``limit`` cuts: one-word swaps (they test the prompt's own attributes), then the
    other prompts, then the captions."""
    texts = [t.strip() for t in prompts]
    caps = sorted({c.strip() for c in captions or [] if c.strip()})
    pool = list(dict.fromkeys(texts + caps))
    out = []
    for prompt in texts:
        words = prompt.split()
        swaps: list[str] = []
        for other in pool:
            theirs = other.split()
            if len(theirs) != len(words):
                continue
            for i, (mine, word) in enumerate(zip(words, theirs, strict=True)):
                if mine.lower() != word.lower():
                    swaps.append(" ".join([*words[:i], word, *words[i + 1 :]]))
        rivals = list(dict.fromkeys([*sorted(set(swaps)), *texts, *caps]))
        rivals = [r for r in rivals if r.lower() != prompt.lower()][:limit]
        out.append([prompt, *rivals])
    return out


def self_similarity(tokens: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` patch features -> ``(N, HW*HW)`` flattened cosine self-similarity, centred per image (so
    two images compare by correlation)."""
    import torch

    f = torch.nn.functional.normalize(tokens.float().flatten(2), dim=1)  # (N, C, P): unit feature per patch
    sim = (f.transpose(1, 2) @ f).flatten(1)
    return torch.nn.functional.normalize(sim - sim.mean(1, keepdim=True), dim=1)
