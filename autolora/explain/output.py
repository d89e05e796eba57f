"""What an explain run leaves: ``explain.json``, a heatmap (groups x style/content), the samples (base row first),
a page with all of it, the one-screen summary, and the same files as MLflow artifacts when tracked."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from autolora.atomic import write_file, write_text
from autolora.loras.groups import key_order

JSON_FILE, HEATMAP_FILE, SAMPLES_FILE, PAGE_FILE = "explain.json", "explain.png", "samples.png", "explain.html"


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The one-screen summary of ``explain.json``'s document."""
    m = doc["map"]
    metric, groups = m["style_metric"], m["groups"]
    full = m["full"][metric]
    base = m["base"][metric]
    lines = [
        f"{doc['lora']} on {doc['base_model']}: {len(groups)} {m['granularity']} groups, style by {metric} against "
        f"the {m['references']}, {m['seeds']} seeds, {m['sampling_passes']} sampling passes in {m['seconds']:.0f} s",
        f"  full LoRA: style {full['mean'] - base['mean']:+.3f} ± {full['sd']:.3f} over the base model; content "
        + ", ".join(f"{c} {v:+.1f} points" for c, v in m["content_cost_full"].items())
        + " (cost against the base model)",
    ]
    lines.append("  " + where_line(doc))
    costly = [g for g in groups if g["worst_cost"] > 0 and g["worst_cost"] / 100 > g["share"] * m["style_full"]]
    for g in sorted(costly, key=lambda g: -g["worst_cost"])[:2]:
        metric_of = max(g["content_cost"], key=lambda c: g["content_cost"][c]["mean"])
        lines.append(
            f"  {g['group']} costs {g['worst_cost']:.1f} points of {metric_of} for {g['share']:.0%} of the style"
        )
    r = doc["rank"]
    if r:
        lines.append(
            f"  rank {r['rank']} used: 90 % of the delta in {r['k90_median']:g} directions (median layer, at most "
            f"{r['k90_max']}), 99 % in {r['k99_median']:g} (at most {r['k99_max']})"
        )
    p = doc.get("pruned")
    if p:
        if p["written"]:
            ratio = p["original_size"] / max(p["size"], 1)
            lines.append(
                f"  pruned LoRA ({' '.join(p['kept'])}, rank {p['rank']}): {p['style_kept']:.0%} of the style, content "
                + ", ".join(f"{c} {v:+.1f} points" for c, v in p["content_cost"].items())
                + f"; {_size(p['original_size'])} -> {_size(p['size'])} ({ratio:.1f}x smaller)"
            )
        else:
            lines.append(f"  no pruned LoRA written: {p['reason']}")
    return lines


def where_line(doc: dict[str, Any]) -> str:
    """Where the style lives: the groups holding 5 % of it or more, most first (at most 4)."""
    m = doc["map"]
    living = [g for g in sorted(m["groups"], key=lambda g: -g["share"]) if g["share"] >= 0.05][:4]
    if living and m["style_full"] > 0:
        return "style lives in " + ", ".join(f"{g['group']} ({g['share']:.0%})" for g in living)
    return f"the LoRA shows no style by {m['style_metric']} ({m['style_full']:+.3f} over the base model)"


def table_lines(doc: dict[str, Any]) -> list[str]:
    """Every group: share, style alone and without (mean ± sd over seeds), content cost alone per reading."""
    m = doc["map"]
    metrics = m["content_metrics"]
    head = f"  {'group':<24} {'share':>6} {'style alone':>16} {'style lost w/o':>16} " + " ".join(
        f"{c[:22]:>22}" for c in metrics
    )
    out = [head]
    for g in sorted(m["groups"], key=lambda g: key_order(g["group"])):
        costs = " ".join(f"{g['content_cost'][c]['mean']:+14.1f} ± {g['content_cost'][c]['sd']:4.1f}" for c in metrics)
        out.append(
            f"  {g['group']:<24} {g['share']:6.0%} {g['style_alone']:+9.3f} ± {g['style_alone_sd']:.3f}"
            f" {g['style_drop']:+9.3f} ± {g['style_drop_sd']:.3f} {costs}"
        )
    return out


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def write_outputs(doc: dict[str, Any], samples: dict[str, list[Any]], out: Path) -> list[Path]:
    """Write the JSON, heatmap, samples grid and page into ``out``; return their paths."""
    paths = [write_text(out / JSON_FILE, json.dumps(doc, indent=1) + "\n")]
    paths.append(heatmap(doc, out / HEATMAP_FILE))
    picture = samples_grid(samples)
    paths.append(write_file(out / SAMPLES_FILE, lambda tmp: picture.save(tmp, format="PNG")))
    paths.append(write_text(out / PAGE_FILE, page(doc)))
    return paths


