"""What buys the search value's test-retest at least cost: the evaluation levers that need the adapters again.

The trial table keeps samples, not adapters, so the seed lever is measured there (``python -m benchmarks.table
judge``, ``test_retest.by_samples``); this retrains some of the quick table's configurations (the ``quick`` space,
today's ``balanced`` recipe, the tune code path) and, at several rungs, evaluates each adapter in several ways:

- ``today``: the scheduler the model ships (miniworld: DDIM), ``eval.inference_steps`` (20), 2 seeds (8 samples);
- ``today x2``: the same on 4 seeds (16 samples, twice the cost);
- ``10 steps, 4 seeds``: half the steps, twice the seeds (the same cost);
- ``dpm++ 10, 2 seeds`` / ``dpm++ 10, 4 seeds``: DPM-Solver++ (2M, diffusers' ``DPMSolverMultistepScheduler``) at 10
  steps (half and the same cost);
- ``dpm++ 5, 8 seeds``: DPM-Solver++ at 5 steps, 8 seeds (32 samples, the same cost).

Each trial's *reference* is the same adapter on the 6 confirmation seeds at today's settings (24 samples): a
variant's **test-retest** is the Spearman of its value (today's default recipe) against the reference's over the
trials, its **validity** the Spearman of its ``style_auto`` against the pixel style presence of the reference
samples, and its **cost** the seconds it took to sample and score, per trial. A lower evaluation resolution is not a
lever on miniworld (32 pixels, the VAE halves it and the UNet halves it twice more).

    python -m benchmarks.eval_levers --styles dotted,rings --configs 8 --json docs/judge/eval-levers.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

VARIANTS: dict[str, tuple[str, int, int]] = {
    "today": ("default", 20, 2),
    "today x2": ("default", 20, 4),
    "10 steps, 4 seeds": ("default", 10, 4),
    "dpm++ 10, 2 seeds": ("dpm++", 10, 2),
    "dpm++ 10, 4 seeds": ("dpm++", 10, 4),
    "dpm++ 5, 8 seeds": ("dpm++", 5, 8),
}
"""name -> (scheduler, denoising steps, seeds); seeds are 0..n-1, the reference's are the confirmation seeds."""


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def run_style(style: str, table: Path, n_configs: int, rungs: list[int], echo: Any = print) -> list[dict[str, Any]]:
    import optuna
    import torch
    from diffusers import DPMSolverMultistepScheduler

    from autolora.config import load_config
    from autolora.sampling import sample
    from autolora.scoring.clip import ClipStyleContentScorer
    from autolora.tune.plan import make_plan
    from autolora.tune.session import Session
    from autolora.tune.train import train_lora
    from benchmarks.table.build import ADAPTER, Truth, style_folder
    from benchmarks.table.store import load_table

    rows = sorted(load_table(table, [style], images=False)[style].complete(), key=lambda r: r["config"])[:n_configs]
    work = Path("bench-levers") / style
    folder = style_folder(style, Path("bench-levers"))  # drawn as the table drew them, never into the table
    config = load_config(
        None,
        [
            ("data", "style_images", str(folder)),
            ("study", "search_space", "quick"),
            ("study", "objective", "balanced"),
            ("study", "name", f"levers-{style}"),
            ("study", "out", str(work / "run")),
            ("study", "presets", "none"),
        ],
    )
    plan = make_plan(config)
    session = Session.load(plan)
    session.prepare(plan.run_dir / "cache")
    ev = config.eval
    truth = Truth(style, plan.prompts)
    schedulers = {
        "default": session.pipe.scheduler,
        "dpm++": DPMSolverMultistepScheduler.from_config(session.pipe.scheduler.config, algorithm_type="dpmsolver++"),
    }

    def draw(prompts: list[str], seeds: list[int], scheduler: str, steps: int) -> list[Any]:
        session.pipe.scheduler = schedulers[scheduler]
        try:
            return sample(session.pipe, prompts, seeds, steps=steps, guidance_scale=ev.guidance(),
                          resolution=plan.resolution, batch_size=ev.batch_size)  # fmt: skip
        finally:
            session.pipe.scheduler = schedulers["default"]

    def scorer_for(seeds: list[int], scheduler: str, steps: int) -> Any:
        base = draw(session.eval_prompts(), seeds, scheduler, steps)
        scorer = ClipStyleContentScorer(session.judge, session.readers())
        scorer.prepare(plan.style.images, plan.prompts, len(seeds), base, session.anchors, plan.style.captions)
        return scorer

    reference = ("default", ev.inference_steps, list(ev.confirm_seeds))
    scorers = {"reference": scorer_for(reference[2], reference[0], reference[1])}
    for name, (sched, steps, n) in VARIANTS.items():
        scorers[name] = scorer_for(list(range(n)), sched, steps)
    out: list[dict[str, Any]] = []
    trigger, identifier = config.data.trigger, config.data.identifier
    for row in rows:
        spec = plan.compiled.spec(plan.compiled.suggest(optuna.trial.FixedTrial(row["params"])), plan.spec_defaults())
        method = spec.method
        prompts = [method.prompt(p, trigger, identifier) for p in session.eval_prompts()]
        rewrite = (lambda c, m=method: m.prompt(c, trigger, identifier)) if method.learns_tokens else None

        def on_eval(step: int, spec: Any = spec, prompts: list[str] = prompts, row: dict[str, Any] = row) -> None:
            if step not in rungs:
                return
            trial: dict[str, Any] = {"config": row["config"], "step": step, "variants": {}}
            for name, (sched, steps, seeds) in {"reference": reference, **{
                    k: (v[0], v[1], list(range(v[2]))) for k, v in VARIANTS.items()}}.items():  # fmt: skip
                t0 = time.perf_counter()
                images = draw(prompts, seeds, sched, steps)
                each = scorers[name].score_each(images)
                means = {k: _mean(v) for k, v in each.items()}
                seconds = time.perf_counter() - t0
                entry = {
                    "value": plan.objective.values(means)[0],
                    "style_auto": means["style_auto"],
                    "seconds": seconds,
                }
                if name == "reference":
                    entry["presence"] = _mean(truth.read(images, len(seeds), session.judge)["presence"])
                trial["variants"][name] = entry
            out.append(trial)
            ref = trial["variants"]["reference"]
            echo(f"  {style} config {row['config']} step {step}: reference {ref['value']:+.4f} {ref['presence']:+.3f}")

        attached: list[str] = []
        try:
            torch.manual_seed(config.train.seed)
            method.attach(session.pipe, spec, ADAPTER, attached)
            train_lora(session.pipe, spec, session.train_data, session.train_settings(), plan.device,
                       on_eval=on_eval, eval_every=plan.eval_every, attached=attached,
                       prompt=rewrite,
                       prior=session.prior_for(spec), prior_weight=float(spec["prior_weight"]))  # fmt: skip
        finally:
            method.detach(session.pipe, ADAPTER, attached)
        (work / "trials.json").write_text(json.dumps(out, indent=1) + "\n")  # resumable by eye; re-run from scratch
    session.release()
    return out


