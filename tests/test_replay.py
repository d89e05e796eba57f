"""The search replayed on the trial table (``benchmarks.replay``): the lookup, what a study would export, and the
command on the repository's own `quick` table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks are scripts of the repository, not of the package
TABLE = ROOT / "docs" / "table" / "quick"
TRIALS = ROOT / "docs" / "judge" / "table-quick-trials.jsonl"


@pytest.fixture(scope="module")
def lookups() -> dict:
    from benchmarks.replay.lookup import load_lookups

    return load_lookups(TABLE, TRIALS, ["dotted", "shaded"])


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.replay", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )


def test_every_configuration_snaps_to_itself_and_a_proposal_to_its_nearest(lookups: dict) -> None:
    lk = lookups["dotted"]
    assert len(lk.configs) >= 12 and lk.rungs == sorted(lk.rungs)
    for c in lk.configs:
        assert lk.snap(lk.params[c]) == (c, 0.0)
    c = lk.configs[3]
    moved = dict(lk.params[c])
    rate = next(k for k in moved if "learning_rate" in k)
    moved[rate] *= 1.01  # a proposal a hair off the grid gets that configuration, at a small distance
    got, distance = lk.snap(moved)
    assert got == c and 0 < distance < 0.01
    # Every (configuration, rung) has both readings, and a step budget reads at tune's rungs.
    assert {(c, r) for c in lk.configs for r in lk.rungs} <= set(lk.search) & set(lk.confirm)
    top = max(lk.rungs)
    assert lk.reports(top)[-1] == top and all(r in lk.rungs for r in lk.reports(top))


def test_the_export_is_the_confirmed_best_of_the_top_three_distinct_feasible_trials(lookups: dict) -> None:
    from benchmarks.replay.run import Trial, export_after

    lk = lookups["shaded"]
    feasible = [k for k in lk.search if lk.search[k].feasible and lk.confirm[k].feasible]
    broken = [k for k in lk.search if lk.search[k].feasible and not lk.confirm[k].feasible]
    assert len(feasible) >= 4

    def trial(key: tuple[int, int], value: float, pruned: bool = False) -> Trial:
        return Trial(key[0], key[1], pruned, key[1], value, True, 0.0)

    a, b, c, d = feasible[:4]
    # d ranks fourth by search value: never confirmed. The winner is the best confirmed value of a, b and c.
    trials = [trial(a, 0.9), trial(b, 0.8), trial(c, 0.7), trial(d, 0.1)]
    e = export_after(trials, lk)
    assert e.steps == sum(k[1] for k in (a, b, c, d))
    want = max((a, b, c), key=lambda k: lk.confirm[k].value)
    assert (e.config, e.step) == want and e.confirmed == lk.confirm[want]
    # A repeat of a's configuration is the same adapter: it does not take a confirmation place from c.
    e2 = export_after([trial(a, 0.9), trial(a, 0.85), trial(b, 0.8), trial(c, 0.7)], lk)
    assert (e2.config, e2.step) == want
    # Pruned trials are never exported, and nothing feasible on the confirmation seeds exports nothing (the base).
    assert export_after([trial(a, 0.9, pruned=True)], lk).confirmed is None
    if broken:
        nothing = export_after([trial(broken[0], 0.9)], lk)
        assert nothing.confirmed is None and nothing.value == 0.0 and not nothing.usable


def test_the_replay_command_prints_and_writes_every_arm_deterministically(tmp_path: Path) -> None:
    args = [str(TABLE), str(TRIALS), "--seeds", "2", "--styles", "dotted,shaded", "--jobs", "1"]
    got = replay(*args, "--json", str(tmp_path / "a.json"), "--plot", str(tmp_path / "a.png"))
    assert got.returncode == 0, got.stderr
    out = json.loads((tmp_path / "a.json").read_text())
    from benchmarks.replay.arms import ARMS

    assert out["arms"] == [a.name for a in ARMS if not a.extra] and set(out["cells"]) == {"dotted", "shaded"}
    for style in ("dotted", "shaded"):
        for arm in out["arms"]:
            budgets = out["cells"][style][arm]
            assert list(budgets) == ["10", "20", "30", "40"]
            for b in budgets.values():
                assert b["n"] == 2 and 0 <= b["usable"] <= b["exported"] <= 1
        # Random search without a pruner trains every trial: more trials, more steps; the presets alone train 2.
        steps = [out["cells"][style]["random"][b]["steps"] for b in ("10", "20", "30", "40")]
        assert steps == sorted(steps) and steps[0] < steps[-1]
        assert out["cells"][style]["presets alone"]["40"]["steps"] <= 2 * 600
    assert "| default | 20 |" in got.stdout and "Steps the default needs" in got.stdout
    assert (tmp_path / "a.png").stat().st_size > 10_000
    again = replay(*args, "--json", str(tmp_path / "b.json"))
    assert again.returncode == 0, again.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["cells"] == out["cells"]  # the same seeds replay the same studies
    # The real check sets real studies beside the replay's cell of the same arm, style and budget.
    study = [{"number": 0, "state": "COMPLETE", "steps": 400}, {"number": 1, "state": "PRUNED", "steps": 200}]
    rows = [
        {"arm": "default", "style": "dotted", "seed": 0, "trials": 20, "study": study,
         "export": {"trial": 0, "confirmed": 0.25, "progress": 0.5, "loss": 0.0, "usable": True}},
        {"arm": "default", "style": "dotted", "seed": 1, "trials": 20, "study": study, "export": None},
    ]  # fmt: skip
    (tmp_path / "real.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = subprocess.run(
        [sys.executable, "benchmarks/search_efficiency.py", "--results", str(tmp_path / "real.jsonl"), "--compare",
         str(tmp_path / "a.json")], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    line = next(x for x in got.stdout.splitlines() if x.split()[:2] == ["default", "dotted"])
    cell = out["cells"]["dotted"]["default"]["20"]
    # Nothing exported counts as the base model (value 0): half usable, value 0.125, 600 steps a study.
    assert "0.50 / +0.125 ± 0.177 / +0.250 ± 0.354 / 600" in line and f"{cell['value']:+.3f}" in line, line


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    got = replay(str(tmp_path / "nope"), str(TRIALS))
    assert got.returncode == 2 and "nope: no such file or folder" in got.stderr
    got = replay(str(TABLE), str(TRIALS), "--arms", "random,bogus")
    assert got.returncode == 2 and "--arms bogus: no such arm" in got.stderr
    got = replay(str(TABLE), str(TRIALS), "--styles", "dotted,dots")
    assert got.returncode == 2 and "--styles: not in the table: dots" in got.stderr
