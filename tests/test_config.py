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
