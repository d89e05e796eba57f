"""Build a table: every configuration of the design trained once per style to the space's largest step budget,
read at every rung on the search seeds and on the confirmation seeds.

Per style it loads the base model and the judge once (``autolora.tune.session.Session``, the code path of a
``tune`` trial: the same cached latents and captions, prior pictures, training loop and sampling), then for each
configuration not yet in the table: attach the adapter (seeded as a trial), train, and at each rung draw the
evaluation prompts on both seed sets, score every sample with the study's judge, read the pixels (the style's
presence and tone, the subject's shape and colour, by ``autolora.miniworld.truth``; a style folder of the user's
own gets no pixel truth) and the judge's zero-shot shape and colour; then append the row and its samples. A row is
written only when its configuration has trained to its last rung (or failed): a stopped build resumes at the next
configuration, and a build is deterministic for a given machine and thread count (``--threads``, default 1).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.table.design import Configuration, design, largest_steps, presets
from benchmarks.table.store import StyleWriter

ADAPTER = "table"
ANCHOR_BASE = 1000
"""Anchors (``--anchors``: fixed configurations of interest, a probe that found the style) are numbered from here:
they can join a table at any time without renumbering its design, and the figures keep them out of the design's
shares."""


def commit() -> str:
    """The code's commit, ``+dirty`` when the working tree differs from it."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "autolora", "benchmarks", "search_spaces"],
                               cwd=root, capture_output=True, text=True).stdout.strip()  # fmt: skip
    except OSError:
        return "unknown"
    return head + ("+dirty" if dirty else "") if head else "unknown"


def world_of(base_model: str) -> dict[str, Any]:
    """Which base model: its name and, for a built-in, the hash of its build record (``build.json``)."""
    import hashlib

    from autolora.models.builtin import is_builtin

    out: dict[str, Any] = {"base_model": base_model}
    if is_builtin(base_model) and base_model == "builtin:miniworld":
        build = Path(__file__).resolve().parents[2] / "autolora" / "miniworld" / "weights" / "build.json"
        out["build_sha256"] = hashlib.sha256(build.read_bytes()).hexdigest()[:16]
    return out


def style_folder(style: str, work: Path) -> Path:
    """The style pictures a user gets from ``autolora miniworld images --style STYLE`` (16, seed 0), drawn once."""
    from autolora.miniworld.cli import write_style_folder

    folder = work / "styles" / style
    if not folder.is_dir():
        write_style_folder(style, 16, folder)
    return folder


class Truth:
    """The pixel truth of a miniworld style, or nothing for a style folder of the user's own."""

    def __init__(self, style: str | None, prompts: list[str]) -> None:
        from autolora.miniworld.battery import BATTERY
        from autolora.miniworld.quality import prompt_content
        from autolora.miniworld.truth import presence_reader, tone_shift
        from autolora.miniworld.world import STYLES

        self.style = style
        self.kind: str | None = None
        self.presence: Any = None
        self.tone: Any = None
        self.wanted: list[tuple[str, str]] | None = None
        if style is None or style not in (*STYLES, *BATTERY):
            self.style = None
            return
        try:
            self.wanted = [prompt_content(p) for p in prompts]
        except ValueError:
            return  # prompts outside miniworld's vocabulary: no content truth, and no style truth either
        self.kind, self.presence = presence_reader(style)
        from autolora.miniworld.battery import any_items

        try:
            tone_shift(any_items(style, 1, seed=7)[0][0], style)
            self.tone = lambda im: tone_shift(im, style)
        except ValueError:
            self.tone = None

    def describe(self) -> dict[str, Any] | None:
        if self.wanted is None:
            return None
        return {"presence": self.kind, "tone": self.tone is not None}

    def read_refs(self, images: list[Any], vae: Any, resolution: int) -> dict[str, float]:
        """The style's presence (and tone) on its pictures as drawn and after the VAE's round trip (the most a
        sample can show: a LoRA learns in the VAE's latent space)."""
        from autolora.models.roundtrip import round_trip_images

        out = {"presence": _mean([self.presence(im) for im in images])}
        trips = round_trip_images(vae, images, resolution)
        out["presence_vae"] = _mean([self.presence(im) for im in trips])
        if self.tone is not None:
            out["tone"] = _mean([self.tone(im) for im in images])
            out["tone_vae"] = _mean([self.tone(im) for im in trips])
        out.update(self.reader_ceiling(vae, resolution))
        return out

    def reader_ceiling(self, vae: Any, resolution: int, n: int = 96) -> dict[str, float]:
        """How often the pixel reader reads shape and colour right on ``n`` fresh pictures of the style as drawn
        and through the VAE's round trip: a sample that drew the style perfectly reads no better than the latter
        (the reader's own limit on this style, not the LoRA's)."""
        from autolora.miniworld.battery import any_items
        from autolora.miniworld.truth import read_content
        from autolora.models.roundtrip import round_trip_images

        if self.style is None:
            return {}
        items = any_items(self.style, n, seed=4321, size=resolution)
        drawn = [im for im, _, _ in items]
        wanted = [(shape, colour) for _, shape, colour in items]
        trips = round_trip_images(vae, drawn, resolution)
        return {
            "content": _mean([float(read_content(im) == w) for im, w in zip(drawn, wanted, strict=True)]),
            "content_vae": _mean([float(read_content(im) == w) for im, w in zip(trips, wanted, strict=True)]),
        }

    def read(self, images: list[Any], n_seeds: int, judge: Any) -> dict[str, list[Any]]:
        """Per sample (prompt-major): the pixels' readings (``pixels``) and whether the judge reads the prompt's
        shape and colour zero-shot."""
        from autolora.miniworld.judge import classify

        if self.wanted is None:
            return {}
        wanted = [w for w in self.wanted for _ in range(n_seeds)]
        zero_shot = classify(judge.embed_images, judge.embed_texts, list(images))
        return {
            **self.pixels(images, n_seeds),
            "judge_shape": [got[0] == w[0] for got, w in zip(zero_shot, wanted, strict=True)],
            "judge_colour": [got[1] == w[1] for got, w in zip(zero_shot, wanted, strict=True)],
        }

    def pixels(self, images: list[Any], n_seeds: int) -> dict[str, list[Any]]:
        """Per sample: the style's presence (and tone), and whether the pixels read the prompt's shape and colour."""
        from autolora.miniworld.truth import read_content

        assert self.wanted is not None
        wanted = [w for w in self.wanted for _ in range(n_seeds)]
        read = [read_content(im) for im in images]
        out: dict[str, list[Any]] = {
            "presence": [round(float(self.presence(im)), 5) for im in images],
            "shape": [got[0] == w[0] for got, w in zip(read, wanted, strict=True)],
            "colour": [got[1] == w[1] for got, w in zip(read, wanted, strict=True)],
        }
        if self.tone is not None:
            out["tone"] = [round(float(self.tone(im)), 5) for im in images]
        return out


