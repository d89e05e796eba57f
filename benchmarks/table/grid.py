"""A picture of a table's samples: the base model's row first, then one row per configuration (its samples of a
rung on the confirmation seeds), each row labelled with the pixel readings and each sample the pixels read as
another shape or colour framed red, so a reader can be checked by eye."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.table.store import StyleTable


def _wrong(truth: dict[str, Any]) -> list[bool]:
    """Per sample: whether the pixels read another shape or colour than the prompt's."""
    if not truth:
        return []
    return [not (a and b) for a, b in zip(truth["shape"], truth["colour"], strict=True)]


def grid(table: StyleTable, configs: list[int], step: int, out: Path, per_row: int = 24, scale: int = 3) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    base = table.meta["base"]["confirm"]
    first, count = base["images"]
    assert table.images is not None
    rows: list[tuple[str, Any, list[bool]]] = [
        ("base", table.images[first : first + count][:per_row], _wrong(base["truth"])[:per_row])
    ]
    by_number = {r["config"]: r for r in table.rows}
    for number in configs:
        row = by_number[number]
        samples = table.samples(row, step, "confirm")
        if samples is None:
            continue
        truth = next(r for r in row["rungs"] if r["step"] == step)["confirm"]["truth"]
        label = f"{number}"
        if truth:
            right = np.mean([a and b for a, b in zip(truth["shape"], truth["colour"], strict=True)])
            label += f" p{np.mean(truth['presence']):+.2f} c{right:.0%}"
        rows.append((label, samples[:per_row], _wrong(truth)[:per_row]))
    size = table.images.shape[1] * scale
    pad = 110
    canvas = Image.new("RGB", (pad + per_row * size, len(rows) * size), "white")
    draw = ImageDraw.Draw(canvas)
    for y, (label, images, wrong) in enumerate(rows):
        draw.text((4, y * size + size // 2 - 6), label, fill="black")
        for x, image in enumerate(images):
            tile = Image.fromarray(np.asarray(image)).resize((size, size), Image.NEAREST)
            canvas.paste(tile, (pad + x * size, y * size))
            if x < len(wrong) and wrong[x]:  # the pixel reader read another shape or colour: framed red
                draw.rectangle([pad + x * size, y * size, pad + (x + 1) * size - 1, (y + 1) * size - 1], outline="red")
    canvas.save(out)
