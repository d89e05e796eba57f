"""Can a style LoRA learn a texture, or only a tone? docs/miniworld.md's texture table.

Draws 16 references of a patterned miniworld style (content captions only, the built-in style's content), trains
the figure-3 LoRA on them (``miniworld_quality.FIXED``, one trial), samples the four held-out prompts x 4 seeds
at LoRA scales 0 / 1 / 1.25 and prints the pixel truth: texture (``truth.style_strength``), tone
(``truth.tone_shift``) and content right.

``--period P`` redraws the world's textures at period P for this process only (references and the texture
reading; the base model keeps what it was trained on): the probe for a coarser pattern. ``--weights DIR`` takes
a build folder (``autolora miniworld build --out DIR``) as the base model instead of the shipped one.

The defaults are the built-in style and the figure-3 LoRA (a LoCon: rank 8, lr 2e-3, 600 steps).
``--layers`` changes the LoRA's layer kinds (``conv`` adds the ResNet convolutions, as LyCORIS' LoCon does). The
references' VAE round trip is printed beside them: no sample can show more texture than that.

    python benchmarks/miniworld_texture.py [--style dotted] [--period 16] [--steps 600] [--weights DIR]
        [--layers self_attn,cross_attn,ff,conv] [--rank R] [--learning-rate LR] [--train-seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--style", help="striped, dotted, checker or shaded (default: the built-in style)")
    parser.add_argument("--period", type=int, help="texture period in pixels (default: the world's, 8 at 32 px)")
    parser.add_argument("--steps", type=int, help="training steps (default the figure-3 LoRA's)")
    parser.add_argument("--weights", type=Path, help="a miniworld build folder to use as the base model")
    parser.add_argument(
        "--layers", help="LoRA layer kinds, comma-separated (default self_attn,cross_attn,ff,conv; conv: LoCon-style)"
    )
    parser.add_argument("--rank", type=int, help="LoRA rank (default the figure-3 LoRA's)")
    parser.add_argument("--learning-rate", type=float, help="LoRA learning rate (default the figure-3 LoRA's)")
    parser.add_argument("--train-seed", type=int, default=0, help="training noise and data order (train.seed)")
    parser.add_argument("--out", type=Path, default=Path("bench-texture"))
    args = parser.parse_args()
    from autolora.data import BUILTIN_STYLE
    from autolora.miniworld.truth import TEXTURED

    args.style = args.style or BUILTIN_STYLE

    if args.style not in TEXTURED:
        parser.error(f"--style {args.style}: expected one of {', '.join(TEXTURED)}")
    from autolora.models.layers import UNET_LAYERS

    layers = args.layers.split(",") if args.layers else None
    if layers and not set(layers) <= set(UNET_LAYERS):
        parser.error(f"--layers {args.layers}: expected kinds among {', '.join(UNET_LAYERS)}")
    if args.period is not None and (args.period < 4 or args.period % 2):
        parser.error(f"--period {args.period}: expected an even number >= 4")
    import autolora.miniworld.world as world

    if args.period is not None:
        period = args.period
        world._period = lambda size: period  # a probe knob: this process only, never the shipped world
    import miniworld_quality as q

    from autolora.adapter import KeptAdapter
    from autolora.core.rundir import adapter_dir
    from autolora.data import BUILTIN_STYLE_CONTENT
    from autolora.formats.export import export_all
    from autolora.miniworld.battery import draw_any
    from autolora.miniworld.truth import style_strength
    from autolora.models.roundtrip import round_trip_images
    from autolora.quiet import quiet_libraries
    from autolora.sampling import grid, sample

    quiet_libraries()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="autolora-texture-"))
    os.chdir(work)
    refs_dir = work / "style"
    refs_dir.mkdir()
    rng, refs = random.Random(0), []
    for i in range(16):
        shape, colour = BUILTIN_STYLE_CONTENT[i % len(BUILTIN_STYLE_CONTENT)]
        image = draw_any(args.style, shape, colour, rng)
        image.save(refs_dir / f"{i:02d}.png")
        (refs_dir / f"{i:02d}.txt").write_text(world.caption(shape, colour))
        refs.append(image)
    overrides: list[tuple[str, str, Any]] = [("data", "style_images", str(refs_dir))]
    if args.weights:
        from autolora.models.miniworld import assemble_pipeline

        assemble_pipeline(work / "base", args.weights.resolve())
        overrides += [("model", "base_model", str(work / "base")), ("eval", "clip_model", "builtin:miniworld-clip")]
    params = {**q.FIXED, **({"target_layers": layers} if layers else {})}
    given = (("steps", args.steps), ("rank", args.rank), ("learning_rate", args.learning_rate))
    params.update({k: v for k, v in given if v is not None})
    space = q._space(work, "fixed", params)
    seeds = [0, 1, 2, 3]
    study = [("study", "trials", 1), ("study", "search_space", space), ("eval", "seeds", seeds)]
    study.append(("train", "seed", args.train_seed))
    _, config = q._tune(work, "texture", study + overrides)
    session = q._session(config)
    files = export_all(KeptAdapter.load(adapter_dir(session.plan.run_dir, 0)), work / "export", "texture")
    pipe = session.pipe
    pipe.load_lora_weights(str(files["diffusers"]), adapter_name="texture")
    prompts = session.eval_prompts()
    result: dict[str, Any] = {
        "style": args.style,
        "period": args.period,
        "steps": params["steps"],
        "weights": str(args.weights) if args.weights else "shipped",
        "layers": params["target_layers"],
        "rank": params["rank"],
        "learning_rate": params["learning_rate"],
        "train_seed": args.train_seed,
        "references_texture": q.mean([style_strength(im, args.style) for im in refs]),
        "vae_round_trip_texture": q.mean(
            [style_strength(im, args.style) for im in round_trip_images(pipe.vae, refs, session.plan.resolution)]
        ),
    }
    print(
        f"references: texture {result['references_texture']:.3f}; their VAE round trip (the most a sample can "
        f"show) {result['vae_round_trip_texture']:.3f}"
    )
    columns = []
    for scale in (0.0, 1.0, 1.25):
        pipe.set_adapters(["texture"], adapter_weights=[scale])
        images = sample(pipe, prompts, seeds, steps=20, guidance_scale=7.5, resolution=session.plan.resolution)
        truth = q._truth_of(images, session.plan.prompts, len(seeds), session.judge, args.style)
        result[f"scale {scale}"] = truth
        columns.append(images[:: len(seeds)])
        print(
            f"scale {scale:4.2f}: texture {truth['style_strength']:.3f}, tone {truth['tone_shift']:+.2f}, "
            f"content right {truth['content_pixels']:.0%}"
        )
    name = f"texture-{args.style}{args.period or ''}" + (f"-seed{args.train_seed}" if args.train_seed else "")
    q.upscale(grid([im for col in zip(*columns, strict=True) for im in col], rows=len(prompts))).save(
        out / f"{name}.png"
    )
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"results in {out / name}.json; work folder {work}")


if __name__ == "__main__":
    main()