def _bootstrap_gain(trials: list[dict[str, Any]], name: str, n: int = 2000) -> list[float]:
    """The variant's test-retest less today's, with a 95 % interval over trials resampled (paired: the same trials
    for both): [low, median, high]."""
    import numpy as np
    from scipy.stats import spearmanr

    ref = np.array([t["variants"]["reference"]["value"] for t in trials])
    val = np.array([t["variants"][name]["value"] for t in trials])
    today = np.array([t["variants"]["today"]["value"] for t in trials])
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(n):
        i = rng.integers(0, len(trials), len(trials))
        gains.append(spearmanr(val[i], ref[i]).statistic - spearmanr(today[i], ref[i]).statistic)
    low, mid, high = np.nanpercentile(gains, [2.5, 50, 97.5])
    return [float(low), float(mid), float(high)]


def figures(by_style: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    from scipy.stats import spearmanr

    out: dict[str, Any] = {}
    for name in VARIANTS:
        per = {}
        for style, trials in by_style.items():
            ref = [t["variants"]["reference"]["value"] for t in trials]
            val = [t["variants"][name]["value"] for t in trials]
            order = sorted(range(len(trials)), key=lambda i: -(ref[i] + val[i]))[: max(3, len(trials) // 2)]
            per[style] = {
                "retest": float(spearmanr(val, ref).statistic),
                "retest_top_half": float(spearmanr([val[i] for i in order], [ref[i] for i in order]).statistic),
                "validity": float(spearmanr([t["variants"][name]["style_auto"] for t in trials],
                                            [t["variants"]["reference"]["presence"] for t in trials]).statistic),
                "seconds": _mean([t["variants"][name]["seconds"] for t in trials]),
                "trials": len(trials),
            }  # fmt: skip
            per[style]["gain_over_today"] = _bootstrap_gain(trials, name)
        out[name] = {"styles": per, **{k: _mean([p[k] for p in per.values()]) for k in
                                       ("retest", "retest_top_half", "validity", "seconds")}}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--styles", default="dotted,rings")
    p.add_argument("--table", type=Path, default=Path("docs/table/quick"), help="the table (packed or not) whose "
                   "configurations are retrained")  # fmt: skip
    p.add_argument("--configs", type=int, default=8, help="the table's first N configurations per style")
    p.add_argument("--rungs", default="200,400,600")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--figures", type=Path, help="only recompute the figures of a JSON this wrote (no training)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rungs = [int(r) for r in args.rungs.split(",")]
    if args.figures:
        by_style = json.loads(args.figures.read_text())["trials"]
    else:
        by_style = {s: run_style(s, args.table, args.configs, rungs) for s in args.styles.split(",")}
    figs = figures(by_style)
    print("\nvariant: test-retest against 24 samples at today's settings (all / top half), validity, s per trial")
    for name, f in figs.items():
        cells = "  ".join(f"{s}: {v['retest']:+.2f}/{v['retest_top_half']:+.2f}/{v['validity']:+.2f}"
                          for s, v in f["styles"].items())  # fmt: skip
        print(f"  {name:<20} {f['retest']:+.2f} / {f['retest_top_half']:+.2f}  validity {f['validity']:+.2f}  "
              f"{f['seconds']:5.1f} s   {cells}")  # fmt: skip
        gains = "  ".join(f"{s}: {v['gain_over_today'][1]:+.2f} [{v['gain_over_today'][0]:+.2f}, "
                          f"{v['gain_over_today'][2]:+.2f}]" for s, v in f["styles"].items())  # fmt: skip
        print(f"  {'':<20} test-retest less today's (95 % interval over trials): {gains}")
    if args.json:
        args.json.write_text(json.dumps({"variants": VARIANTS, "figures": figs, "trials": by_style}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