def samples_grid(samples: dict[str, list[Any]], label_width: int = 120) -> Any:
    """One labelled row per reading (base first, then the full LoRA, each group alone, the pruned file), each row
    the prompts x seeds in order; pictures under 128 px are enlarged (nearest) so they can be looked at."""
    from PIL import Image, ImageDraw

    order = ["base", "full", *(k for k in samples if k.startswith("alone:")), "pruned"]
    rows = [(k, samples[k]) for k in order if k in samples]
    w, h = rows[0][1][0].size
    zoom = max(1, -(-128 // max(w, h)))
    w, h = w * zoom, h * zoom
    cols = max(len(images) for _, images in rows)
    canvas = Image.new("RGB", (label_width + cols * w, len(rows) * h), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, images) in enumerate(rows):
        draw.text(
            (4, r * h + h // 2 - 6), name.removeprefix("alone:") + (" alone" if ":" in name else ""), fill="black"
        )
        for c, image in enumerate(images):
            canvas.paste(image.resize((w, h), Image.Resampling.NEAREST), (label_width + c * w, r * h))
    return canvas


def heatmap(doc: dict[str, Any], path: Path) -> Path:
    """Groups x (style share, style alone, style lost without, content cost alone per reading, and the share of the
    delta when the document has the spectrum's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = doc["map"]
    groups = sorted(m["groups"], key=lambda g: key_order(g["group"]))
    delta = doc.get("delta_shares", {})
    columns = ["style share", "style alone", "style lost w/o"]
    columns += [f"cost {c} (pts)" for c in m["content_metrics"]] + (["delta share"] if delta else [])
    values = np.array(
        [
            [g["share"], g["style_alone"], g["style_drop"]]
            + [g["content_cost"][c]["mean"] for c in m["content_metrics"]]
            + ([delta.get(g["group"], 0.0)] if delta else [])
            for g in groups
        ],
        dtype=float,
    )
    scale = np.abs(values).max(0)
    shown = values / np.where(scale > 0, scale, 1.0)
    fig, ax = plt.subplots(figsize=(1.3 * len(columns) + 2.5, 0.38 * len(groups) + 1.8))
    ax.imshow(shown, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(groups)), [g["group"] for g in groups], fontsize=7)
    for (r, c), v in np.ndenumerate(values):
        text = f"{v:.0%}" if columns[c].endswith("share") else (f"{v:+.1f}" if "pts" in columns[c] else f"{v:+.3f}")
        ax.text(c, r, text, ha="center", va="center", fontsize=6, color="white" if abs(shown[r, c]) > 0.6 else "black")
    ax.set_title(
        f"{doc['lora']}: where the style lives ({m['style_metric']}), what each group costs (red: more)", fontsize=8
    )
    fig.tight_layout()
    write_file(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def section(doc: dict[str, Any], folder: str = "") -> str:
    """The map as an HTML section (the explain page's body; a report can include it), images relative to
    ``folder``."""
    lines = "\n".join(summary_lines(doc) + [""] + table_lines(doc))
    return (
        "<section><h2>Where the style lives</h2>"
        f"<pre>{html.escape(lines)}</pre>"
        f'<img src="{folder}{HEATMAP_FILE}" alt="heatmap of the groups">'
        "<p>Samples: the base model, the full LoRA, then each group alone"
        + (", then the pruned file" if doc.get("pruned", {}).get("written") else "")
        + f' (one row each).</p><img src="{folder}{SAMPLES_FILE}" alt="samples, base row first"></section>'
    )


def page(doc: dict[str, Any]) -> str:
    title = html.escape(f"autolora explain: {doc['lora']}")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
        "<style>body{font-family:sans-serif;margin:2em}pre{font-size:12px}img{max-width:100%}</style></head>"
        f"<body><h1>{title}</h1>{section(doc)}</body></html>\n"
    )


def log_to_mlflow(uri: str | None, doc: dict[str, Any], paths: list[Path], run_name: str) -> str:
    """Log the map as an MLflow run (metrics per group, the files as artifacts); return the UI line."""
    from autolora.core.tracking import Tracker

    tracker = Tracker(uri, "autolora-explain")
    m = doc["map"]
    params = {"lora": doc["lora"], "base_model": doc["base_model"], "granularity": m["granularity"]}
    run = tracker.start_parent(run_name, params, [], {"autolora.kind": "explain"})
    metrics = {"style_full": m["style_full"]}
    for g in m["groups"]:
        metrics[f"share.{g['group']}"] = g["share"]
        metrics.update({f"cost.{c}.{g['group']}": v["mean"] for c, v in g["content_cost"].items()})
    run.log_metrics(metrics)
    for path in paths:
        tracker.client.log_artifact(run.run_id, str(path), "explain")
    tracker.client.set_terminated(run.run_id, "FINISHED")
    return tracker.ui_command()
