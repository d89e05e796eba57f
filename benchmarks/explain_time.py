"""How long ``autolora explain`` takes on the embedded model, and how it scales with groups and samples (issue 37).

Each setting is one whole ``autolora explain`` process (loading included), run one after another, ``--repeats``
times; printed: wall seconds (mean ± sd), the sampling passes, the groups, and seconds per pass. Run it alone on
the 2-core machine (two torch processes side by side slow each other 3-15x).

    python -m benchmarks.explain_time --lora bench-explain/train-shaded/export/explain-shaded-trial0.safetensors
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "block, 1 seed": ["--seeds", "0"],
    "block, 2 seeds (default)": [],
    "block, 4 seeds": ["--seeds", "0,1,2,3"],
    "layer, 2 seeds": ["--granularity", "layer"],
    "block, 2 seeds, --prune": ["--prune"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora", type=Path, required=True)
    parser.add_argument("--style-images", type=Path, help="the style's pictures (default: the LoRA's own samples)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    extra = ["--style-images", str(args.style_images)] if args.style_images else []
    print(f"{'setting':<28} {'seconds':>14} {'passes':>7} {'groups':>7} {'s/pass':>7}")
    for name, flags in SETTINGS.items():
        seconds, doc = [], {}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                cmd = [sys.executable, "-m", "autolora", "explain", str(args.lora), "--out", out, *extra, *flags]
                subprocess.run(cmd, check=True, capture_output=True)
                seconds.append(time.perf_counter() - t0)
                doc = json.loads((Path(out) / "explain.json").read_text())
        passes = doc["map"]["sampling_passes"]
        sd = statistics.stdev(seconds) if len(seconds) > 1 else 0.0
        print(
            f"{name:<28} {statistics.mean(seconds):8.1f} ± {sd:4.1f} {passes:7d} {len(doc['map']['groups']):7d} "
            f"{doc['map']['seconds'] / passes:7.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
