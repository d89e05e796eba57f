"""``autolora report``: one self-contained HTML file (images inline) of a study.

Sections: the run (study, job, trial counts, storage), the data and judge diagnostics recorded at setup, the best trial
or Pareto set, the top trials' last sample grids beside the base model's for the same prompts and seeds (from
the study's Optuna artifacts), the optimisation history, Pareto front and parameter importances, the trial table,
and what the job adds (fusion: DLF vs linear and the coefficient heatmap). A few lines of script record on
``<body>`` how many pictures the browser decoded (``data-decoded`` of ``data-images``), which the test reads
from headless Chromium.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora import __version__
from autolora.atomic import write_text
from autolora.core.artifacts import images, last_samples
from autolora.core.feasible import BROKEN_ATTR, best, complete, confirmation, infeasible_line, noise_line, ranked
from autolora.core.plots import render, study_plots
from autolora.core.study import ATTR

if TYPE_CHECKING:
    import optuna
    from PIL import Image

    from autolora.core.job import Job
    from autolora.core.tracking import ParentRun

TOP = 4
"""Trials whose samples stand beside the base model's."""

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
th{background:#f3f3f3}.warn{color:#a40000;font-weight:600}.muted{color:#777}
figure{display:inline-block;margin:6px 12px 6px 0;vertical-align:top}figcaption{font-size:12px}
img.px{image-rendering:pixelated}img.plot{max-width:640px}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-decoded', String(ok));
});
"""


def image_tag(image: Image.Image, alt: str, width: int | None = None, pixelated: bool = False) -> str:
    """``<img>`` with the picture inline as a PNG data URI."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    size = f' width="{width}"' if width else ""
    cls = "px" if pixelated else "plot"
    return f'<img class="{cls}" alt="{html.escape(alt)}"{size} src="data:image/png;base64,{data}">'


def figure(image: Image.Image, caption: str, min_width: int = 256) -> str:
    scale = max(1, -(-min_width // max(1, image.width)))
    tag = image_tag(image, caption, image.width * scale, pixelated=scale > 1)
    return f"<figure>{tag}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _text(line: str) -> str:
    return f"<p>{html.escape(line)}</p>"


def _fmt(v: object) -> str:
    return f"{v:+.4f}" if isinstance(v, float) else html.escape(str(v))


def _run_section(study: optuna.Study, run_dir: Path | None, kind: str) -> str:
    from collections import Counter

    counts = Counter(t.state.name.lower() for t in study.trials)
    names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    directions = ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions, strict=True))
    config = study.user_attrs.get(ATTR + "config") or {}
    storage = (config.get("study") or {}).get("storage", "")
    starts = [t.datetime_start for t in study.trials if t.datetime_start]
    rows = [
        ("study", study.study_name),
        ("job", kind),
        ("objectives", directions),
        ("trials", ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"),
        ("first trial", min(starts).isoformat(timespec="seconds") if starts else "-"),
        ("run folder", str(run_dir or "")),
        ("storage", storage),
        ("setup", f"{study.user_attrs.get(ATTR + 'setup_seconds', 0.0):.1f} s"),
        ("written", f"{datetime.now().astimezone().isoformat(timespec='seconds')} by autolora {__version__}"),
    ]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _diagnostics(study: optuna.Study) -> str:
    found = study.user_attrs.get(ATTR + "findings")
    if found is None:  # studies made before the findings were kept whole: their warnings only
        found = [{"line": w, "warning": True} for w in study.user_attrs.get(ATTR + "warnings", [])]
    if not found:
        return _text("No diagnostics were recorded for this study.")
    items = "".join(
        f'<li class="{"warn" if f.get("warning") else ""}">{"WARNING: " if f.get("warning") else ""}'
        f"{html.escape(str(f.get('line', '')))}</li>"
        for f in found
    )
    return f"<ul>{items}</ul>"


def _best(study: optuna.Study) -> str:
    if not complete(study):
        return _text("No complete trial yet.")
    names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    conf = confirmation(study)
    confirmed = ""
    if conf is not None:
        head, *rest = conf.lines(names)
        items = "".join(f"<li>{html.escape(x.strip())}</li>" for x in rest)
        confirmed = f"<p>{html.escape(head[0].upper() + head[1:])}:</p><ul>{items}</ul>"
    line = infeasible_line(study)
    if line:
        return confirmed + f'<p class="warn">{html.escape(line)}.</p>'
    noise = noise_line(study)
    if noise:
        confirmed += f'<p class="warn">{html.escape(noise)}.</p>'
    found = best(study)
    head = f"Pareto set ({len(found)} feasible trials)"
    if len(study.directions) == 1:
        head = "Best trial (confirmed)" if conf else "Best trial"
    items = "".join(
        f"<li>trial {t.number}: "
        + " ".join(f"{html.escape(n)}={v:+.4f}" for n, v in zip(names, t.values, strict=True))
        + f" | {html.escape(str(t.user_attrs.get('spec') or t.params))}</li>"
        for t in found
    )
    return f"<p>{head}:</p><ul>{items}</ul>" + confirmed


def _samples(study: optuna.Study, run_dir: Path | None) -> str:
    if run_dir is None:
        return _text("The run folder is unknown, so its pictures cannot be read.")
    kept = images(study, run_dir)
    base, refs = kept.get("base.png"), kept.get("references.png")
    shown = []

    for t in ranked(study)[:TOP]:
        grid = last_samples(images(t, run_dir, storage=study._storage), t.user_attrs.get("best_step"))
        if grid is not None:
            shown.append(figure(grid, f"trial {t.number} ({', '.join(f'{v:+.4f}' for v in t.values)})"))
    if base is None and not shown:
        return _text("No sample grids are stored with this study (it was made before autolora kept them).")
    parts = [figure(base, "base model (no adapter)")] if base is not None else []
    note = _text("Rows are the evaluation prompts, columns the seeds; every grid uses the same prompts and seeds.")
    out = note + "".join(parts + shown)
    if refs is not None:
        out += "<h3>Style references</h3>" + figure(refs, "the style images (centre crops)")
    return out


def _plots(study: optuna.Study) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    plots, skipped = study_plots(study, names)
    out = []
    for plot in plots:
        try:
            fig = render(plot)
        except Exception as e:  # a plot that cannot be drawn is noted, never worth the report
            out.append(_text(f"{plot.title}: not drawn ({type(e).__name__}: {e})"))
            continue
        try:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=90)
        finally:
            plt.close(fig)
        buf.seek(0)
        with Image.open(buf) as im:
            out.append(figure(im.convert("RGB"), plot.title, min_width=1))
    if skipped:
        out.append(_text(f"parameter importances: not computed ({skipped})"))
    return "".join(out)


