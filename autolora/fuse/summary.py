"""The side-by-side of a fusion run's studies (DLF vs linear): best values, Pareto hypervolume, heatmap.

Hypervolume: objectives turned to losses (maximised ones negated); the reference point is the worst value of
each objective over the complete trials of *all* compared studies, so studies of one run (or one seed) share it
and their hypervolumes compare directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.core.feasible import best as feasible_best
from autolora.core.feasible import confirmation, infeasible_line, is_feasible
from autolora.fuse.baselines import PARAM, assign_blocks, probe_maps
from autolora.fuse.probes import is_text, prior_shares
from autolora.fuse.warm import START_ATTR, starts
from autolora.loras.groups import key_order

if TYPE_CHECKING:
    import optuna

    from autolora.fuse.space import Fusion


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def hypervolumes(studies: Sequence[optuna.Study]) -> list[float]:
    """Each study's hypervolume against one reference point shared by all (see the module docstring)."""
    import numpy as np

    signs = np.array([-1.0 if d.name == "MAXIMIZE" else 1.0 for d in studies[0].directions])
    losses = [np.array([t.values for t in complete(s)], dtype=float).reshape(-1, len(signs)) * signs for s in studies]
    pooled = np.concatenate(losses)
    if len(pooled) == 0:
        return [0.0 for _ in studies]
    reference = pooled.max(0) + 1e-9
    return [_hypervolume(loss, reference) for loss in losses]


def _hypervolume(losses: Any, reference: Any) -> float:
    """Optuna's WFG hypervolume (a private module; the one place that uses it, tested in tests/test_fuse.py)."""
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(losses, reference)) if len(losses) else 0.0


def compare(studies: dict[str, optuna.Study], names: list[str]) -> dict[str, Any]:
    """Per study (label -> study): trials, best value(s) and trial, and for Pareto studies the hypervolume."""

    out: dict[str, Any] = {}
    multi = len(names) > 1
    hv = hypervolumes(list(studies.values())) if multi else []
    for i, (label, study) in enumerate(studies.items()):
        done = complete(study)
        entry: dict[str, Any] = {"study": study.study_name, "n_complete": len(done)}
        found = feasible_best(study)
        conf = confirmation(study)
        entry["n_feasible"] = sum(is_feasible(t) for t in done)
        if done and not found:
            entry["no_best"] = infeasible_line(study)
        elif done and not multi:
            best = found[0]
            entry.update(best_value=best.values[0], best_trial=best.number, best_spec=best.user_attrs.get("spec"))
            entry["best_metrics"] = {k[7:]: v for k, v in best.user_attrs.items() if k.startswith("metric.")}
            if conf is not None and best.number in conf.trials:
                entry["confirmed_value"] = conf.trials[best.number].values[0]
                entry["confirmed_metrics"] = conf.trials[best.number].metrics
                entry["confirmation_changed"] = conf.changed
            if label == "dlf":
                entry.update(_start(study, conf, sign=1.0 if study.directions[0].name == "MAXIMIZE" else -1.0))
            if label == "fixed":
                entry.update(_fixed(study, conf))
        elif done:
            front = found
            pick = [min if d.name == "MINIMIZE" else max for d in study.directions]
            entry.update(pareto_size=len(front), hypervolume=hv[i], pareto_trials=sorted(t.number for t in front))
            entry["best_values"] = {n: pick[j](t.values[j] for t in front) for j, n in enumerate(names)}
            if label == "dlf":
                from autolora.fuse.warm import starts

                begun = starts(study)
                if begun:
                    entry["start_hypervolume"] = _start_hypervolume(studies, begun)
            if label == "fixed":
                entry.update(_fixed(study, conf))
        out[label] = entry
    return out


def _start(study: optuna.Study, conf: Any, sign: float) -> dict[str, Any]:
    """The DLF study's starting points (stacking, the copied linear best): the best of them, search and confirmed,
    and what the search added over it."""

    begun = starts(study)
    if not begun:
        return {}
    first = max(begun, key=lambda t: (sign * t.values[0], -t.number))
    out: dict[str, Any] = {"start_value": first.values[0], "start_trial": first.number}
    out["start"] = first.user_attrs[START_ATTR]
    if conf is not None:
        kept = [conf.trials[t.number] for t in begun if t.number in conf.trials]
        confirmed = [r for r in kept if not r.broken]
        if confirmed:
            out["start_confirmed_value"] = max(sign * r.values[0] for r in confirmed) * sign
    return out


def _fixed(study: optuna.Study, conf: Any) -> dict[str, Any]:
    """The fixed study's baselines by name (search and confirmed values) and its probes' maps of each LoRA
    (``explain``'s document: shares, style alone/without, content cost per group) with the block prior's owners."""

    rows: dict[str, Any] = {}
    for t in complete(study):
        name = str(t.params.get(PARAM, ""))
        if name.startswith("probe:"):
            continue
        row: dict[str, Any] = {"value": t.values[0], "trial": t.number, "feasible": is_feasible(t)}
        row["metrics"] = {k[7:]: v for k, v in t.user_attrs.items() if k.startswith("metric.")}
        if conf is not None and t.number in conf.trials:
            row["confirmed_value"] = conf.trials[t.number].values[0]
        rows[name] = row
    out: dict[str, Any] = {"baselines": rows}
    maps = probe_maps(study)
    if maps:
        out["maps"] = {lora: m.to_dict() for lora, m in maps.items()}
        out["prior"] = assign_blocks(prior_shares(maps))
    return out


