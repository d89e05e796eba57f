"""``python -m benchmarks.table build|pack|grid|reread|judge|figures`` (run from the repository root)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

STYLES = ("dotted", "navy", "shaded", "rings", "sunset", "comic")
"""The table's styles: a texture, a ground colour, a ramp, a structure anchored on the subject, a gradient ground,
and a look of two parts (a dark outline on a coloured ground). ``shadow`` is left out: the world's VAE keeps 15 %
of a drop shadow (the pixel reading of its round trip), so no LoRA could show it."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.table", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train the design's configurations (resumable; appends per configuration)")
    b.add_argument("--styles", help=f"miniworld or battery styles, with pixel truth (default {','.join(STYLES)} "
                   "unless --style-images is given)")  # fmt: skip
    b.add_argument("--style-images", type=Path, action="append", default=[],
                   help="a style folder of your own (no pixel truth); repeatable")  # fmt: skip
    b.add_argument("--out", type=Path, default=Path("bench-table"))
    b.add_argument("--base-model", default="builtin:miniworld")
    b.add_argument("--search-space", default="wide")
    b.add_argument("--objective", default="balanced")
    b.add_argument("--configs", type=int, default=48, help="design size (default 48)")
    b.add_argument("--design-seed", type=int, default=0)
    b.add_argument("--presets", default="auto", help="auto (the presets as tune runs them) or none")
    b.add_argument("--limit", type=int, help="stop after this many new configurations per style")
    b.add_argument("--anchors", default="", help="fixed search-space files (or names) to add as configurations "
                   "beside the design, projected onto the space as presets are (comma-separated)")  # fmt: skip
    b.add_argument("--threads", type=int, default=1, help="torch threads (a table is deterministic per count)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a config override, as tune's --set (eval.inference_steps=4 for a smoke test)")  # fmt: skip
    p = sub.add_parser("pack", help="compress a table for the repository")
    p.add_argument("source", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--image-steps", default="all",
                   help="rungs whose samples to keep: all, none, or e.g. 300,600 (base samples: always)")  # fmt: skip
    p.add_argument("--image-seeds", default="search,confirm", help="seed sets whose samples to keep")
    g = sub.add_parser("grid", help="samples of some configurations under the base's, to check the readers by eye")
    g.add_argument("table", type=Path)
    g.add_argument("--style", required=True)
    g.add_argument("--configs", required=True, help="comma-separated configuration numbers")
    g.add_argument("--step", type=int, required=True, help="the rung")
    g.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("reread", help="read the stored samples' pixel truth again with today's reader, in place")
    r.add_argument("table", type=Path)
    r.add_argument(
        "--styles",
        help="comma-separated styles to read again (default: all; a style under a running build must not be named)",
    )
    f = sub.add_parser("figures", help="what the table shows (docs/table.md)")
    f.add_argument("table", type=Path)
    f.add_argument("--json", type=Path, help="also write the figures here")
    f.add_argument("--markdown", action="store_true", help="also print docs/table.md's per-style table")
    j = sub.add_parser("judge", help="score the stored samples again with today's judge; content checks' rates")
    j.add_argument("table", type=Path)
    j.add_argument("--styles", help="comma-separated styles (default: all with pixel truth)")
    j.add_argument("--references", type=Path, help="the folder holding styles/<style> (default: the table's; "
                   "drawn there when missing)")  # fmt: skip
    j.add_argument("--json", type=Path, help="also write the trials and figures here")
    args = parser.parse_args(argv)
    if args.command == "build":
        return _build(args)
    if args.command == "pack":
        from benchmarks.table.store import pack

        steps = args.image_steps
        keep = None if steps == "all" else [] if steps == "none" else [int(x) for x in steps.split(",")]
        from benchmarks.table.store import load_table

        styles = list(load_table(args.source, images=False))
        parts = tuple(p for p in args.image_seeds.split(",") if p)
        sizes = pack(args.source, args.dest, None if keep is None else {s: keep for s in styles}, parts)
        for name, size in sizes.items():
            print(f"{name}: {size / 1e6:.1f} MB")
        print(f"in all {sum(sizes.values()) / 1e6:.1f} MB in {args.dest}")
        return 0
    if args.command == "reread":
        from autolora.errors import UserError
        from autolora.quiet import quiet_libraries
        from benchmarks.table.build import reread

        quiet_libraries()
        try:
            reread(args.table, styles=args.styles.split(",") if args.styles else None)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "grid":
        from benchmarks.table.grid import grid
        from benchmarks.table.store import load_table

        found = load_table(args.table, [args.style])
        if args.style not in found:
            print(f"{args.table}: no style {args.style!r}", file=sys.stderr)
            return 2
        grid(found[args.style], [int(c) for c in args.configs.split(",")], args.step, args.out)
        print(f"wrote {args.out}")
        return 0
    if args.command == "judge":
        from autolora.quiet import quiet_libraries
        from benchmarks.table.judge import report as judge_report

        quiet_libraries()
        try:
            return judge_report(args.table, args.references, args.json, args.styles.split(",") if args.styles else None)
        except FileNotFoundError as e:  # no such table folder: one line, nothing written
            print(f"error: {e}", file=sys.stderr)
            return 2
    from benchmarks.table.figures import report

    return report(args.table, args.json, args.markdown)


def _build(args: argparse.Namespace) -> int:
    import torch

    from autolora.config import parse_override
    from autolora.errors import UserError
    from autolora.quiet import quiet_libraries
    from benchmarks.table.build import build_style, style_folder

    torch.set_num_threads(args.threads)
    quiet_libraries()
    styles = args.styles if args.styles is not None else ("" if args.style_images else ",".join(STYLES))
    jobs = [(s, style_folder(s, args.out), s) for s in styles.split(",") if s]
    jobs += [(folder.name, folder, None) for folder in args.style_images]
    t0 = time.perf_counter()
    try:
        overrides = [parse_override(text) for text in args.overrides]
        for name, folder, style in jobs:
            build_style(
                name,
                folder,
                style,
                args.out,
                base_model=args.base_model,
                search_space=args.search_space,
                objective=args.objective,
                n_configs=args.configs,
                design_seed=args.design_seed,
                preset_setting=args.presets,
                limit=args.limit,
                anchors=[a for a in args.anchors.split(",") if a],
                overrides=overrides,
                echo=lambda line: print(line, flush=True),
            )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
