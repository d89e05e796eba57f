"""Every shipped example loads: configs validate, manifests parse, scripts name real commands."""

from pathlib import Path

import yaml

from autolora.cli import build_parser
from autolora.config import load_config

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_example_configs_validate() -> None:
    configs = sorted(EXAMPLES.glob("*.yaml"))
    assert configs
    for path in configs:
        config = load_config(path, [])
        assert config.study.search_space in ("sd15", "sdxl", "quick") or Path(config.study.search_space).exists()


def test_cluster_examples_use_real_commands() -> None:
    job = yaml.safe_load((EXAMPLES / "cluster" / "k8s-job.yaml").read_text())
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    slurm = (EXAMPLES / "cluster" / "slurm.sbatch").read_text()
    parser = build_parser()
    args = parser.parse_args([c.replace("$(AUTOLORA_STORAGE)", "sqlite:///x.db") for c in command[1:]])
    assert args.command == "worker" and args.study_name == "watercolor"
    line = next(ln for ln in slurm.splitlines() if ln.startswith("exec autolora worker"))
    args = parser.parse_args(line.replace('"$AUTOLORA_STORAGE"', "sqlite:///x.db").split()[2:])
    assert args.command == "worker" and args.device == "cuda:0"
