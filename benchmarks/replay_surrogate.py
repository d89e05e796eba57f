"""Can a surrogate stand in for training? The first question of a search replay (issue 35): fitted on the trial
table's configurations, how well does a model from (configuration, rung) predict a configuration it has not seen?

Per style, grouped 5-fold cross-validation over configurations (a configuration's rungs stay together): a random
forest, gradient boosting, a Gaussian process (Matern + white noise, on standardised inputs) and 5 nearest
neighbours, each predicting the confirmation value (24 samples, the table's recipe), the search value (8 samples)
and the pixel style presence. Reported per target: held-out R^2 and Spearman; beside them the table's own noise
ceiling, the Spearman of the search value with the confirmation value of the same trial (no model of the
configuration can predict a fresh search value better than the same adapter on other seeds does).

Inputs are read generically from each row's ``params``: numbers as they are (log10 where they span more than 10x),
everything else one-hot; the rung's step is one more input.

    python -m benchmarks.replay_surrogate docs/table/wide --json docs/replay/surrogate-wide.json   # ~1 min
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

TARGETS = ("confirm", "search", "presence")


def _encode(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[float]]]:
    """Each row's params as numbers: numeric params (log10 when positive and spanning > 10x), categories one-hot."""
    keys = sorted({k for r in rows for k in r["params"]})
    columns: list[str] = []
    encoders = []
    for key in keys:
        values = [r["params"].get(key) for r in rows]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric:
            lo, hi = min(values), max(values)
            log = lo > 0 and hi / lo > 10
            columns.append(f"log10 {key}" if log else key)
            encoders.append(lambda v, log=log: [math.log10(v) if log else float(v)])
        else:
            cats = sorted({json.dumps(v) for v in values})
            columns += [f"{key}={c}" for c in cats]
            encoders.append(lambda v, cats=cats: [float(json.dumps(v) == c) for c in cats])
    out = []
    for r in rows:
        vec: list[float] = []
        for key, enc in zip(keys, encoders, strict=True):
            vec += enc(r["params"].get(key))
        out.append(vec)
    return columns, out


def _points(style: Any) -> tuple[list[list[float]], list[int], dict[str, list[float]], float]:
    """(inputs, configuration of each point, targets, the search-vs-confirm Spearman over the points)."""
    from scipy.stats import spearmanr

    rows = [r for r in style.complete() if r["rungs"]]
    _, encoded = _encode(rows)
    x, groups = [], []
    y: dict[str, list[float]] = {t: [] for t in TARGETS}
    for row, vec in zip(rows, encoded, strict=True):
        for rung in row["rungs"]:
            x.append([*vec, float(rung["step"])])
            groups.append(int(row["config"]))
            y["confirm"].append(float(rung["confirm"]["values"][0]))
            y["search"].append(float(rung["search"]["values"][0]))
            presence = rung["confirm"]["truth"].get("presence") or [math.nan]
            y["presence"].append(sum(presence) / len(presence))
    ceiling = float(spearmanr(y["search"], y["confirm"]).statistic)
    return x, groups, y, ceiling


def _models() -> dict[str, Any]:
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    kernel = ConstantKernel() * Matern(nu=2.5) + WhiteKernel()
    return {
        "random forest": RandomForestRegressor(n_estimators=300, min_samples_leaf=2, random_state=0),
        "gradient boosting": GradientBoostingRegressor(random_state=0),
        "gaussian process": make_pipeline(
            StandardScaler(), GaussianProcessRegressor(kernel, normalize_y=True, random_state=0)
        ),
        "5 nearest": make_pipeline(StandardScaler(), KNeighborsRegressor(5)),
    }


def evaluate(table: Path) -> dict[str, Any]:
    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.model_selection import GroupKFold

    from benchmarks.table.store import load_table

    out: dict[str, Any] = {}
    for name, style in load_table(table, images=False).items():
        x, groups, y, ceiling = _points(style)
        xs = np.array(x)
        per: dict[str, Any] = {"points": len(x), "configurations": len(set(groups)), "noise_ceiling": ceiling}
        for target in TARGETS:
            ys = np.array(y[target])
            keep = ~np.isnan(ys)
            if keep.sum() < 10:
                continue
            for model_name, model in _models().items():
                pred = np.full(len(ys), np.nan)
                folds = GroupKFold(5).split(xs[keep], ys[keep], np.array(groups)[keep])
                idx = np.flatnonzero(keep)
                for train, test in folds:
                    model.fit(xs[idx[train]], ys[idx[train]])
                    pred[idx[test]] = model.predict(xs[idx[test]])
                err = ys[keep] - pred[keep]
                r2 = 1 - float((err**2).sum() / ((ys[keep] - ys[keep].mean()) ** 2).sum())
                rho = float(spearmanr(pred[keep], ys[keep]).statistic)
                per.setdefault(target, {})[model_name] = {"r2": r2, "spearman": rho}
        out[name] = per
        cells = "  ".join(
            f"{t}: " + ", ".join(f"{m.split()[0]} {v['r2']:+.2f}/{v['spearman']:+.2f}" for m, v in per[t].items())
            for t in TARGETS
            if t in per
        )
        print(f"{name:<8} {len(x)} points, search-vs-confirm {ceiling:+.2f}   {cells}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("table", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    print("held-out R^2 / Spearman per target and model (random, gradient, gaussian, 5-nearest)")
    figures = evaluate(args.table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
