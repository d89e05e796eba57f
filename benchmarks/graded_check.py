"""A graded self-check, tried and not adopted: does a term that ranks pixel blends of each held-out reference with
its anchor (the base model's rendering of its caption) in order of the blend predict the term's validity on the
trial table better than the self-check's AUC does?

Per style of a table (its references and anchors), per term, fitted on 3 folds of 4 as the self-check does: each
held-out reference blended with its anchor at 0, 1/4, 1/2, 3/4, 1; the term's Spearman with the blend weight,
averaged over the held-out pictures ("graded"); then, over styles x terms, the Spearman of graded and of AUC
against the validity ``python -m benchmarks.table judge`` wrote.

    python -m benchmarks.graded_check bench-table-quick docs/judge/table-quick.json     # ~2 min
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]
FOLDS = 4
TERMS = ("style_gain", "style_direction", "style_probe", "style_gram", "style_intro")


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch
    from PIL import Image
    from scipy.stats import spearmanr

    from autolora.data import load_style_set
    from autolora.models.features import DenoiserFeatures
    from autolora.scoring.clip import ClipJudge
    from autolora.scoring.selfcheck import gram_distance, probe
    from benchmarks.table.build import style_folder
    from benchmarks.table.judge import _anchors, _pipeline
    from benchmarks.table.store import load_table

    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0])
    valid = json.loads(Path(argv[1]).read_text())["figures"]["style"]["terms"]
    judge = ClipJudge("builtin:miniworld-clip", None)
    rows: list[tuple[str, str, float, float, float]] = []
    for style, table in load_table(folder, images=False).items():
        st = load_style_set(style_folder(style, folder))
        anchors = _anchors(folder / style, table.meta, st.captions)
        assert anchors is not None, f"{style}: the references need captions"
        intro = DenoiserFeatures(_pipeline(table.meta), "cpu", int(table.meta["resolution"]))
        n = len(st.images)
        pairs = list(zip(st.images, anchors, strict=True))
        blends = {
            a: [Image.blend(b.convert("RGB"), r.convert("RGB").resize(b.size), a) for r, b in pairs] for a in ALPHAS
        }
        emb = {a: judge.embed_images(blends[a]) for a in ALPHAS}
        grams = {a: judge.grams(blends[a]) or [] for a in ALPHAS}
        feats = {a: intro(blends[a]) for a in ALPHAS}
        graded: dict[str, list[float]] = {t: [] for t in TERMS}
        for fold in range(FOLDS):
            held = list(range(fold, n, FOLDS))
            train = [i for i in range(n) if i not in held]
            r_tr, a_tr = emb[1.0][train], emb[0.0][train]
            centroid = torch.nn.functional.normalize(r_tr.mean(0), dim=0)
            direction = torch.nn.functional.normalize(r_tr.mean(0) - a_tr.mean(0), dim=0)
            w = probe(r_tr, a_tr)
            gram_mean = [g[train].mean(0) for g in grams[1.0]]
            feat_mean = [g[train].mean(0) for g in feats[1.0]]
            for i in held:
                score: dict[str, list[float]] = {t: [] for t in TERMS}
                for a in ALPHAS:
                    e = emb[a][i]
                    moved = e - emb[0.0][i]
                    size = float(moved.norm())
                    score["style_gain"].append(float(e @ centroid))
                    score["style_direction"].append(float(moved @ direction) / size if size > 1e-6 else 0.0)
                    score["style_probe"].append(float(moved @ w))
                    score["style_gram"].append(-float(gram_distance([g[i : i + 1] for g in grams[a]], gram_mean)))
                    score["style_intro"].append(-float(gram_distance([g[i : i + 1] for g in feats[a]], feat_mean)))
                for term, values in score.items():
                    rho = spearmanr(ALPHAS, values).statistic
                    graded[term].append(0.0 if math.isnan(rho) else float(rho))
        for term, values in graded.items():
            v = valid[term]["styles"][style]
            rows.append((style, term, float(np.mean(values)), v["spearman"], v["auc"]))
            print(f"{style:<8} {term:<16} graded {rows[-1][2]:+.2f}  validity {v['spearman']:+.2f}  AUC {v['auc']:.2f}")
    truth = [r[3] for r in rows]
    print(f"over styles x terms: Spearman(graded, validity) {spearmanr([r[2] for r in rows], truth).statistic:+.2f}, "
          f"Spearman(AUC, validity) {spearmanr([r[4] for r in rows], truth).statistic:+.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
