"""The held-out style battery: VAE round trip and judge zero-shot accuracy per style, beside plain.

    python benchmarks/miniworld_battery.py [--weights DIR] [--n 96] [--seed 0] [--json OUT]

``--weights``: a folder written by ``autolora miniworld build`` (default: the shipped build). The VAE is loaded
with ``AutoencoderKL.from_pretrained`` from the assembled diffusers folder and the judge through open_clip, as
a user's models are. Aim: every battery style at >= 22 dB, and the judge's shape and colour accuracy high on
each (the content score is only as good as that).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path


def measure(weights: Path, n: int, seed: int) -> dict[str, dict[str, float]]:
    import torch
    from diffusers import AutoencoderKL

    from autolora.miniworld import build, nets
    from autolora.miniworld.quality import battery_figures
    from autolora.scoring.clip import ClipJudge

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        build.assemble_pipeline(Path(tmp) / "pipe", weights)
        build.assemble_judge(Path(tmp) / "clip", weights)
        vae = AutoencoderKL.from_pretrained(Path(tmp) / "pipe" / "vae").eval()
        clip = Path(tmp) / "clip"
        judge = ClipJudge(str(clip / f"{nets.JUDGE_NAME}.json"), str(clip / "open_clip_model.safetensors"))
        return battery_figures(vae, judge.embed_images, judge.embed_texts, n, seed)


def main() -> None:
    from autolora.models.miniworld import WEIGHTS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    res = measure(args.weights, args.n, args.seed)
    print(f"weights {args.weights}, {args.n} pictures per style")
    print(f"{'style':12s} {'set':10s} {'VAE dB':>7s} {'p10 dB':>7s} {'shape':>6s} {'colour':>6s}")
    for style, r in res.items():
        where = "vocabulary" if r["vocabulary"] else "battery"
        print(
            f"{style:12s} {where:10s} {r['psnr_median']:7.1f} {r['psnr_p10']:7.1f} {r['shape']:6.0%} {r['colour']:6.0%}"
        )
    battery = [r for r in res.values() if not r["vocabulary"]]
    shape, colour = statistics.mean(r["shape"] for r in battery), statistics.mean(r["colour"] for r in battery)
    print(
        f"battery: worst VAE median {min(r['psnr_median'] for r in battery):.1f} dB (aim >= 22), "
        f"styles under 22 dB: {sum(r['psnr_median'] < 22 for r in battery)} of {len(battery)}; judge shape "
        f"{shape:.0%}, colour {colour:.0%}"
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
