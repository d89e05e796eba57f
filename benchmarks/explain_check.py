"""Does ``autolora explain``'s map say where a LoRA's style lives? Checked against miniworld's pixel truth (issue 37).

Per LoRA (a miniworld style LoRA: ``--lora STYLE=FILE``, else one trained here with ``tune``'s kohya-like preset on
the style's 16 pictures and exported as a user would):

1. ``explain`` maps it at block granularity against the style's pictures (the judge's reading, ``eval.seeds``);
2. every non-empty subset of its groups is drawn on the confirmation seeds and read by the pixels: the style's
   presence as progress from the base model towards the references (0: base, 1: the references), and the share of
   samples whose shape and colour read right. The map's prediction for a subset is the sum of its groups' shares
   (times the full LoRA's progress); **Spearman** over the subsets says whether the map ranks them as the pixels
   do (aim >= 0.8);
3. ``explain --prune`` writes the smaller LoRA; its file is drawn on the confirmation seeds too: the share of the
   full LoRA's pixel style it keeps (aim >= 0.9), its content against the base model's and the full LoRA's (aim:
   within 2 points of the base or better than the full LoRA), and its size beside the original's.

    python -m benchmarks.explain_check --styles shaded,dotted --out bench-explain   # trains one LoRA per style
    python -m benchmarks.explain_check --lora shaded=runs/x/export/x.safetensors --out bench-explain

Results append to ``--results`` (one JSON line per LoRA). Run it alone on the 2-core machine (a few minutes per
LoRA after its training).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TERMS = ("style_auto", "style_gain", "style_direction", "style_gram", "style_probe", "style_intro")


def train(style: str, work: Path) -> Path:
    """A LoRA of ``style`` trained by ``autolora tune`` (the kohya-like preset, one trial) and exported."""
    from benchmarks.table.build import style_folder

    run = work / f"train-{style}"
    export = run / "export"
    found = sorted(export.glob("*.safetensors")) if export.is_dir() else []
    kohya = [p for p in found if p.name != "pytorch_lora_weights.safetensors"]
    if kohya:
        return kohya[0]
    base = [sys.executable, "-m", "autolora"]
    subprocess.run(
        [*base, "tune", "--style-images", str(style_folder(style, work)), "--out", str(run), "--trials", "1",
         "--study-name", f"explain-{style}", "--mlflow-uri", f"sqlite:///{run.resolve()}/mlflow.db",
         "--set", "study.presets=kohya-like", "--set", "study.confirm_top_k=0", "--no-progress"],
        check=True,
    )  # fmt: skip
    subprocess.run([*base, "export", str(run), "--out", str(export), "--force"], check=True)
    return next(p for p in sorted(export.glob("*.safetensors")) if p.name != "pytorch_lora_weights.safetensors")


def check(style: str, lora: Path, work: Path, max_groups: int) -> dict[str, Any]:

    from autolora.config import load_config
    from autolora.explain.config import ExplainRunConfig
    from autolora.explain.groups import subset
    from autolora.explain.measure import ExplainSession, measure
    from autolora.explain.plan import make_explain_plan
    from autolora.explain.prune import prune
    from autolora.loras.engine import load_loras, unload
    from benchmarks.table.build import Truth, style_folder
    from benchmarks.table.figures import _right, _spearman

    out = work / f"explain-{style}"
    config = load_config(
        None,
        [
            ("explain", "lora", str(lora)),
            ("explain", "prune", True),
            ("data", "style_images", str(style_folder(style, work))),
            ("study", "out", str(out)),
        ],
        ExplainRunConfig,
    )
    plan = make_explain_plan(config)
    session = ExplainSession.load(plan)
    t0 = time.perf_counter()
    found = measure(session, "block", echo=lambda s: None)
    map_seconds = time.perf_counter() - t0
    pruned = prune(session, found, config.explain, out / "pruned", echo=lambda s: None)
    seeds = list(config.eval.confirm_seeds)
    truth = Truth(style, plan.prompts)
    refs = statistics.mean(truth.presence(im) for im in plan.style.images) if plan.style else 0.0

    def draw(coeffs: dict[str, float] | None) -> list[Any]:
        """The confirmation seeds with the LoRA's groups at ``coeffs`` (None: the active adapter as it is)."""
        return session.sample_active(seeds) if coeffs is None else session.draw(coeffs, seeds)

    keys = found.keys
    base = truth.pixels(draw(subset(keys, [])), len(seeds))
    base_presence = statistics.mean(base["presence"])

    def read(images: list[Any]) -> dict[str, float]:
        r = truth.pixels(images, len(seeds))
        progress = (statistics.mean(r["presence"]) - base_presence) / (refs - base_presence)
        return {"progress": progress, "content": _right(r)}

    full = read(draw(subset(keys, keys)))
    shares = found.shares()
    groups = [k for k in keys if k in shares][:max_groups]
    subsets = []
    for n in range(1, len(groups) + 1):
        for chosen in itertools.combinations(groups, n):
            got = read(draw(subset(keys, chosen)))
            subsets.append({"groups": list(chosen), "predicted": sum(shares[k] for k in chosen), **got})
    rho = _spearman([s["predicted"] for s in subsets], [s["progress"] for s in subsets])
    by_term = {}  # the same readings mapped by each of the judge's style terms: which one sees the blocks best
    for term in TERMS:
        if term in found.full.per_seed and not any(math.isnan(v) for v in found.full.per_seed[term]):
            term_shares = dataclasses.replace(found, style_metric=term).shares()
            predicted = [sum(term_shares[k] for k in s["groups"]) for s in subsets]
            by_term[term] = _spearman(predicted, [s["progress"] for s in subsets])
    row: dict[str, Any] = {
        "style": style,
        "lora": str(lora),
        "groups": keys,
        "shares": shares,
        "style_full": found.style_full(),
        "map_seconds": round(map_seconds, 1),
        "sampling_passes": found.extra["sampling_passes"],
        "base_content": _right(base),
        "full": full,
        "subsets": subsets,
        "spearman": rho,
        "spearman_by_term": by_term,
        "pruned": {k: v for k, v in pruned.to_dict().items() if k != "ranks"},
    }
    if pruned.written:
        path = Path(pruned.files.get("kohya") or pruned.files["diffusers"])
        checked = load_loras(session.pipe, [path], ["bench"])
        try:
            got = read(draw(None))
        finally:
            unload(checked)
            session.pipe.set_adapters(["explained"])
        row["pruned"]["pixels"] = {
            **got,
            "style_kept": got["progress"] / full["progress"] if full["progress"] > 0 else float("nan"),
            "content_vs_base": 100 * (got["content"] - row["base_content"]),
            "content_vs_full": 100 * (got["content"] - full["content"]),
            "size_ratio": pruned.original_size / max(pruned.size, 1),
        }
    session.close()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", default="shaded,dotted", help="styles to train a LoRA for (without --lora)")
    parser.add_argument("--lora", action="append", default=[], metavar="STYLE=FILE", help="a given LoRA (repeat)")
    parser.add_argument("--out", type=Path, default=Path("bench-explain"))
    parser.add_argument("--results", type=Path, default=Path("docs/explain/check.jsonl"))
    parser.add_argument("--max-groups", type=int, default=6, help="subsets of at most this many groups' (2^n - 1)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    given = [entry.split("=", 1) for entry in args.lora]
    todo = [(s, Path(f)) for s, f in given] or [(s, None) for s in args.styles.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    for style, lora in todo:
        path = lora or train(style, args.out)
        row = check(style, path, args.out, args.max_groups)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        p = row["pruned"]
        shown = p.get("pixels", {})
        print(
            f"{style}: {len(row['groups'])} groups, map in {row['map_seconds']:.0f} s; Spearman over "
            f"{len(row['subsets'])} subsets {row['spearman']:+.2f} ("
            + ", ".join(f"{t} {v:+.2f}" for t, v in row["spearman_by_term"].items())
            + f"); full progress {row['full']['progress']:+.2f} "
            f"content {row['full']['content']:.2f} (base {row['base_content']:.2f}); pruned "
            + (
                f"{' '.join(p['kept'])}: style kept {shown['style_kept']:.0%}, content vs base "
                f"{shown['content_vs_base']:+.1f} pts, vs full {shown['content_vs_full']:+.1f} pts, "
                f"{shown['size_ratio']:.1f}x smaller"
                if shown
                else f"not written ({p['reason']})"
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