def _mean(xs: list[float]) -> float:
    return round(float(sum(xs) / len(xs)), 5) if xs else float("nan")


def _rounded(metrics: dict[str, list[float]]) -> dict[str, list[float]]:
    return {k: [round(float(x), 6) for x in v] for k, v in metrics.items()}


def build_style(
    name: str,
    folder: Path,
    style: str | None,
    out: Path,
    *,
    base_model: str,
    search_space: str,
    objective: str,
    n_configs: int,
    design_seed: int,
    preset_setting: str,
    limit: int | None = None,
    anchors: list[str] | None = None,
    overrides: list[tuple[str, str, Any]] | None = None,
    echo: Any = print,
) -> StyleWriter:
    """Train every configuration of the design for one style (``style``: a miniworld style name for the pixel
    truth, None for a folder of the user's own) into ``out / name``; ``limit``: stop after that many new rows."""
    import torch

    from autolora.config import load_config
    from autolora.scoring.clip import ClipStyleContentScorer
    from autolora.tune.plan import make_plan
    from autolora.tune.session import Session

    work = out / name
    config = load_config(
        None,
        [
            ("model", "base_model", base_model),
            ("data", "style_images", str(folder)),
            ("study", "search_space", search_space),
            ("study", "objective", objective),
            ("study", "name", f"table-{name}"),
            ("study", "out", str(work / "run")),
            ("study", "presets", preset_setting),
            *(overrides or []),
        ],
    )
    plan = make_plan(config)
    steps = largest_steps(plan.compiled)
    rungs = sorted({*range(plan.eval_every, steps + 1, plan.eval_every), steps})
    cfg = config
    truth = Truth(style, plan.prompts)
    meta = {
        "style": name,
        "style_kind": style,
        "truth": truth.describe(),
        "space": plan.space_text,
        "objective": plan.objective_text,
        "design": {"kind": "latin-hypercube", "n": n_configs, "seed": design_seed, "presets": preset_setting},
        "rungs": rungs,
        "prompts": plan.prompts,
        "trigger": cfg.data.trigger,
        "seeds": list(cfg.eval.seeds),
        "confirm_seeds": list(cfg.eval.confirm_seeds),
        "resolution": plan.resolution,
        "eval": {"inference_steps": cfg.eval.inference_steps, "guidance_scale": cfg.eval.guidance()},
        "train_seed": cfg.train.seed,
        "world": world_of(base_model),
        "threads": torch.get_num_threads(),
        "commit": commit(),
    }
    writer = StyleWriter(work, meta)
    configs = presets(plan.compiled, plan.model.arch, preset_setting) if preset_setting != "none" else []
    configs += [Configuration(c.number + len(configs), c.params) for c in design(plan.compiled, n_configs, design_seed)]
    if anchors:  # fixed configurations of interest beside the design, numbered apart (ANCHOR_BASE on)
        configs += presets(plan.compiled, plan.model.arch, ",".join(anchors), first=ANCHOR_BASE)
        for c in configs[-len(anchors) :]:
            c.origin = c.origin.replace("preset ", "anchor ", 1)
    todo = [c for c in configs if c.number not in writer.done()]
    refs_read = not truth.wanted or "content_vae" in (writer.meta.get("references") or {})
    if not todo and refs_read:
        echo(f"{name}: {len(configs)} configurations, all in the table")
        return writer
    t0 = time.perf_counter()
    session = Session.load(plan)
    session.prepare(plan.run_dir / "cache")
    cache = plan.run_dir / "cache"
    confirm_base = session.base_samples_for(list(cfg.eval.confirm_seeds), cache)
    scorers = {"search": session.scorer, "confirm": ClipStyleContentScorer(session.judge)}
    scorers["confirm"].prepare(
        plan.style.images,
        plan.prompts,
        len(cfg.eval.confirm_seeds),
        confirm_base,
        session.anchors,
        plan.style.captions,
    )
    seeds = {"search": list(cfg.eval.seeds), "confirm": list(cfg.eval.confirm_seeds)}
    if not writer.meta.get("base"):
        base_images = {"search": session.base_samples, "confirm": confirm_base}
        figures = {part: {"truth": truth.read(base_images[part], len(seeds[part]), session.judge)} for part in seeds}
        refs = truth.read_refs(plan.style.images, session.pipe.vae, plan.resolution) if truth.wanted else None
        writer.set_base(figures, base_images)
        writer.update_meta(references=refs, setup_seconds=round(time.perf_counter() - t0, 1))
    elif truth.wanted and "content_vae" not in (writer.meta.get("references") or {}):  # tables built before it
        ceiling = truth.reader_ceiling(session.pipe.vae, plan.resolution)
        writer.update_meta(references={**writer.meta["references"], **ceiling})
    echo(f"{name}: {len(todo)} of {len(configs)} configurations to train, rungs {rungs}")
    for n_done, conf in enumerate(todo):
        if limit is not None and n_done >= limit:
            break
        row = train_one(session, plan, conf, rungs, scorers, seeds, truth, writer)
        last = row["rungs"][-1] if row["rungs"] else None
        shown = ""
        if last and "presence" in last["confirm"]["truth"]:
            t = last["confirm"]["truth"]
            right = sum(a and b for a, b in zip(t["shape"], t["colour"], strict=True)) / len(t["shape"])
            shown = f" presence {sum(t['presence']) / len(t['presence']):+.3f} content {right:.0%}"
        if last:
            shown += f" objective {last['confirm']['values'][0]:+.4f}"
        failed = f" FAILED {row['failed']}" if row["failed"] else ""
        echo(f"  {name} config {conf.number:>3} {sum(row['seconds'].values()):6.1f}s{shown} | {row['spec']}{failed}")
    session.release()
    return writer


