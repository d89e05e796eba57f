"""The review's claim, measured: LoRA against LoHa, LoKr, Textual Inversion, pivotal tuning and DreamBooth, each
tuned by its own study at an equal budget, plus one study that searches the method (issue 13).

For each style of the general miniworld and each method: a default ``autolora tune`` study (sampler ``auto``,
confirmation on) over that method's space. The spaces share the training budget (steps 150-450, batch 4) and the
targets (for the methods that have targets) of the built-in ``quick`` space; each adds its own settings. The
confirmed best of each study is drawn again on the confirmation seeds and read by the pixels: the style truth
(``miniworld.truth``: texture strength, tone or ground shift) and the content (shape and colour right, beside the
base model's). Printed per style and pooled over styles (mean ± spread):

| method | best feasible confirmed objective | pixel style truth | pixel content right | trainable parameters |
  file size | seconds per step | peak memory (CUDA only) | training steps spent (pruned trials stop early) |

and a sample grid (``--grid``): per style, its references and each method's confirmed best on the confirmation
seeds, under the base model's samples.

    python benchmarks/methods.py [--styles dotted,navy,shaded] [--trials 8] [--methods all] [--out bench-methods]
        [--json docs/miniworld/methods.json] [--grid docs/miniworld/methods-grid.png]

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
TOKENS = {"ti_vectors": {"low": 1, "high": 8}, "ti_learning_rate": {"low": 1.0e-3, "high": 5.0e-2, "log": True},
          "ti_retract": {"choices": [False, True]}}  # fmt: skip
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
    from autolora.core.reading import find_study
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


def figures(study: Any, config: Any, style: str, drawn: dict[str, list[Any]]) -> dict[str, Any]:
    """The table's figures of one study; the confirmed best's pictures go to ``drawn['best']`` (and the base
    model's on the same prompts and seeds to ``drawn['base']``) for the sample grid."""
    import optuna

    from autolora.core.feasible import best, confirmation, infeasible_line

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ran = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    out: dict[str, Any] = {
        "seconds_per_step": mean(
            [t.user_attrs["seconds_per_step"] for t in done if "seconds_per_step" in t.user_attrs]
        ),
        "trials_complete": len(done),
        # The budget actually spent: each trial's last evaluated step (a pruned trial stops early).
        "steps_spent": sum(max(t.intermediate_values, default=0) for t in ran),
    }
    if infeasible_line(study) or not done:
        out["best"] = None
        if not done:
            return out
        # No feasible best: the grid and the table show the highest-scoring infeasible trial (why nothing passed).
        shown, kind = max(done, key=lambda t: t.values[0]), "infeasible"
    else:
        top = best(study)[0]
        conf = confirmation(study)
        out["best"] = top.number
        out["method"] = top.user_attrs.get("method")
        out["objective"] = conf.trials[top.number].values[0] if conf and top.number in conf.trials else top.values[0]
        out["trainable_params"] = top.user_attrs.get("trainable_params")
        out["file_bytes"] = top.user_attrs.get("adapter_bytes")
        out["peak_memory_bytes"] = top.user_attrs.get("peak_memory_bytes")
        out["params"] = {k: v for k, v in top.params.items() if k != "target"}
        shown, kind = top, "best"
    rescored = rescore_all(study, config, style, only={shown.number})
    out["base_truth"], out["refs_truth"] = rescored["base_truth"], rescored["refs_truth"]
    if shown.number not in rescored["images"]:  # no kept adapter to draw
        return out
    drawn[kind] = rescored["images"][shown.number]
    drawn["base"] = rescored["base_images"]
    row = rescored["rows"][0]
    if kind == "best":
        out["truth"], out["content_pixels"] = row["truth"], row["content_pixels"]
    else:
        keys = ("retest", "style_gain", "content_text_ratio", "truth", "content_pixels")
        out["infeasible_top"] = {"trial": shown.number, "search": shown.values[0], **{k: row[k] for k in keys}}
    return out


def save_sample_grid(pictures: dict[str, dict[str, list[Any]]], styles: list[str], methods: list[str], path: Path,
                     columns: int = 8) -> None:  # fmt: skip
    """One row per style and method: the confirmed best's first ``columns`` confirmation samples (every seed of a
    prompt side by side), under a row of the style's references and, once at the top, the base model's samples.
    ``(x)``: no feasible trial, the highest-scoring infeasible one shown; ``(-)``: no complete trial."""
    from fuse_pairs import save_grid
    from PIL import Image

    from autolora.miniworld.battery import any_items

    short = {"textual_inversion": "TI"}

    def big(images: list[Any]) -> list[Any]:
        return [im.resize((im.width * 2, im.height * 2), Image.NEAREST) for im in images[:columns]]

    rows: list[tuple[str, list[Any]]] = []
    base = next((p["base"] for p in pictures.values() if "base" in p), None)
    if base:
        rows.append(("base model", big(base)))
    for style in styles:
        rows.append((f"{style}: references", big([im for im, _, _ in any_items(style, columns, seed=0)])))
        for method in methods:
            drawn = pictures.get(f"{style}-{method}", {})
            label = f"{style}: {short.get(method, method)}"
            if "best" in drawn:
                rows.append((label, big(drawn["best"])))
            elif "infeasible" in drawn:
                rows.append((f"{label} (x)", big(drawn["infeasible"])))
            else:
                rows.append((f"{label} (-)", []))
    save_grid(rows, columns, path)


def spread(values: list[Any], fmt: str = "{:+.3f}") -> str:
    vals = [float(v) for v in values if v is not None and v == v]
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{fmt.format(mean(vals))} ± {fmt.format(sd).lstrip('+')}"


def print_per_style(results: dict[str, dict[str, Any]], methods: list[str]) -> None:
    """Per style: each method's confirmed best (objective / pixel style truth / pixel content), beside the base
    model's and the references' truth; a study with no feasible best shows its highest-scoring trial's figures."""
    for style in dict.fromkeys(r["style"] for r in results.values()):
        rows = {r["space"]: r for r in results.values() if r["style"] == style}
        any_row = next(iter(rows.values()))
        base, refs = any_row.get("base_truth"), any_row.get("refs_truth")
        head = f"{style}: truth base {base:.3f}, references {refs:.3f}" if base is not None else style
        print(head)
        for method in methods:
            r = rows.get(method)
            if r is None:
                continue
            if r["best"] is not None:
                picked = f" (picked {r['method']})" if method == "searched" else ""
                print(f"  {method}{picked}: {r['objective']:+.3f} / {r['truth']:.3f} / {r['content_pixels']:.0%}")
            elif "infeasible_top" in r:
                x = r["infeasible_top"]
                ratio = x["content_text_ratio"]
                print(f"  {method}: no feasible best; its top trial {x['trial']}: {x['retest']:+.3f} / "
                      f"{x['truth']:.3f} / {x['content_pixels']:.0%} (ratio {ratio:.2f})")  # fmt: skip
            else:
                print(f"  {method}: no feasible best")


def print_table(results: dict[str, dict[str, Any]], methods: list[str]) -> None:
    """The issue's table: means ± spread over the styles each method was run on."""
    print_per_style(results, methods)
    print("means ± spread over styles")
    print("| method | best feasible confirmed objective | pixel style truth | pixel content right | trainable params "
          "| file size (KB) | s/step | peak memory | steps spent |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for method in methods:
        rows = [r for r in results.values() if r["space"] == method]
        picked = ", ".join(f"{r['style']}: {r.get('method') or 'none'}" for r in rows) if method == "searched" else ""
        nothing = sum(r["best"] is None for r in rows)
        peak = [r.get("peak_memory_bytes") for r in rows if r.get("peak_memory_bytes")]
        print(
            f"| {method}{f' (picked {picked})' if picked else ''} | {spread([r.get('objective') for r in rows])}"
            f"{f' ({nothing} of {len(rows)} no feasible trial)' if nothing else ''} "
            f"| {spread([r.get('truth') for r in rows])} | {spread([r.get('content_pixels') for r in rows], '{:.0%}')} "
            f"| {spread([r.get('trainable_params') for r in rows], '{:.0f}')} "
            f"| {spread([(r.get('file_bytes') or 0) / 1024 or None for r in rows], '{:.0f}')} "
            f"| {spread([r.get('seconds_per_step') for r in rows], '{:.3f}')} "
            f"| {spread([p / 2**20 for p in peak], '{:.0f} MiB') if peak else 'n/a (CPU)'} "
            f"| {spread([r.get('steps_spent') for r in rows], '{:.0f}')} |"
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
    parser.add_argument("--grid", type=Path, help="write the sample grid (the confirmed bests' samples) here")
    args = parser.parse_args()
    methods = list(SPACES) if args.methods == "all" else args.methods.split(",")
    if args.table:
        stored = json.loads(args.table.read_text())["results"]
        print_table(stored, [m for m in methods if any(r["space"] == m for r in stored.values())])
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    pictures: dict[str, dict[str, list[Any]]] = {}
    styles = args.styles.split(",")
    t0 = time.perf_counter()
    for style in styles:
        for method in methods:
            print(f"== {style}, {method}")
            study, config = run_study(style, method, args.trials, args.out, args.reuse)
            key = f"{style}-{method}"
            pictures[key] = {}
            results[key] = {"style": style, "space": method, **figures(study, config, style, pictures[key])}
            print("   ", json.dumps(results[key], default=str))
            if args.json:  # after every study: a long run stopped early keeps what it measured
                args.json.write_text(json.dumps({"results": results, "trials": args.trials}, indent=1))
        if args.grid:
            save_sample_grid(pictures, styles, methods, args.grid)
    print(f"\n{len(results)} studies of {args.trials} trials in {time.perf_counter() - t0:.0f}s")
    print_table(results, methods)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "trials": args.trials}, indent=1))


if __name__ == "__main__":
    main()
