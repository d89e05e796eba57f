"""The trial table (``benchmarks/table``): built from the command line on the tiny model, resumed after a crash,
packed and read back, and its figures printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autolora.scoring.selfcheck import TERMS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks are scripts of the repository, not of the package
FAST = [
    "--base-model", "builtin:tiny-sd", "--search-space", str(ROOT / "tests" / "data" / "tiny.yaml"),
    "--configs", "2", "--presets", "none", "--set", "eval.inference_steps=2", "--set", "eval.confirm_seeds=[5,6]",
]  # fmt: skip


def table(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.table", *args], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )


def test_a_two_configuration_table_builds_resumes_packs_and_reads_back(tmp_path: Path) -> None:
    from benchmarks.table import load_table
    from benchmarks.table.store import pack

    out = tmp_path / "table"
    own = tmp_path / "mine"
    assert table("build", "--styles", "", "--style-images", str(ROOT / "tests" / "data" / "nope"), "--out",
                 str(out), *FAST).returncode == 2  # fmt: skip
    got = table("build", "--styles", "dotted", "--out", str(out), "--limit", "1", *FAST)
    assert got.returncode == 0, got.stderr
    built = load_table(out)["dotted"]
    assert [r["config"] for r in built.rows] == [0]
    # A crash after a configuration's samples were written and before its row: the next build truncates them.
    with open(out / "dotted" / "images.u8", "ab") as f:
        f.write(b"\x07" * 3072 * 5)
    (own / "pics").mkdir(parents=True)
    for i, (image, _) in enumerate(__import__("autolora.miniworld.world", fromlist=["x"]).sample_items(4, "plain")):
        image.save(own / "pics" / f"{i}.png")
    got = table("build", "--styles", "dotted", "--style-images", str(own / "pics"), "--out", str(out), *FAST)
    assert got.returncode == 0, got.stderr
    assert "dotted: 1 of 2 configurations to train" in got.stdout
    tables = load_table(out)
    dotted, mine = tables["dotted"], tables["pics"]
    assert [r["config"] for r in dotted.rows] == [0, 1] and dotted.rows[0] == built.rows[0]
    meta = dotted.meta
    assert meta["rungs"] == [2, 4, 6, 8] and meta["truth"] == {"presence": "texture", "tone": True}
    assert meta["commit"] and meta["world"]["base_model"] == "builtin:tiny-sd"
    assert meta["base"]["confirm"]["truth"]["shape"] and mine.meta["truth"] is None
    row = dotted.rows[1]
    assert set(row["seconds"]) >= {"train", "sample", "score", "truth"} and not row["failed"]
    for rung in row["rungs"]:
        for part, n in (("search", 8), ("confirm", 8)):
            assert all(len(v) == n for v in rung[part]["metrics"].values())
            assert len(rung[part]["truth"]["presence"]) == n and len(rung[part]["truth"]["judge_shape"]) == n
            assert dotted.samples(row, rung["step"], part).shape == (n, 32, 32, 3)
    assert mine.rows[0]["rungs"][0]["search"]["truth"] == {}  # a folder of one's own: no pixel truth
    assert dotted.images is not None and len(dotted.images) == 16 + 2 * 4 * 16  # base + 2 configs x 4 rungs x 16
    # Reading the stored samples again with the same reader changes nothing (a better reader would, in place).
    got = table("reread", str(out))
    assert got.returncode == 0 and "dotted: read again; 0 readings" in got.stdout, got.stdout + got.stderr
    assert load_table(out)["dotted"].rows == dotted.rows
    got = table("reread", str(out), "--styles", "dotted,dots")  # a style a table lacks: one line, nothing read
    assert got.returncode == 2 and "reread --styles: dots not in" in got.stderr and "read again" not in got.stdout
    # The stored samples scored again by today's judge: the content checks' rates and the style terms' validity.
    got = table("judge", str(out), "--styles", "dotted", "--json", str(tmp_path / "judge.json"))
    assert got.returncode == 0, got.stderr
    judged = json.loads((tmp_path / "judge.json").read_text())
    assert judged["figures"]["recipe"]["default"]["dotted"]["trials"] == 2 * 4  # 2 configurations x 4 rungs
    checks = {c["term"]: c for c in judged["checks"]["dotted"]}
    assert set(checks) == set(TERMS) and checks["style_csd"]["auc"] != checks["style_csd"]["auc"]  # no CSD: NaN
    assert checks["style_intro"]["auc"] == checks["style_intro"]["auc"]  # the base model's own reader: read
    assert "style_auto" in judged["figures"]["style"]["terms"] and "content_choice_kept" in judged["figures"]["confirm"]
    trials = [json.loads(line) for line in (tmp_path / "judge-trials.jsonl").read_text().splitlines()]
    assert len(trials) == 2 * 2 * 4 and {t["part"] for t in trials} == {"search", "confirm"}  # both seed sets
    assert all(t["style"] == "dotted" and isinstance(t["objective"], float) for t in trials)
    # The same design is refused with another space; the table as it was is left alone.
    got = table("build", "--styles", "dotted", "--out", str(out), *FAST[:2], "--search-space", "quick", *FAST[4:])
    assert got.returncode == 2 and "built with another space" in got.stderr
    sizes = pack(out, tmp_path / "packed", {"dotted": [4, 8]})
    assert set(sizes) == {"dotted", "pics"}
    packed = load_table(tmp_path / "packed")["dotted"]
    assert packed.meta["packed"] == {"steps": [4, 8], "seeds": ["search", "confirm"]}
    assert packed.samples(packed.rows[1], 2) is None
    for step in (4, 8):
        assert np.array_equal(packed.samples(packed.rows[1], step, "confirm"), dotted.samples(row, step, "confirm"))
    assert [r["rungs"][0]["confirm"]["metrics"] for r in packed.rows] == [
        r["rungs"][0]["confirm"]["metrics"] for r in dotted.rows
    ]
    # Deterministic: the first configuration again, in a new table, reads the same everywhere.
    assert table("build", "--styles", "dotted", "--out", str(tmp_path / "again"), "--limit", "1", *FAST).returncode == 0
    again = load_table(tmp_path / "again")["dotted"]
    assert again.rows[0]["rungs"] == dotted.rows[0]["rungs"] and np.array_equal(again.images, dotted.images[:80])
    got = table("figures", str(tmp_path / "packed"), "--json", str(tmp_path / "f.json"))
    assert got.returncode == 0, got.stderr
    figures = json.loads((tmp_path / "f.json").read_text())["styles"]
    assert figures["dotted"]["configurations"] == 2 * 3  # the rungs from the space's fewest steps (4) on
    assert "usable" in figures["dotted"] and "usable" not in figures["pics"]


@pytest.mark.parametrize("n", [6, 48])
def test_the_design_stratifies_every_dimension(n: int) -> None:
    """A Latin hypercube: every level of a choice appears equally often; steps is the largest (every rung)."""
    from collections import Counter

    from autolora.tune.search import load_search_space
    from benchmarks.table.design import design

    compiled = load_search_space("wide")[0].compile(_candidates(), "sd1")
    points = design(compiled, n, seed=0)
    assert design(compiled, n, seed=0) == points and len(points) == n
    for name in ("alpha_ratio", "prior_weight", "caption_dropout", "caption_mode"):
        counts = Counter(p.params[name] for p in points)
        assert max(counts.values()) - min(counts.values()) <= 1, (name, counts)
    assert {p.params["steps"] for p in points} == {600}
    # The prior's pictures only where there is a prior, as a study's trials record them.
    assert all(("prior_prompts" in p.params) == (p.params["prior_weight"] > 0) for p in points)


def _candidates() -> list[str]:
    from autolora.models.builtin import builtin_path
    from autolora.models.layers import candidates_from_config

    config = json.loads((builtin_path("builtin:miniworld") / "unet" / "config.json").read_text())
    return candidates_from_config(config, "UNet2DConditionModel")
