from pathlib import Path

import pytest

from autolora.config import load_config, parse_override
from autolora.errors import UserError


def test_defaults_are_valid_and_derive_paths() -> None:
    c = load_config(None, [])
    assert c.model.base_model == "builtin:miniworld"
    assert c.study_name == "demo"
    assert c.out_dir == Path("runs/demo")
    assert c.storage_url.endswith("runs/demo/optuna.db")


def test_yaml_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "styles").mkdir()
    f = tmp_path / "run.yaml"
    f.write_text("data:\n  style_images: styles\ntrain:\n  batch_size: 2\nstudy:\n  trials: 5\n")
    c = load_config(f, [("study", "trials", 7)])
    assert c.train.batch_size == 2 and c.study.trials == 7
    assert c.data.style_images == str((tmp_path / "styles").resolve())  # relative to the file
    assert c.study_name == "styles"


def test_toml(tmp_path: Path) -> None:
    f = tmp_path / "run.toml"
    f.write_text('[study]\nname = "x"\ntrials = 2\n')
    assert load_config(f, []).study.name == "x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  batch_sise: 2\n", "unknown key 'batch_sise' (did you mean 'batch_size'?)"),
        ("trian: {}\n", "unknown section 'trian' (did you mean 'train'?)"),
        ("train:\n  batch_size: two\n", "train.batch_size: expected an integer, got 'two'"),
        ("train:\n  batch_size: 0\n", "train.batch_size: expected an integer >= 1, got 0"),
        ("eval:\n  seeds: [1, a]\n", "eval.seeds: expected a list of integers"),
        ("model:\n  device: tpu\n", "model.device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
        ("study:\n  sampler: bayes\n", "study.sampler: expected auto|tpe|random|cmaes|gp|nsga2|qmc"),
        ("train:\n  batch_size: [\n", "not valid YAML at line"),
        ("- a\n- b\n", "expected a mapping of sections"),
    ],
)
def test_bad_config_names_the_culprit(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as e:
        load_config(f, [])
    assert message in str(e.value)
    assert str(f) in str(e.value)


def test_missing_file() -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_config(Path("/no/such.yaml"), [])


def test_parse_override() -> None:
    assert parse_override("eval.seeds=[1, 2]") == ("eval", "seeds", [1, 2])
    with pytest.raises(UserError, match="section.key=value"):
        parse_override("seeds")


def test_fuse_has_no_train_section_and_reads_an_earlier_runs_config(tmp_path: Path) -> None:
    """The shared sections are ``RunConfig``'s; ``train`` is tune's. A fuse run stored before the split still has
    one: it is read and dropped (so the run can be resumed, exported or worked), and a tune config keeps it."""
    import dataclasses

    from autolora.config import Config, RunConfig
    from autolora.fuse.config import FuseRunConfig

    assert {f.name for f in dataclasses.fields(RunConfig)} == {"model", "data", "eval", "study"}
    assert "train" in {f.name for f in dataclasses.fields(Config)}
    assert "train" not in {f.name for f in dataclasses.fields(FuseRunConfig)}
    old = tmp_path / "config.yaml"
    old.write_text("train:\n  batch_size: 2\nfuse:\n  loras: [a.safetensors]\nstudy:\n  trials: 3\n")
    fused = load_config(old, [], FuseRunConfig)
    assert fused.study.trials == 3 and fused.fuse.loras == [str(tmp_path / "a.safetensors")]
    assert "train" not in fused.to_dict()
    with pytest.raises(UserError, match="unknown section 'fuse'"):
        load_config(old, [])  # tune knows no fuse section
