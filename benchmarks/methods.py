"""The review's claim, measured: LoRA against LoHa, LoKr, Textual Inversion, pivotal tuning and DreamBooth, each
tuned by its own study at an equal budget, plus one study that searches the method (issue 13).

For each style of the general miniworld and each method: a default ``autolora tune`` study (sampler ``auto``,
confirmation on) over that method's space. The spaces share the training budget (steps 150-450, batch 4) and the
targets (for the methods that have targets) of the built-in ``quick`` space; each adds its own settings. The
confirmed best of each study is drawn again on the confirmation seeds and read by the pixels: the style truth
(``miniworld.truth``: texture strength, tone or ground shift) and the content (shape and colour right, beside the
base model's). Printed per style and pooled over styles (mean ± spread):

| method | best feasible confirmed objective | pixel style truth | pixel content right | trainable parameters |
  file size | seconds per step | peak memory (CUDA only) |

    python benchmarks/methods.py [--styles dotted,navy,shaded] [--trials 8] [--methods all] [--out bench-methods]
        [--json docs/miniworld/methods.json]

Run it alone (2 CPU cores: about 3 minutes a study).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from selection import mean, rescore_all, style_folder

BUDGET = {"steps": {"low": 150, "high": 450, "step": 50}, "batch_size": 4}
TARGETS = {
    "target_blocks": {"choices": [["down", "mid", "up"], ["mid", "up"], ["up"]]},
    "target_layers": {"choices": [["self_attn", "cross_attn"], ["cross_attn"], ["self_attn", "cross_attn", "ff"]]},
}
LOW_RANK = {"rank": {"low": 2, "high": 16, "log": True}, "alpha_ratio": {"choices": [0.5, 1.0, 2.0]},
            "learning_rate": {"low": 5.0e-4, "high": 5.0e-3, "log": True}}  # fmt: skip
TOKENS = {"ti_vectors": {"low": 1, "high": 8}, "ti_learning_rate": {"low": 1.0e-3, "high": 5.0e-2, "log": True}}
SPACES: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora", **LOW_RANK, **TARGETS, "init": "gaussian"},
    "loha": {"method": "loha", **LOW_RANK, **TARGETS},
    "lokr": {"method": "lokr", **LOW_RANK, **TARGETS, "lokr_factor": {"choices": [-1, 4, 8]}},
    "textual_inversion": {"method": "textual_inversion", **TOKENS},
    "pivotal": {"method": "pivotal", **LOW_RANK, **TARGETS, **TOKENS, "init": "gaussian"},
    "dreambooth": {
        "method": "dreambooth",
        "learning_rate": {"low": 1.0e-5, "high": 1.0e-3, "log": True},
        **TARGETS,
        "prior_weight": {"choices": [0.0, 1.0]},
    },  # fmt: skip
    "searched": {
        "method": {"choices": ["lora", "loha", "lokr", "textual_inversion", "pivotal", "dreambooth"]},
        **LOW_RANK,
        **TARGETS,
        **TOKENS,
        "lokr_factor": {"choices": [-1, 4, 8]},
        "prior_weight": {"choices": [0.0, 1.0]},
        "init": "gaussian",
    },
}


def run_study(style: str, method: str, trials: int, work: Path, reuse: bool) -> tuple[Any, Any]:
    import yaml

    from autolora.config import load_config
    from autolora.core.report import find_study
    from autolora.tune.job import run_tune

    name = f"{style}-{method}"
    space = work / f"{method}.yaml"
    space.write_text(yaml.safe_dump({"description": f"benchmark: {method}", "params": {**BUDGET, **SPACES[method]}}))
    overrides = [
        ("study", "name", name),
        ("study", "out", str(work / name)),
        ("study", "mlflow_uri", f"sqlite:///{work}/mlflow.db"),
        ("study", "trials", trials),
        ("study", "search_space", str(space)),
        ("data", "style_images", str(style_folder(style, work))),
    ]
    config = load_config(None, overrides)
    if reuse and (work / name / "config.yaml").is_file():
        study, _ = find_study(work / name, None, None)
        return study, config
    result = run_tune(config, echo=lambda s: print("   ", s), progress=False)
    return result.study, config


def figures(study: Any, config: Any, style: str) -> dict[str, Any]:
    import optuna

    from autolora.core.feasible import best, confirmation, infeasible_line

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    out: dict[str, Any] = {
        "seconds_per_step": mean(
            [t.user_attrs["seconds_per_step"] for t in done if "seconds_per_step" in t.user_attrs]
        ),
        "trials_complete": len(done),
    }
    if infeasible_line(study) or not done:
        out["best"] = None
        return out
    top = best(study)[0]
    conf = confirmation(study)
    out["best"] = top.number
    out["method"] = top.user_attrs.get("method")
    out["objective"] = conf.trials[top.number].values[0] if conf and top.number in conf.trials else top.values[0]
    out["trainable_params"] = top.user_attrs.get("trainable_params")
    out["file_bytes"] = top.user_attrs.get("adapter_bytes")
    out["peak_memory_bytes"] = top.user_attrs.get("peak_memory_bytes")
    rows = {r["trial"]: r for r in rescore_all(study, config, style)["rows"]}
    if top.number in rows:
        out["truth"] = rows[top.number]["truth"]
        out["content_pixels"] = rows[top.number]["content_pixels"]
    return out


def spread(values: list[Any], fmt: str = "{:+.3f}") -> str:
    vals = [float(v) for v in values if v is not None and v == v]
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{fmt.format(mean(vals))} ± {fmt.format(sd).lstrip('+')}"


def print_table(results: dict[str, dict[str, Any]], methods: list[str]) -> None:
    """The issue's table: means ± spread over the styles each method was run on."""
    print("means ± spread over styles")
    print("| method | best feasible confirmed objective | pixel style truth | pixel content right | trainable params "
          "| file size (KB) | s/step | peak memory |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for method in methods:
        rows = [r for r in results.values() if r["space"] == method]
        picked = ", ".join(str(r.get("method")) for r in rows) if method == "searched" else ""
        nothing = sum(r["best"] is None for r in rows)
        peak = [r.get("peak_memory_bytes") for r in rows if r.get("peak_memory_bytes")]
        print(
            f"| {method}{f' (picked {picked})' if picked else ''} | {spread([r.get('objective') for r in rows])}"
            f"{f' ({nothing} of {len(rows)} no feasible trial)' if nothing else ''} "
            f"| {spread([r.get('truth') for r in rows])} | {spread([r.get('content_pixels') for r in rows], '{:.0%}')} "
            f"| {spread([r.get('trainable_params') for r in rows], '{:.0f}')} "
            f"| {spread([(r.get('file_bytes') or 0) / 1024 or None for r in rows], '{:.0f}')} "
            f"| {spread([r.get('seconds_per_step') for r in rows], '{:.3f}')} "
            f"| {spread([p / 2**20 for p in peak], '{:.0f} MiB') if peak else 'n/a (CPU)'} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--styles", default="dotted,navy,shaded")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--methods", default="all", help=f"comma-separated of {', '.join(SPACES)}")
    parser.add_argument("--out", type=Path, default=Path("bench-methods"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--reuse", action="store_true", help="read the studies of an earlier run of this script")
    parser.add_argument("--table", type=Path, help="only print the table of an earlier run's --json file")
    args = parser.parse_args()
    methods = list(SPACES) if args.methods == "all" else args.methods.split(",")
    if args.table:
        stored = json.loads(args.table.read_text())["results"]
        print_table(stored, [m for m in methods if any(r["space"] == m for r in stored.values())])
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for style in args.styles.split(","):
        for method in methods:
            print(f"== {style}, {method}")
            study, config = run_study(style, method, args.trials, args.out, args.reuse)
            results[f"{style}-{method}"] = {"style": style, "space": method, **figures(study, config, style)}
            print("   ", json.dumps(results[f"{style}-{method}"], default=str))
            if args.json:
                args.json.write_text(json.dumps({"results": results, "trials": args.trials}, indent=1))
    print(f"\n{len(results)} studies of {args.trials} trials in {time.perf_counter() - t0:.0f}s")
    print_table(results, methods)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "trials": args.trials}, indent=1))


if __name__ == "__main__":
    main()
