"""Can a user trust the pick? Test-retest of the objective, what the confirmation stage changes, and validity over
a study's trials against the pixel truth (issue "Selection users can trust", parts 2-4).

For each style and seed, one default ``autolora tune`` study on miniworld (sampler ``auto``, the presets first,
the confirmation stage on), keeping every complete trial's adapter. Then every complete trial is drawn again on the
confirmation seeds (``eval.confirm_seeds``, never seen by the search) and read three ways: the objective (same
judge), the pixel style truth (``miniworld.truth``: ``style_strength`` for a texture, ``tone_shift`` for a tone)
and the pixel content (shape and colour right, beside the base model's). Printed per study and pooled:

- test-retest: Spearman between a trial's search value and its value on the other seeds;
- validity: Spearman over trials between each style term (``style_gain``, ``style_direction``, the objective) on
  the other seeds and the pixel style truth (the issue's aim: >= 0.8);
- the confirmation stage (top 3): how often it changed the winner, and the winners' pixel style and content;
- the noise: the confirmed best's style part and its standard error over seeds (the "no measurable style" rule).

    python benchmarks/selection.py [--styles dotted,navy,shaded] [--seeds 2] [--trials 10] [--out bench-selection]
        [--json docs/miniworld/selection.json]

Run it alone (2 CPU cores: about 4 minutes a study).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any


def style_folder(style: str, work: Path) -> Path:
    from autolora.cli import main

    folder = work / f"style-{style}"
    if not folder.is_dir():
        rc = main(["miniworld", "images", "--style", style, "--out", str(folder)])
        if rc != 0:
            raise SystemExit(f"could not draw style {style}")
    return folder


def run_study(style: str, seed: int, trials: int, work: Path, reuse: bool) -> tuple[Any, Any]:
    """A default study (every adapter kept); ``reuse``: read one this script ran before instead."""
    from autolora.config import load_config
    from autolora.core.reading import find_study
    from autolora.tune.job import run_tune

    name = f"{style}-s{seed}"
    overrides = [
        ("study", "name", name),
        ("study", "out", str(work / name)),
        ("study", "mlflow_uri", f"sqlite:///{work}/mlflow.db"),
        ("study", "trials", trials),
        ("study", "seed", seed),
        ("train", "seed", seed),
        ("study", "keep_top_k", trials),
        ("data", "style_images", str(style_folder(style, work))),
    ]
    config = load_config(None, overrides)
    if reuse and (work / name / "config.yaml").is_file():
        study, _ = find_study(work / name, None, None)
        return study, config
    result = run_tune(config, echo=lambda s: print("   ", s), progress=False)
    return result.study, config


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def rescore_all(study: Any, config: Any, style: str, only: set[int] | None = None) -> dict[str, Any]:
    """Every complete trial (or those numbered in ``only``) drawn on the confirmation seeds: objective, style
    terms, pixel truth; ``images`` holds each drawn trial's pictures (prompt-major: every seed of a prompt)."""
    import optuna
    import torch

    from autolora.adapter import KeptAdapter
    from autolora.core.rundir import adapter_dir
    from autolora.methods import kept_method, load_kept
    from autolora.miniworld.quality import content_truth
    from autolora.scoring.clip import ClipStyleContentScorer
    from autolora.tune.plan import make_plan
    from autolora.tune.session import Session

    session = Session.load(make_plan(config))
    session.prepare(session.plan.run_dir / "cache")
    plan = session.plan
    seeds = list(config.eval.confirm_seeds)
    base = session.base_samples_for(seeds, plan.run_dir / "cache")
    scorer = ClipStyleContentScorer(session.judge)
    scorer.prepare(plan.style.images, plan.prompts, len(seeds), base, session.anchors, plan.style.captions)
    from autolora.miniworld.truth import presence_reader

    truth_kind, truth_of = presence_reader(style)
    prompts = [p for p in plan.prompts for _ in seeds]
    base_content = mean([float(x) for x in content_truth(session.judge, base, prompts)["pixels.both"]])
    rows = []
    drawn: dict[int, list[Any]] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if only is not None and t.number not in only:
            continue
        folder = adapter_dir(plan.run_dir, t.number)
        if not (folder / "adapter.json").is_file():
            continue
        kept = KeptAdapter.load(folder)
        method = kept_method(kept.configs)
        attached = load_kept(session.pipe, kept.configs, kept.state_dicts, "bench")
        with torch.no_grad():
            spelled = [method.prompt(p, config.data.trigger, config.data.identifier) for p in session.eval_prompts()]
            images = session.draw(spelled, seeds)
        method.detach(session.pipe, "bench", attached)
        drawn[t.number] = images
        metrics = scorer.score(images)
        content = content_truth(session.judge, images, prompts)["pixels.both"]
        rows.append(
            {
                "trial": t.number,
                "search": t.values[0],
                "retest": plan.objective.values(metrics)[0],
                "style_gain": metrics["style_gain"],
                "style_direction": metrics["style_direction"],
                "style_gram": metrics["style_gram"],
                "content_text_ratio": metrics["content_text_ratio"],
                "feasible": not plan.objective.broken(metrics),
                "truth": mean([truth_of(im) for im in images]),
                "content_pixels": mean([float(x) for x in content]),
                "preset": t.user_attrs.get("autolora.preset", ""),
                "steps": t.params.get("steps"),
            }
        )
    session.release()
    return {
        "rows": rows,
        "truth": truth_kind,
        "base_content": base_content,
        "base_truth": mean([truth_of(im) for im in base]),
        "refs_truth": mean([truth_of(im) for im in plan.style.images]),
        "images": drawn,
        "base_images": base,
    }


