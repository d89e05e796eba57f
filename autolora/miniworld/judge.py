"""The miniworld judge: an open_clip model trained contrastively on miniworld pictures and captions.

Captions name any subset of (shape, colour, style): ``a red circle in striped style`` (all three),
``a red circle`` (content, any style), ``a circle``, ``a red shape``, ``a circle in striped style``,
``a shape in striped style``. Unstyled pictures are ``in plain style``. In a batch, a caption is a positive
for every picture it describes (multi-positive InfoNCE), so partial captions are not punished as negatives for
the other pictures they fit.

With ``broad_share`` (the general build: half), pictures are also miniworld content in random styles of
the broad procedural family (any background,
textures, outlines: ``procedural.styled_content``), captioned by content only, so the judge names shape and
colour on grounds and under looks it was never told about; the held-out battery (``battery``) never appears.

Zero-shot classification (``classify``) scores a picture against all full captions and takes each attribute's
marginal (log-sum-exp over the captions with that value).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autolora.miniworld.optim import OneCycle
from autolora.miniworld.procedural import styled_content
from autolora.miniworld.world import COLOURS, SHAPES, STYLES, Item, draw
from autolora.models.miniworld import Progress

if TYPE_CHECKING:
    import torch
    from PIL import Image

Attrs = tuple[str | None, str | None, str | None]
"""(shape, colour, style); None: the caption does not say."""


def judge_caption(shape: str | None, colour: str | None, style: str | None) -> str:
    """The judge's caption grammar for any subset of the attributes."""
    thing = shape or "shape"
    text = f"a {colour} {thing}" if colour else f"a {thing}"
    return f"{text} in {style} style" if style else text


OTHER = "other"
"""The style of a picture of the broad family (``procedural.styled_content``): no vocabulary style fits it."""


def _random_caption(item: Item, rng: random.Random) -> Attrs:
    r = rng.random()
    s, c, y = item.shape, item.colour, item.style
    if y == OTHER:  # the content only: no caption names its style
        return (s, c, None) if r < 0.6 else (s, None, None) if r < 0.8 else (None, c, None)
    if r < 0.4:
        return s, c, y
    if r < 0.6:
        return s, c, None
    if r < 0.7:
        return s, None, None
    if r < 0.8:
        return None, c, None
    if r < 0.9:
        return s, None, y
    return None, None, y


def _fits(text: Attrs, item: Item) -> bool:
    return all(t is None or t == v for t, v in zip(text, (item.shape, item.colour, item.style), strict=True))


def _augment(image: Image.Image, rng: random.Random) -> Image.Image:
    """Blur a little, sometimes: generated pictures are softer than drawn ones."""
    from PIL import ImageFilter

    if rng.random() < 0.5:
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.9)))
    return image


def train_judge(
    model: Any,
    preprocess: Any,
    tokenizer: Any,
    steps: int,
    batch_size: int,
    seed: int,
    device: str,
    progress: Progress | None = None,
    broad_share: float = 0.0,
) -> list[float]:
    """Train ``model`` in place; returns the loss curve (one value per step). ``broad_share`` of the pictures are
    miniworld content in the broad family's styles (``procedural.styled_content``)."""
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    fit = OneCycle(model.parameters(), steps, weight_decay=0.05, progress=progress)
    for _ in range(steps):
        items, images, texts = [], [], []
        for _ in range(batch_size):
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            if broad_share and rng.random() < broad_share:  # no draw at 0: the shipped build's sequence
                image, item = styled_content(shape, colour, rng), Item(shape, colour, OTHER, 0.0, 0.0, 0.0)
            else:
                image, item = draw(shape, colour, rng.choice(STYLES), rng)
            items.append(item)
            images.append(preprocess(_augment(image, rng)))
            texts.append(_random_caption(item, rng))
        pixels = torch.stack(images).to(device)
        tokens = tokenizer([judge_caption(*t) for t in texts]).to(device)
        fits = torch.tensor([[_fits(t, it) for t in texts] for it in items], dtype=torch.float32, device=device)
        img = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        fit.step(0.5 * (_soft_ce(logits, fits) + _soft_ce(logits.T, fits.T)))
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
    model.eval()
    return fit.losses


def _soft_ce(logits: torch.Tensor, fits: torch.Tensor) -> torch.Tensor:
    target = fits / fits.sum(-1, keepdim=True)
    return -(target * logits.log_softmax(-1)).sum(-1).mean()


def full_captions() -> list[Attrs]:
    return [(s, c, y) for s in SHAPES for c in COLOURS for y in STYLES]


def classify(embed_images: Any, embed_texts: Any, images: Sequence[Image.Image]) -> list[tuple[str, str, str]]:
    """Zero-shot (shape, colour, style) of each picture from a judge's embedding functions.

    ``embed_images``/``embed_texts`` return L2-normalised embeddings (``autolora.scoring.clip.ClipJudge`` has
    both), so any judge can be tested this way, not only this one.
    """
    import torch

    captions = full_captions()
    text = embed_texts([judge_caption(*a) for a in captions])
    logits = 100.0 * embed_images(list(images)) @ text.T
    out = []
    for row in logits:
        picks = []
        for k, values in enumerate((SHAPES, list(COLOURS), STYLES)):
            marg = [torch.logsumexp(row[[i for i, a in enumerate(captions) if a[k] == v]], 0) for v in values]
            picks.append(values[int(torch.stack(marg).argmax())])
        out.append((picks[0], picks[1], picks[2]))
    return out
