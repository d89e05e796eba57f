"""Fusion's warm start and training-free baselines: the DLF study starts from linear fusion's best (copied, never
worse), K-LoRA-style selection switches LoRAs per layer over the steps, the block prior is measured by probes, and
the summary puts them side by side. Tiny SD with the two seeded LoRAs of ``conftest.fusion_inputs``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import fuse_args, fusion_inputs

from autolora.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tiny_sd: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return fusion_inputs(tiny_sd, tmp_path_factory.mktemp("fuse-baselines"))


def _study(run_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir}/optuna.db")


def test_dlf_starts_from_linear_best_and_baselines_run_once(
    work: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = work["root"] / "warm"
    args = [*fuse_args(work, run_dir), "--trials", "3", "--study-name", "wm", "--set", "study.confirm_top_k=2"]
    args += ["--set", "fuse.baselines=[klora,block-prior]"]
    assert main(args) == 0
    out = capsys.readouterr().out
    linear, dlf, fixed = _study(run_dir, "wm-linear"), _study(run_dir, "wm"), _study(run_dir, "wm-baselines")
    # Order: the fixed baselines, linear fusion, then DLF (whose first line follows the last linear one).
    lines = [
        ln.split()[0] for ln in out.splitlines() if " trial " in ln and ln.split()[0] in ("fixed", "linear", "dlf")
    ]
    assert lines == sorted(lines, key=["fixed", "linear", "dlf"].index), lines
    # The copies: linear's top 2 (what its confirmation re-scores), best first, every group of a LoRA at its linear
    # weight, with linear's values.
    from autolora.core.feasible import candidates, confirmation

    top = [t for t in candidates(linear, 2) if t.number != 0]  # linear's trial 0 is DLF's: plain stacking
    copies = [t for t in dlf.trials if t.user_attrs.get("start") == "linear"]
    assert [c.user_attrs["copied_from"] for c in copies] == [f"wm-linear#{t.number}" for t in top]
    for copy, source in zip(copies, top, strict=True):
        assert copy.values == source.values
        for name, value in copy.params.items():
            assert value == source.params[f"{name.split('.')[0]}.all"], name
    assert dlf.trials[0].user_attrs["start"] == "stacking"
    assert len(dlf.trials) == 3 + len(top)  # stacking, the copies, 2 sampled: the budget of 3 trials run
    # The confirmation always re-scores the starts: DLF's confirmed pick is never below the confirmed linear one.
    dlf_conf, linear_conf = confirmation(dlf), confirmation(linear)
    assert dlf_conf is not None and linear_conf is not None
    for copy, source in zip(copies, top, strict=True):
        assert dlf_conf.trials[copy.number].values == pytest.approx(linear_conf.trials[source.number].values)
    assert dlf_conf.best is not None and linear_conf.best is not None
    assert dlf_conf.trials[dlf_conf.best].values[0] >= linear_conf.trials[linear_conf.best].values[0] - 1e-9
    assert "started from" in out and "DLF added" in out
    # The budget note: the DLF space's size and the measured recommendation; 3 trials is below it.
    from autolora.fuse.budget import recommended_trials

    n = len(dlf.trials[-1].params)
    assert f"dlf: {n} coefficients, recommended budget >= {recommended_trials(n)} trials" in out
    assert "WARNING: --trials 3 is below" in out
    # The baselines: K-LoRA in both role orders, the probes of each LoRA's blocks, the measured prior.
    names = [str(t.params["baseline"]) for t in fixed.trials]
    assert names[:2] == ["klora:ink", "klora:water"] and names[-1] == "block-prior"
    assert {n.split(":")[1] for n in names if n.startswith("probe:")} == {"ink", "water"}
    assert "klora:ink: score=" in out and "block-prior: score=" in out and "-> block prior ink:" in out
    # The probes are explain's readings of each LoRA: full, then every block group alone and left out, per seed.
    from autolora.explain.groups import alone, without
    from autolora.fuse.baselines import assign_blocks, probe_maps
    from autolora.fuse.probes import READING_ATTR, prior_shares

    maps = probe_maps(fixed)
    assert set(maps) == {"ink", "water"}
    for lora, m in maps.items():
        keys = list(fixed.trials[-1].user_attrs["fusion"]["coefficients"][lora])
        assert sorted(m.keys) == sorted(keys), (lora, m.keys)
        assert f"{lora}: style lives in" in out or f"{lora}: the LoRA shows no style" in out
        assert abs(sum(m.shares().values()) - 1.0) < 1e-9 or not any(m.shares().values())
        for t in fixed.trials:
            name = str(t.params["baseline"])
            if name.startswith(f"probe:{lora}:alone:") or name.startswith(f"probe:{lora}:without:"):
                view, group = name.split(":")[2:]
                want = (alone if view == "alone" else without)(keys, group)
                assert t.user_attrs["fusion"]["coefficients"][lora] == want, name
                assert len(t.user_attrs[READING_ATTR][f"style_gain.{lora}"]) == 1  # one per seed (eval.seeds=[0])
                assert set(t.user_attrs["fusion"]["coefficients"]["water" if lora == "ink" else "ink"].values()) == {
                    0.0
                }
    # Each map as explain's document in the summary, explain's heatmap in the run folder and the report.
    import json

    doc = json.loads((run_dir / "fusion_summary.json").read_text())["fixed"]
    assert set(doc["maps"]) == {"ink", "water"} and doc["maps"]["ink"]["style_metric"] == "style_gain.ink"
    assert (run_dir / "maps" / "ink.png").is_file() and (run_dir / "maps" / "water.png").is_file()
    assert "The measured block prior: each LoRA" in (run_dir / "report.html").read_text()
    # The measured prior gives each block to the LoRA with the larger share there (text encoders stay at 1).
    owner = assign_blocks(prior_shares(maps))
    assert owner and not any(b.startswith("text_encoder") for b in owner)
    prior = fixed.trials[-1].user_attrs["fusion"]["coefficients"]
    for block, lora in owner.items():
        assert prior[lora][block] == 1.0 and all(
            prior[o][block] == 0.0 for o in prior if o != lora and block in prior[o]
        )

    # Resuming adds trials to linear and DLF only; nothing is copied or baselined twice.
    assert main([*args[:-4], "--trials", "1", "--set", "fuse.baselines=[klora,block-prior]"]) == 0
    capsys.readouterr()
    assert len(_study(run_dir, "wm-baselines").trials) == len(fixed.trials)
    again = _study(run_dir, "wm")
    sources = [t.user_attrs["copied_from"] for t in again.trials if t.user_attrs.get("start") == "linear"]
    assert len(sources) == len(set(sources)) and len(_study(run_dir, "wm-linear").trials) == 4


def test_klora_picks_one_lora_per_layer_and_moves_to_the_style_over_the_steps(
    tiny_sd: Any, work: dict[str, Any]
) -> None:
    from autolora.fuse import load_loras, unload
    from autolora.fuse.klora import KLora, Magnitudes
    from autolora.sampling import sample

    fa = load_loras(tiny_sd, [work["files"]["ink"], work["files"]["water"]], ["ink", "water"])
    try:
        m = Magnitudes.of(fa)
        shared = [i for i, s in enumerate(fa.slots) if len(s.base) > 1]
        assert shared and all(v > 0 for row in m.top for v in row.values())
        klora = KLora(fa, m, "ink")
        # The content weight falls from x2 to x0.5: the content LoRA wins no layer late that it lost early.
        early = {i for i in shared if klora.choice(i, 1.0) == "ink"}
        late = {i for i in shared if klora.choice(i, 0.0) == "ink"}
        assert late <= early
        # One LoRA per layer at its loaded scale, the others at 0, at every step of a real generation.
        seen: list[dict[int, str]] = []

        def record(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            state = {}
            for i, slot in enumerate(fa.slots):
                on = [a for a, base in slot.base.items() if slot.module.scaling[a] == base]
                off = [a for a in slot.base if slot.module.scaling[a] == 0.0]
                assert len(on) == 1 and len(on) + len(off) == len(slot.base), slot.name
                state[i] = on[0]
            seen.append(state)
            return klora(pipe, step, timestep, kwargs)

        sample(tiny_sd, ["a red circle"], [0], steps=6, guidance_scale=7.5, resolution=32, callback=record)
        assert len(seen) == 6
        assert seen[0] == {i: klora.choice(i, 1.0) for i in range(len(fa.slots))}
        # after the last step the first step's choice is back (the next generation starts right)
        assert {
            i: [a for a, b in s.base.items() if s.module.scaling[a] == b][0] for i, s in enumerate(fa.slots)
        } == seen[0]
    finally:
        unload(fa)


def test_klora_scores_by_top_k_weighted_by_time() -> None:
    from autolora.fuse.klora import KLora, Magnitudes

    class Fa:
        names = ["subject", "style"]
        slots: list[Any] = []

    m = Magnitudes(
        top=[{"subject": 1.0, "style": 1.5}, {"subject": 3.0, "style": 1.0}], total={"subject": 2.0, "style": 2.0}
    )
    klora = KLora(Fa(), m, "subject")  # type: ignore[arg-type]
    assert klora.gamma == {"subject": 1.0, "style": 1.0}
    assert klora.choice(0, 1.0) == "subject"  # 1.0 x 2 > 1.5
    assert klora.choice(0, 0.0) == "style"  # 1.0 x 0.5 < 1.5
    assert klora.choice(1, 0.0) == "subject"  # 3.0 x 0.5 > 1.0: a dominant content layer stays content


def test_block_assignment_normalises_and_leaves_no_lora_out() -> None:
    from autolora.fuse.baselines import assign_blocks

    # "a" is stronger everywhere in raw gain, but "b" shows its own style most on up.0
    gains = {"a": {"down.0": 0.10, "mid": 0.08, "up.0": 0.06}, "b": {"down.0": 0.01, "mid": 0.01, "up.0": 0.04}}
    assert assign_blocks(gains) == {"down.0": "a", "mid": "a", "up.0": "b"}
    # a LoRA that wins no block still gets its best one
    lopsided = {"a": {"x": 1.0, "y": 1.0}, "b": {"x": 0.5, "y": 0.9}}
    owner = assign_blocks(lopsided)
    assert "b" in owner.values() and owner["y"] == "b"


def test_published_block_prior_for_sdxl() -> None:
    from autolora.fuse.baselines import FixedSpace

    layers = {
        "a": ["down.2.attentions.1", "up.0.attentions.1", "up.0.attentions.0", "text_encoder.layers.0"],
        "b": ["down.2.attentions.1", "up.0.attentions.1"],
    }
    space = FixedSpace(["block-prior:a", "block-prior:b"], {"a": [], "b": []}, layers, "sdxl")
    coeffs = space.blend("block-prior:a").to_dict()["coefficients"]
    assert coeffs["a"] == {"down.2.attentions.1": 0.0, "up.0.attentions.1": 1.0, "up.0.attentions.0": 0.0,
                           "text_encoder.layers.0": 1.0}  # fmt: skip
    assert coeffs["b"] == {"down.2.attentions.1": 1.0, "up.0.attentions.1": 0.0}


def test_broadcast_puts_each_lora_weight_on_every_group() -> None:
    from autolora.fuse.config import FuseSection
    from autolora.fuse.space import CoefficientSpace
    from autolora.fuse.warm import broadcast

    section = FuseSection(loras=["a=x", "b=y"])
    linear = CoefficientSpace("global", "constant", 0.0, 1.5, None, {"a": ["all"], "b": ["all"]})
    dlf = CoefficientSpace("block", "two-phase", 0.0, 1.5, section.switch_at, {"a": ["down.0", "up.1"], "b": ["mid"]})
    params = broadcast({"a.all": 0.3, "b.all": 1.2}, linear, dlf)
    fusion = dlf.fusion(params)
    assert fusion.early == fusion.late == {"a": {"down.0": 0.3, "up.1": 0.3}, "b": {"mid": 1.2}}
    assert 0.2 <= params["switch_at"] <= 0.8


def test_bad_baseline_name_is_one_line(
    work: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc = main([*fuse_args(work, tmp_path / "bad"), "--set", "fuse.baselines=[klora,zip-lora]"])
    err = capsys.readouterr().err
    assert rc == 2 and "fuse.baselines" in err and "klora, block-prior" in err, err
    assert not (tmp_path / "bad").exists()


def test_fixed_trials_replay_their_blend(work: dict[str, Any], tiny_sd: Any) -> None:
    """A probe and the prior are Fusions of coefficients (reproducible from the record); K-LoRA is its role order."""
    from autolora.fuse import load_loras, unload
    from autolora.fuse.baselines import FixedSpace, KLoraBlend
    from autolora.fuse.space import Fusion

    fa = load_loras(tiny_sd, [work["files"]["ink"], work["files"]["water"]], ["ink", "water"])
    try:
        space = FixedSpace.of(fa, "sd1", ["klora", "block-prior"])
        probe = next(n for n in space.names if n.startswith("probe:ink:alone:"))
        block = probe.split(":")[3]
        blend = space.blend(probe)
        assert isinstance(blend, Fusion)
        assert blend.early["ink"][block] == 1.0 and set(blend.early["water"].values()) == {0.0}
        assert sum(blend.early["ink"].values()) == 1.0
        left_out = space.blend(probe.replace(":alone:", ":without:"))
        assert isinstance(left_out, Fusion) and left_out.early["ink"][block] == 0.0
        assert sum(left_out.early["ink"].values()) == len(left_out.early["ink"]) - 1
        full = space.blend("probe:water:full")
        assert isinstance(full, Fusion) and set(full.early["water"].values()) == {1.0}
        with pytest.raises(ValueError, match="not a probe"):
            space.blend("probe:ink:sideways:up.1")
        assert isinstance(space.blend("klora:water"), KLoraBlend)
        assert FixedSpace.of(fa, "sd1", ["klora"]).fingerprint() != space.fingerprint()  # a resume notices
    finally:
        unload(fa)


def test_recommended_budget_grows_with_the_coefficients() -> None:
    from autolora.fuse.budget import MIN_TRIALS, TRIALS_PER_COEFFICIENT, budget_lines, recommended_trials

    assert recommended_trials(1) == MIN_TRIALS
    big = 10 * MIN_TRIALS
    assert recommended_trials(big) >= TRIALS_PER_COEFFICIENT * big
    assert all(recommended_trials(n) <= recommended_trials(n + 1) for n in range(1, 60))
    assert len(budget_lines("dlf", big, recommended_trials(big))) == 1  # enough: no warning
    assert budget_lines("dlf", big, 1)[1].startswith("WARNING: --trials 1 is below")
    with pytest.raises(ValueError, match="n_coefficients"):
        recommended_trials(0)


def test_the_measured_prior_waits_for_probes_other_workers_still_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that takes the prior's trial while another still runs a probe waits for it (the trials are taken in
    queue order, not finished in it), then reads the finished probe."""
    import threading
    import time

    from autolora.fuse import baselines
    from autolora.fuse.baselines import PARAM, FixedSpace
    from autolora.fuse.probes import READING_ATTR, probe_names
    from autolora.fuse.space import Fusion

    keys = {"a": ["down.0", "up.0"], "b": ["down.0", "up.0"]}
    names = [n for lora in keys for n in probe_names(lora, keys[lora])] + ["block-prior"]
    space = FixedSpace(names, keys, keys, "sd1", probe_wait=600.0)
    study = optuna.create_study(directions=["maximize"])
    style = {"a": {"down.0": 0.0, "up.0": 0.2}, "b": {"down.0": 0.2, "up.0": 0.0}}  # a lives in up.0, b in down.0

    def reading(name: str) -> dict[str, list[float]]:
        lora, view, *group = name.split(":")[1:]
        full = sum(style[lora].values())
        value = {"full": full, "alone": style[lora].get(group[0] if group else "", 0.0)}.get(view)
        if value is None:  # without
            value = full - style[lora][group[0]]
        return {f"style_gain.{lora}": [value], "content_text_delta": [0.0]}

    held = "probe:b:full"  # still running in "another worker"
    running = None
    for name in names[:-1]:
        study.enqueue_trial({PARAM: name})
        trial = study.ask()
        assert trial.suggest_categorical(PARAM, names) == name
        trial.set_user_attr(READING_ATTR, reading(name))
        if name == held:
            running = trial
        else:
            study.tell(trial, 0.0)
    assert running is not None
    waiting = threading.Event()

    class Clock:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            waiting.set()  # the prior is waiting: now the other worker may finish
            time.sleep(0.01)

    monkeypatch.setattr(baselines, "time", Clock)

    def other_worker() -> None:
        waiting.wait()
        study.tell(running, 0.0)

    thread = threading.Thread(target=other_worker)
    thread.start()
    blend = space.blend("block-prior", study)
    waited = waiting.is_set()
    waiting.set()  # releases the other worker if the prior did not wait
    thread.join()
    assert waited, "the prior read the probes while one was still running"
    assert isinstance(blend, Fusion)
    assert blend.early["a"] == {"down.0": 0.0, "up.0": 1.0} and blend.early["b"] == {"down.0": 1.0, "up.0": 0.0}