def train_one(
    session: Any,
    plan: Any,
    conf: Configuration,
    rungs: list[int],
    scorers: dict[str, Any],
    seeds: dict[str, list[int]],
    truth: Truth,
    writer: StyleWriter,
) -> dict[str, Any]:
    """Train one configuration to its last rung, reading every rung; append its row (and samples)."""
    import optuna
    import torch

    from autolora.errors import TrialFailed
    from autolora.tune.train import train_lora

    cfg = plan.config
    spec = plan.compiled.spec(plan.compiled.suggest(optuna.trial.FixedTrial(conf.params)), plan.spec_defaults())
    method = spec.method
    trigger, identifier = cfg.data.trigger, cfg.data.identifier
    prompts = [method.prompt(p, trigger, identifier) for p in session.eval_prompts()]
    seconds: dict[str, float] = defaultdict(float)
    read: list[dict[str, Any]] = []

    def on_eval(step: int) -> None:
        rung: dict[str, Any] = {"step": step}
        for part, scorer in scorers.items():
            t = time.perf_counter()
            images = session.draw(prompts, seeds[part])
            seconds["sample"] += time.perf_counter() - t
            t = time.perf_counter()
            each = scorer.score_each(images)
            means = {k: sum(v) / len(v) for k, v in each.items()}
            seconds["score"] += time.perf_counter() - t
            t = time.perf_counter()
            rung[part] = {
                "metrics": _rounded(each),
                "values": [round(v, 6) for v in plan.objective.values(means)],
                "violations": {k: round(v, 6) for k, v in plan.objective.violations(means).items()},
                "truth": truth.read(images, len(seeds[part]), session.judge),
                "images": images,
            }
            seconds["truth"] += time.perf_counter() - t
        read.append(rung)

    failed = None
    losses: list[float] = []
    t0 = time.perf_counter()
    attached: list[str] = []
    try:
        t = time.perf_counter()
        prior = session.prior_for(spec)
        seconds["prior"] += time.perf_counter() - t
        torch.manual_seed(cfg.train.seed)  # as a trial: the adapter's init depends on its params only
        method.attach(session.pipe, spec, ADAPTER, attached)
        trainable = method.trainable_count(session.pipe, spec, attached)
        losses = train_lora(
            session.pipe,
            spec,
            session.train_data,
            session.train_settings(),
            plan.device,
            on_eval=on_eval,
            eval_every=plan.eval_every,
            attached=attached,
            prompt=(lambda c: method.prompt(c, trigger, identifier)) if method.learns_tokens else None,
            prior=prior,
            prior_weight=float(spec["prior_weight"]),
        )
    except TrialFailed as e:
        failed = str(e)
        trainable = 0
    finally:
        method.detach(session.pipe, ADAPTER, attached)
    total = time.perf_counter() - t0
    seconds["train"] = total - sum(seconds.values())
    for rung in read:  # the samples go to the images file, the row points to them
        for part in seeds:
            rung[part]["images"] = writer.add_images(rung[part]["images"])
    row = {
        "config": conf.number,
        "origin": conf.origin,
        "notes": conf.notes,
        "budget": conf.budget,
        "params": conf.params,
        "spec": spec.summary(),
        "trainable_params": trainable,
        "rungs": read,
        "loss": [round(sum(losses[i : i + 10]) / len(losses[i : i + 10]), 6) for i in range(0, len(losses), 10)],
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "failed": failed,
        "commit": commit(),
    }
    writer.add_row(row)
    return row