def _start_hypervolume(studies: dict[str, optuna.Study], begun: list[optuna.trial.FrozenTrial]) -> float:
    """Hypervolume of the DLF study's starting points alone, against the same reference point as the studies'."""
    import numpy as np

    signs = np.array([-1.0 if d.name == "MAXIMIZE" else 1.0 for d in next(iter(studies.values())).directions])
    pooled = np.concatenate([np.array([t.values for t in complete(s)], dtype=float) * signs for s in studies.values()])
    reference = pooled.max(0) + 1e-9
    return _hypervolume(np.array([t.values for t in begun], dtype=float) * signs, reference)


def comparison_lines(comparison: dict[str, Any], names: list[str]) -> list[str]:
    """The summary printed at the end of ``fuse`` and by ``show``, one study per line."""
    lines = []
    for label, e in comparison.items():
        head = f"{label:7s} {e['study']}: {e['n_complete']} complete"
        if "no_best" in e:
            lines.append(f"{head}, {e['no_best']}")
        elif "best_value" in e:
            shown = e.get("confirmed_metrics") or e["best_metrics"]
            gains = " ".join(f"{k}={v:+.4f}" for k, v in shown.items() if k.startswith("style_gain."))
            value = f"{e['best_value']:+.4f}"
            if "confirmed_value" in e:
                value += f", confirmed {e['confirmed_value']:+.4f}"
            named = str(e.get("best_spec") or "").split(": ")[0]
            spec = f" {named}" if label == "fixed" and named else ""
            lines.append(f"{head}, best {names[0]}={value} (trial {e['best_trial']}{spec}; {gains})")
            if "start_value" in e:
                lines.append(_start_line(e))
            for name, row in e.get("baselines", {}).items():
                shown_value = row.get("confirmed_value", row["value"])
                what = "confirmed" if "confirmed_value" in row else "search"
                gains_b = " ".join(f"{k}={v:+.4f}" for k, v in row["metrics"].items() if k.startswith("style_gain."))
                flag = "" if row["feasible"] else " [infeasible]"
                lines.append(f"        {name}: {names[0]}={shown_value:+.4f} ({what}; {gains_b}){flag}")
            if "maps" in e:
                lines += ["        " + line for line in map_lines(e["maps"], e["prior"])]
        elif "hypervolume" in e:
            best = " ".join(f"{n}={v:+.4f}" for n, v in e["best_values"].items())
            lines.append(f"{head}, Pareto set of {e['pareto_size']}, hypervolume {e['hypervolume']:.5f}, best {best}")
            if "start_hypervolume" in e:
                added = e["hypervolume"] - e["start_hypervolume"]
                lines.append(f"        from its start (linear's Pareto set, stacking): hypervolume {added:+.5f}")
        else:
            lines.append(head)
    return lines


def _start_line(e: dict[str, Any]) -> str:
    """What DLF added over its own starting point, confirmed where both are."""
    start = e["start_value"]
    line = f"        started from {e['start']} (trial {e['start_trial']}, {start:+.4f})"
    if "confirmed_value" in e and "start_confirmed_value" in e:
        added = e["confirmed_value"] - e["start_confirmed_value"]
        return line + f": DLF added {added:+.4f} confirmed ({e['best_value'] - start:+.4f} in the search)"
    return line + f": DLF added {e['best_value'] - start:+.4f} in the search"


def map_lines(maps: dict[str, dict[str, Any]], owner: dict[str, str]) -> list[str]:
    """Where each LoRA's style lives (``explain``'s line, from its probes), and the block prior's assignment."""
    from autolora.explain.output import where_line

    lines = [f"{lora}: {where_line({'map': doc})}" for lora, doc in maps.items()]
    mine = {lora: [b for b, o in sorted(owner.items(), key=lambda kv: key_order(kv[0])) if o == lora] for lora in maps}
    texts = sorted({g["group"] for doc in maps.values() for g in doc["groups"] if is_text(g["group"])})
    tail = f" (text encoders at 1: {' '.join(texts)})" if texts else ""
    lines.append("-> block prior " + " | ".join(f"{lora}: {' '.join(bs) or '-'}" for lora, bs in mine.items()) + tail)
    return lines


def heatmap(fusion: Fusion, path: Path, title: str = "") -> Path:
    """A picture of the coefficients: LoRAs x group keys (two panels for a two-phase fusion)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sets = [("", fusion.early)] if fusion.late is None else [("early", fusion.early), ("late", fusion.late)]
    loras = list(fusion.early)
    keys = sorted({k for c in fusion.early.values() for k in c}, key=key_order)
    width = max(4.0, 0.45 * len(keys) + 2)
    fig, axes = plt.subplots(len(sets), 1, figsize=(width, 0.6 * len(loras) * len(sets) + 1.6), squeeze=False)
    for ax, (phase, coeffs) in zip(axes[:, 0], sets, strict=True):
        grid = np.array([[coeffs[lora].get(k, np.nan) for k in keys] for lora in loras])
        image = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(keys)), keys, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(loras)), loras)
        ax.grid(False)
        if len(keys) <= 24:
            for (r, c), v in np.ndenumerate(grid):
                if not np.isnan(v):
                    ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white")
        ax.set_title(" ".join(p for p in (title, phase) if p), fontsize=9)
        fig.colorbar(image, ax=ax)
    if fusion.switch_at is not None:
        fig.suptitle(f"switch at {fusion.switch_at:.2f} of the steps", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
