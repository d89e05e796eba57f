"""Does a miniworld build's base model draw clean grounds? The check to run on a build before shipping it.

Samples the 24 plain prompts (shape x colour, the first 24 in vocabulary order) x ``--seeds`` seeds from a build
folder (``autolora miniworld build --out DIR``) or the shipped world, and prints what the history's *Session 10*
paragraph compares: the pixel check (``truth.read_content``: shape and colour right, no CLIP) and the grounds'
corner colour (the mean of the four 4x4 corners: its mean over samples and its spread across them; a mottled or
tinted ground shows as a wide spread). Writes the sample grid (rows: prompts; columns: seeds) beside.

    python benchmarks/miniworld_grounds.py [--weights DIR] [--seeds 2] [--out bench-grounds]

Figures (2 seeds): the shipped general world (session 11) 45/48 right (shape 45, colour 48; reader v3 of
session 18: 48/48), corners (229, 226, 220) spread 12-14; the narrow world shipped until session 11
(``--recipe narrow``) 41/48 (shape 46, colour 43), (242, 239, 232) spread 6-10.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="a miniworld build folder (default: the shipped world)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-grounds"))
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: expected an integer >= 1")
    if args.weights and not (args.weights / "build.json").is_file():
        parser.error(f"--weights {args.weights}: expected a miniworld build folder (with build.json)")
    import numpy as np
    import torch

    from autolora.miniworld.truth import read_content
    from autolora.miniworld.world import COLOURS, SHAPES, caption
    from autolora.models.loading import load_pipeline, resolve_model
    from autolora.quiet import quiet_libraries
    from autolora.sampling import grid, sample

    quiet_libraries()
    if args.weights:
        from autolora.models.miniworld import assemble_pipeline

        folder = Path(tempfile.mkdtemp(prefix="autolora-grounds-")) / "base"
        assemble_pipeline(folder, args.weights.resolve())
        ref = resolve_model(str(folder))
    else:
        ref = resolve_model("builtin:miniworld")
    pipe = load_pipeline(ref, "cpu", torch.float32)
    items = [(s, c) for s in SHAPES for c in COLOURS][:24]
    seeds = list(range(args.seeds))
    images = sample(pipe, [caption(s, c) for s, c in items], seeds, steps=20, guidance_scale=7.5, resolution=32)
    right = {"both": 0, "shape": 0, "colour": 0}
    misread: list[dict[str, object]] = []
    corners = []
    for i, image in enumerate(images):
        shape, colour = items[i // len(seeds)]
        read_shape, read_colour = read_content(image)
        right["shape"] += read_shape == shape
        right["colour"] += read_colour == colour
        right["both"] += read_shape == shape and read_colour == colour
        if (read_shape, read_colour) != (shape, colour):
            misread.append(
                {"prompt": caption(shape, colour), "seed": seeds[i % len(seeds)], "read": [read_shape, read_colour]}
            )
        a = np.asarray(image.convert("RGB"), dtype=float)
        corners.append(np.concatenate([a[:4, :4], a[:4, -4:], a[-4:, :4], a[-4:, -4:]]).reshape(-1, 3).mean(0))
    stack = np.array(corners)
    mean = [round(float(v), 1) for v in stack.mean(0)]
    spread = [round(float(v), 1) for v in stack.std(0)]
    result = {
        "weights": str(args.weights) if args.weights else "shipped",
        "samples": len(images),
        "right": right,
        "misread": misread,
        "corner_mean": mean,
        "corner_spread": spread,
    }
    n = len(images)
    print(
        f"pixel check: both {right['both']}/{n}, shape {right['shape']}/{n}, colour {right['colour']}/{n}; "
        f"corners mean {tuple(mean)}, spread {tuple(spread)} across samples"
    )
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sheet = grid(images, rows=len(items))
    sheet.resize((sheet.width * 4, sheet.height * 4), 0).save(out / "grounds.png")
    (out / "grounds.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"results in {out / 'grounds.json'}")


if __name__ == "__main__":
    main()