def reread(folder: Path, echo: Any = print, styles: list[str] | None = None) -> None:
    """Read every stored sample's pixel truth again with today's reader (and the references', the base's and the
    reader's ceiling), in place: a better reader re-reads a table without training it again. The judge's zero-shot
    readings stay as they were. Not on a style a build is adding to (both write its files): ``styles`` names the
    styles to read (default all)."""
    from PIL import Image

    from autolora.config import load_config
    from autolora.data import load_style_set
    from autolora.errors import UserError
    from autolora.models.loading import load_base, resolve_model
    from benchmarks.table.store import ROWS, _atomic_write, load_table

    def pixels(arrays: Any, n_seeds: int, old: dict[str, Any]) -> dict[str, Any]:
        judged = {k: v for k, v in old.items() if k.startswith("judge_")}
        return {**truth.pixels([Image.fromarray(a) for a in arrays], n_seeds), **judged}

    vaes: dict[str, Any] = {}

    def vae_of(base_model: str) -> Any:  # a table's styles share their base model: loaded once
        if base_model not in vaes:
            pipe, _ = load_base(resolve_model(base_model), load_config(None, []).model, "cpu")
            vaes[base_model] = pipe.vae
        return vaes[base_model]

    tables = load_table(folder)
    unknown = sorted(set(styles or []) - set(tables))
    if unknown:
        raise UserError(f"reread --styles: {', '.join(unknown)} not in {folder} (it has {', '.join(sorted(tables))})")
    for name, table in tables.items():
        if styles and name not in styles:
            continue
        meta = table.meta
        truth = Truth(meta.get("style_kind"), meta["prompts"])
        if truth.wanted is None or table.images is None:
            echo(f"{name}: no pixel truth to read again")
            continue
        n_seeds = {"search": len(meta["seeds"]), "confirm": len(meta["confirm_seeds"])}
        for part, base in meta["base"].items():
            first, count = base["images"]
            base["truth"] = pixels(table.images[first : first + count], n_seeds[part], base["truth"])
        style_folder = folder / "styles" / name
        if style_folder.is_dir():
            pipe = vae_of(meta["world"]["base_model"])
            meta["references"] = truth.read_refs(load_style_set(style_folder).images, pipe, meta["resolution"])
        changed = 0
        for row in table.rows:
            for rung in row["rungs"]:
                for part in ("search", "confirm"):
                    where = rung[part].get("images")
                    if not where or not rung[part]["truth"]:
                        continue
                    new = pixels(table.images[where[0] : where[0] + where[1]], n_seeds[part], rung[part]["truth"])
                    changed += new != rung[part]["truth"]
                    rung[part]["truth"] = new
        meta["truth_reread"] = commit()
        _atomic_write(folder / name / "meta.json", json.dumps(meta, indent=1))
        _atomic_write(folder / name / ROWS, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in table.rows))
        echo(f"{name}: read again; {changed} readings of a rung's samples changed")
