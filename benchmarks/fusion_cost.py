"""What a fusion trial costs over the sampling pass it cannot avoid, measured side by side.

Loads the embedded model with two random LoRAs once, then alternates, ``--rounds`` times:

1. a fusion trial (``FuseTrialRunner`` through ``study.optimize``: the sampler's draw, coefficients set on every
   LoRA module, the fixed prompts x seeds sampled, scored against both styles), without MLflow;
2. the same trial logging to MLflow (metrics, sample grid, coefficients), as ``autolora fuse`` runs it;
3. a plain sampling pass + scoring of the same prompts x seeds on the same pipeline, coefficients untouched.

Prints the median seconds of each and the ratios to the plain pass.

    python benchmarks/fusion_cost.py [--rounds 5] [--granularity layer] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def random_loras(folder: Path, pipe: Any) -> list[str]:
    """Two seeded random LoRAs (attention + text encoder; attention + convs) written as autolora exports them."""
    import torch
    from peft import LoraConfig

    from autolora.adapter import KeptAdapter, adapter_state_dict, attach, config_to_dict, detach
    from autolora.formats.export import export_all
    from autolora.fuse import base_facts

    attn = ["to_q", "to_k", "to_v", "to_out.0"]
    specs = {
        "ink": {
            "unet": LoraConfig(r=4, target_modules=attn),
            "text_encoder": LoraConfig(r=4, target_modules=["q_proj"]),
        },
        "water": {"unet": LoraConfig(r=2, target_modules=[*attn, "conv1", "conv2"])},
    }
    files = []
    for seed, (name, configs) in enumerate(specs.items()):
        torch.manual_seed(seed)
        for comp, config in configs.items():
            attach(getattr(pipe, comp), config, name)
            with torch.no_grad():
                for key, param in getattr(pipe, comp).named_parameters():
                    if "lora_B" in key:
                        param.normal_(0, 0.3)
        kept = KeptAdapter(
            {c: config_to_dict(cfg) for c, cfg in configs.items()},
            {c: adapter_state_dict(getattr(pipe, c), name) for c in configs},
            base=base_facts(pipe),
        )
        for comp in configs:
            detach(getattr(pipe, comp), name)
        files.append(f"{name}={export_all(kept, folder / name, name, kohya=False)['diffusers']}")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--granularity", default="layer")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per sample (eval.inference_steps)")
    args = parser.parse_args()

    import optuna
    import torch

    from autolora.config import load_config
    from autolora.core.tracking import Tracker
    from autolora.fuse.config import FuseRunConfig
    from autolora.fuse.plan import make_fuse_plan
    from autolora.fuse.session import FuseSession
    from autolora.fuse.space import CoefficientSpace
    from autolora.fuse.trial import FuseTrialRunner
    from autolora.models.loading import load_pipeline, resolve_model
    from autolora.quiet import quiet_libraries
    from autolora.sampling import sample

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="fusion-cost-"))
    loras = random_loras(work, load_pipeline(resolve_model("builtin:tiny-sd"), "cpu", torch.float32))
    overrides = [
        ("model", "base_model", "builtin:tiny-sd"),
        ("fuse", "loras", loras),
        ("fuse", "granularity", args.granularity),
        ("eval", "inference_steps", args.steps),
        ("study", "out", str(work / "run")),
    ]
    config = load_config(None, overrides, FuseRunConfig)
    plan = make_fuse_plan(config)
    session = FuseSession.load(plan)
    session.prepare(work / "cache")
    space = CoefficientSpace.of(session.fa, args.granularity, "constant", config.fuse)
    tracker = Tracker(f"sqlite:///{work}/mlflow.db", "fusion-cost")
    parent = tracker.start_parent("bench", {}, [])
    bare = optuna.create_study(direction="maximize", sampler=optuna.samplers.CmaEsSampler(seed=0))
    logged = optuna.create_study(direction="maximize", sampler=optuna.samplers.CmaEsSampler(seed=0))
    quiet = FuseTrialRunner(session, space, "dlf", None, echo=lambda _: None)
    tracked = FuseTrialRunner(session, space, "dlf", parent, echo=lambda _: None)
    ev = config.eval

    def plain() -> None:
        images = sample(
            session.pipe,
            session.eval_prompts(),
            ev.seeds,
            steps=ev.inference_steps,
            guidance_scale=ev.guidance(),
            resolution=plan.resolution,
            batch_size=ev.batch_size,
        )
        assert session.scorer is not None
        session.scorer.score(images)

    runs = {
        "fusion trial": lambda: bare.optimize(quiet, n_trials=1),
        "fusion trial + MLflow": lambda: logged.optimize(tracked, n_trials=1),
        "plain sample + score": plain,
    }
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    plain()  # warm-up
    for _ in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - t0)
    parent.end()
    session.close()
    base = statistics.median(seconds["plain sample + score"])
    n_images = len(plan.prompts) * len(ev.seeds)
    print(
        f"builtin:tiny-sd, 2 LoRAs, {args.granularity} granularity ({len(space.param_names())} coefficients), "
        f"{n_images} images x {ev.inference_steps} steps, {args.rounds} rounds, median seconds:"
    )
    print(f"{'':24s} {'seconds':>8s} {'ratio':>7s}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:24s} {median:8.3f} {median / base:7.3f}")


if __name__ == "__main__":
    main()