def _trial_table(study: optuna.Study) -> str:
    names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["#", "state", *names, "secs", "params", "note"])
    rows = []
    for t in study.trials:
        values = list(t.values or [])
        if not values and t.intermediate_values:
            values = [t.intermediate_values[max(t.intermediate_values)]]
        cells = [str(t.number), t.state.name] + [_fmt(v) for v in values] + ["-"] * (len(names) - len(values))
        cells.append(f"{t.duration.total_seconds():.1f}" if t.duration else "-")
        cells.append(html.escape(str(t.user_attrs.get("spec") or t.params)))
        broken = t.user_attrs.get(BROKEN_ATTR) if t.state.name == "COMPLETE" else None
        note = t.user_attrs.get("fail_reason") or (f"infeasible: {broken}" if broken else "")
        cells.append(html.escape(str(note)))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _part(items: list[Any]) -> str:
    from PIL import Image

    return "".join(figure(i, "", min_width=1) if isinstance(i, Image.Image) else _text(str(i)) for i in items)


def render_report(study: optuna.Study, run_dir: Path | None, job: type[Job]) -> str:
    """The report of ``study`` (made by ``job``) as one HTML document."""
    kind = job.kind
    sections = [
        ("Run", _run_section(study, run_dir, kind)),
        ("Data and judge diagnostics (at setup)", _diagnostics(study)),
        ("Result", _best(study)),
        ("Samples: the top trials beside the base model", _samples(study, run_dir)),
        ("Optimisation", _plots(study)),
    ]
    sections += [(title, _part(items)) for title, items in job.report_parts(study, run_dir)]
    sections.append(("Trials", _trial_table(study)))
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    title = f"autolora {kind} study {study.study_name}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


REPORT_FILE = "report.html"


def run_report(job: Job, study: optuna.Study, parent: ParentRun | None) -> str:
    """Write a finished run's report into its run folder and log it to the parent run; the line to print.

    A job calls it last in its ``summary``. A report that fails does not fail the run: the trials are saved, and
    ``autolora report`` can write it later."""
    try:
        path = write_report(study, job.run_dir, type(job), job.run_dir / REPORT_FILE)
        if parent is not None:
            parent.client.log_artifact(parent.run_id, str(path))
    except Exception as e:
        return f"report: not written ({type(e).__name__}: {e}); try: autolora report {job.run_dir}"
    return f"report: {path}"


def write_report(study: optuna.Study, run_dir: Path | None, job: type[Job], out: Path) -> Path:
    """Write the report atomically to ``out`` (mode from the umask, like any saved file)."""

    write_text(out, render_report(study, run_dir, job))
    return out