def study_figures(study: Any, rescored: dict[str, Any]) -> dict[str, Any]:
    from autolora.core.confirm_record import stored
    from autolora.miniworld.quality import spearman

    rows = rescored["rows"]
    out: dict[str, Any] = {"n_complete": len(rows), "base_content": rescored["base_content"]}
    if len(rows) >= 3:
        out["test_retest"] = spearman([r["search"] for r in rows], [r["retest"] for r in rows])
        for key in ("retest", "style_gain", "style_direction", "style_gram", "search"):
            out[f"validity.{key}"] = spearman([r[key] for r in rows], [r["truth"] for r in rows])
    conf = stored(study)
    if conf is not None:
        by = {r["trial"]: r for r in rows}
        out["confirmed_changed"] = conf.changed
        out["confirmed_best"] = conf.best
        out["search_best"] = conf.search_best
        if conf.best is not None:
            win = conf.trials[conf.best]
            out["best_style"], out["best_style_se"] = win.style, win.style_se
            out["best_within_noise"] = win.within_noise()
            if conf.best in by:
                out["best_truth"] = by[conf.best]["truth"]
                out["best_content_pixels"] = by[conf.best]["content_pixels"]
        if conf.search_best is not None and conf.search_best in by:
            out["search_best_truth"] = by[conf.search_best]["truth"]
            out["search_best_content_pixels"] = by[conf.search_best]["content_pixels"]
    presets = [r for r in rows if r["preset"].startswith("preset")]
    if presets:
        out["best_preset_retest"] = max(r["retest"] for r in presets)
    out["best_retest"] = max((r["retest"] for r in rows if r["feasible"]), default=None)
    return out


def spread(values: list[float]) -> str:
    vals = [v for v in values if v is not None and v == v]
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{mean(vals):+.2f} ± {sd:.2f} (n={len(vals)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--styles", default="dotted,navy,shaded")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench-selection"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--reuse", action="store_true", help="re-score the studies of an earlier run of this script")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    studies: dict[str, Any] = {}
    t0 = time.perf_counter()
    for style in args.styles.split(","):
        for seed in range(args.seeds):
            print(f"== {style}, seed {seed}")
            study, config = run_study(style, seed, args.trials, args.out, args.reuse)
            rescored = rescore_all(study, config, style)
            figures = study_figures(study, rescored)
            studies[f"{style}-s{seed}"] = {"style": style, "seed": seed, **figures, "rows": rescored["rows"]}
            shown = {k: v for k, v in figures.items() if not isinstance(v, list)}
            print("   ", json.dumps(shown, default=lambda v: round(v, 4) if isinstance(v, float) else str(v)))
            if args.json:  # after every study: a long run stopped early keeps what it measured
                args.json.write_text(json.dumps({"studies": studies, "trials": args.trials}, indent=1))
    pooled = {
        key: spread([s.get(key) for s in studies.values()])  # type: ignore[misc]
        for key in (
            "test_retest",
            "validity.retest",
            "validity.search",
            "validity.style_gain",
            "validity.style_direction",
            "validity.style_gram",
        )
    }
    changed = [s["confirmed_changed"] for s in studies.values() if "confirmed_changed" in s]
    noise = [s["best_within_noise"] for s in studies.values() if "best_within_noise" in s]
    print(f"\n{len(studies)} studies of {args.trials} trials in {time.perf_counter() - t0:.0f}s")
    for key, text in pooled.items():
        print(f"  {key:28s} {text}")
    print(f"  confirmation changed the winner in {sum(changed)} of {len(changed)} studies")
    print(f"  the confirmed best was within the noise in {sum(noise)} of {len(noise)} studies")
    for s in studies.values():
        if s.get("confirmed_changed"):
            print(
                f"  {s['style']}-s{s['seed']}: search best {s['search_best']} "
                f"(truth {s.get('search_best_truth', 0):.3f}, content {s.get('search_best_content_pixels', 0):.0%}) "
                f"-> confirmed {s['confirmed_best']} (truth {s.get('best_truth', 0):.3f}, "
                f"content {s.get('best_content_pixels', 0):.0%})"
            )
    if args.json:
        args.json.write_text(json.dumps({"studies": studies, "pooled": pooled, "trials": args.trials}, indent=1))


if __name__ == "__main__":
    main()
