"""The ``fuse`` job: several LoRAs loaded once, a DLF study over per-group coefficients and its linear baseline.

The way of a run: ``plan`` (validate everything, create nothing) -> ``session`` (pipeline + every LoRA + judge,
loaded once; a bad LoRA file is refused here, still before anything is created) -> the coefficient spaces, whose
hashes the study core checks against stored studies -> run folder, Optuna studies, MLflow parent run (the core)
-> base samples -> trials of the DLF study, then of the linear one (here, or in workers) -> summary
(``fusion_summary.json``, heatmap of the best coefficients).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.atomic import write_text
from autolora.config import RunConfig
from autolora.core.artifacts import images, last_samples
from autolora.core.feasible import best as feasible_best
from autolora.core.feasible import candidates, confirmation
from autolora.core.job import Job, Objective
from autolora.core.run import RunResult, run_job
from autolora.core.study import StudySpec
from autolora.errors import UserError
from autolora.fuse.baselines import FixedSpace
from autolora.fuse.budget import budget_lines
from autolora.fuse.config import FuseRunConfig
from autolora.fuse.confirm import confirm_fusion
from autolora.fuse.exporting import export_run, load_run, show_run
from autolora.fuse.plan import FusePlan, make_fuse_plan
from autolora.fuse.session import FuseSession
from autolora.fuse.space import CoefficientSpace
from autolora.fuse.studies import ORDER, FuseStudy, study_specs
from autolora.fuse.summary import compare, comparison_lines, heatmap
from autolora.fuse.trial import FuseTrialRunner
from autolora.fuse.warm import START_ATTR, copy_linear_best, wait_finished
from autolora.report.html import run_report
from autolora.sampling import grid

if TYPE_CHECKING:
    import optuna
    from PIL import Image

    from autolora.core.findings import Finding
    from autolora.core.tracking import ParentRun
    from autolora.loras.engine import FusedAdapters

SUMMARY_FILE = "fusion_summary.json"
HEATMAP_FILE = "best_coefficients.png"
MAPS_FOLDER = "maps"
"""Where each LoRA's map (the block prior's probes) is drawn, one ``<lora>.png`` each."""


Space = CoefficientSpace | FixedSpace


def spaces(specs: list[FuseStudy], fa: FusedAdapters, config: FuseRunConfig, arch: str) -> dict[str, Space]:
    out: dict[str, Space] = {}
    for s in specs:
        if s.label == "fixed":
            wait = max(60.0, 3 * config.study.grace_period)  # as DLF waits for linear (``before_study``)
            out[s.label] = FixedSpace.of(fa, arch, config.fuse.baselines, config.fuse.klora_k, wait)
        else:
            out[s.label] = CoefficientSpace.of(fa, s.granularity, s.schedule, config.fuse)
    return out


class FuseJob(Job):
    """``autolora fuse`` on the study core."""

    kind = "fuse"
    config_class = FuseRunConfig

    def __init__(self, plan: FusePlan) -> None:
        super().__init__(plan.config)
        self.the_plan = plan
        self.session: FuseSession | None = None
        self.spaces: dict[str, Space] = {}
        self.strict = plan.config.data.strict

    @classmethod
    def plan(cls, config: RunConfig) -> FuseJob:
        assert isinstance(config, FuseRunConfig), type(config)
        return cls(make_fuse_plan(config))

    def load(self) -> None:
        self.session = FuseSession.load(self.the_plan)
        plan = self.the_plan
        self.spaces = spaces(study_specs(plan.config), self.session.fa, plan.config, plan.model.arch)

    def diagnose(self) -> list[Finding]:
        t0 = time.perf_counter()
        findings = self._session().diagnose(self.run_dir / "cache")
        self._session().setup_seconds += time.perf_counter() - t0
        return findings

    def studies(self) -> list[StudySpec]:
        plan, obj = self.the_plan, self.the_plan.objective
        out = []
        for s in study_specs(plan.config):
            space = self.spaces[s.label]
            if isinstance(space, FixedSpace):
                first, attrs = space.first_trials(), []
            else:
                # A new study starts with every coefficient 1 (plain stacking) as its trial 0, marked as a starting
                # point: the confirmation re-scores it in every study (linear's too), so that DLF, which also
                # confirms its copies of linear's best, is not the only study to have its stacking trial confirmed.
                first = [space.uniform(min(max(1.0, space.low), space.high))]
                attrs = [{START_ATTR: "stacking"}]
            out.append(
                StudySpec(
                    label=s.label,
                    name=s.name,
                    fingerprint=space.fingerprint(),
                    directions=obj.directions,
                    metric_names=obj.names,
                    objective=obj.name,
                    space_kind="coefficient space",
                    sampler=plan.sampler,
                    pruner="none",
                    first_trials=first,
                    first_trial_attrs=attrs,
                    attrs={"fusion": {"label": s.label, "granularity": s.granularity}},
                    order=ORDER[s.label],
                    fixed=isinstance(space, FixedSpace),
                )
            )
        return out

    def before_study(self, spec: StudySpec, study: optuna.Study) -> StudySpec:
        """The DLF study starts from the linear study's best (``autolora.fuse.warm``)."""
        import dataclasses

        import optuna

        linear_space, dlf_space = self.spaces.get("linear"), self.spaces.get("dlf")
        if spec.label != "dlf" or not isinstance(linear_space, CoefficientSpace):
            return spec
        assert isinstance(dlf_space, CoefficientSpace)
        name = {s.label: s.name for s in study_specs(self.the_plan.config)}["linear"]
        linear = optuna.load_study(study_name=name, storage=study._storage)
        wait_finished(linear, timeout=max(60.0, 3 * self.the_plan.config.study.grace_period))
        points = copy_linear_best(study, linear, dlf_space, linear_space, self.the_plan.config.study.confirm_top_k)
        if points and spec.sampler == "cmaes" and len(spec.directions) == 1:
            return dataclasses.replace(spec, x0=points[0])
        return spec

    def resolved_config(self) -> dict[str, Any]:
        plan = self.the_plan
        resolved = plan.config.to_dict()
        resolved["fuse"]["loras"] = [f"{name}={path.resolve()}" for name, path in plan.loras]
        resolved["fuse"]["style_images"] = [f"{n}={s.folder.resolve()}" for n, s in plan.styles.items()]
        if resolved["data"]["prompts"]:
            resolved["data"]["prompts"] = str(Path(resolved["data"]["prompts"]).resolve())
        return resolved

    def run_files(self) -> dict[str, str]:
        return {"objective.yaml": self.the_plan.objective_text}

    def prepare(self, cache_dir: Path) -> str:
        plan, s = self.the_plan, self._session()
        s.prepare(cache_dir)
        self.setup_seconds = s.setup_seconds
        sizes = ", ".join(
            f"{f.label} {f.granularity}/{f.schedule} {len(self.spaces[f.label].param_names())}"
            for f in study_specs(plan.config)
        )

        dlf = self.spaces.get("dlf")
        budget = budget_lines("dlf", len(dlf.param_names()), plan.config.study.trials) if dlf else []
        return "\n".join(
            [
                f"setup {s.setup_seconds:.1f}s: base model {plan.model.source} ({plan.model.arch}, {plan.device}, "
                f"{plan.resolution}px), LoRAs {', '.join(plan.names)}, judge {s.judge.name}, "
                f"{len(plan.prompts)} prompts x {len(plan.config.eval.seeds)} seeds; sampler {plan.sampler}; "
                f"parameters: {sizes}",
                *budget,
            ]
        )

    def study_images(self) -> dict[str, Image.Image]:
        return {"base.png": grid(self._session().base_samples, rows=len(self.the_plan.prompts))}

    def objective(
        self, spec: StudySpec, parent: ParentRun | None, echo: Callable[[str], None], progress: bool
    ) -> Objective:
        return FuseTrialRunner(self._session(), self.spaces[spec.label], spec.label, parent, echo)

    def release(self) -> None:
        self.close()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def summary(self, studies: dict[str, optuna.Study], parent: ParentRun | None) -> list[str]:
        plan, names = self.the_plan, self.the_plan.objective.names
        if plan.config.study.confirm_top_k and not plan.config.study.queue_only:
            self._confirm(studies, parent)
        comparison = compare(studies, names)
        write_summary(self.run_dir, comparison)
        best = _best_fusion(studies["dlf"], self.spaces["dlf"])
        picture = None
        if best is not None:
            picture = heatmap(best[1], self.run_dir / HEATMAP_FILE, f"{plan.config.study_name} trial {best[0]}")
        maps = map_pictures(comparison, self.run_dir / MAPS_FOLDER)
        if parent is not None:
            parent.log_summary(studies["dlf"], names)
            parent.log_dict(comparison, SUMMARY_FILE)
            _log_comparison(parent, comparison, names)
            if picture is not None:
                parent.client.log_artifact(parent.run_id, str(picture), "plots")
            for path in maps:
                parent.client.log_artifact(parent.run_id, str(path), f"plots/{MAPS_FOLDER}")
        return [*comparison_lines(comparison, names), run_report(self, studies["dlf"], parent)]

    def _confirm(self, studies: dict[str, optuna.Study], parent: ParentRun | None) -> None:
        """The confirmation stage of every study (``autolora.fuse.confirm``); the models are loaded again if workers
        ran the trials."""

        k = self.the_plan.config.study.confirm_top_k
        todo = [label for label, st in studies.items() if confirmation(st) is None and candidates(st, k)]
        if not todo:
            return
        if self.session is None:
            self.load()
            self._session().prepare(self.run_dir / "cache")
        for label in todo:
            confirm_fusion(self._session(), studies[label], self.spaces[label], label, parent)

    @classmethod
    def show(cls, study: optuna.Study, run_dir: Path | None) -> None:
        show_run(_run_dir_of(study, run_dir))

    @classmethod
    def report_parts(cls, study: optuna.Study, run_dir: Path | None) -> list[tuple[str, list[Any]]]:
        from PIL import Image

        folder = _run_dir_of(study, run_dir)
        _, studies = load_run(folder)
        names = studies["dlf"].metric_names or ["score"]
        items: list[Any] = comparison_lines(compare(studies, names), names)

        for label, other in studies.items():
            found = feasible_best(other)
            if label != "dlf" and found and len(other.directions) == 1:
                grid = last_samples(images(found[0], folder, storage=other._storage))
                if grid is not None:
                    items += [f"{label}: best trial {found[0].number}'s samples", grid]
        parts: list[tuple[str, list[Any]]] = [("Layer-wise fusion (DLF) against its baselines", items)]
        if (folder / HEATMAP_FILE).is_file():
            with Image.open(folder / HEATMAP_FILE) as im:
                parts.append(("Coefficients of the best DLF trial", [im.convert("RGB")]))
        maps = []
        for path in sorted((folder / MAPS_FOLDER).glob("*.png")):
            with Image.open(path) as im:
                maps += [f"{path.stem}: where its style lives (its probes, read as explain reads)", im.convert("RGB")]
        if maps:
            parts.append(("The measured block prior: each LoRA's map", maps))
        return parts

    @classmethod
    def export(
        cls,
        study: optuna.Study,
        run_dir: Path | None,
        number: int | None,
        out: Path,
        name: str | None,
        rank: int | None,
        force: bool = False,
    ) -> dict[str, Path]:
        return export_run(_run_dir_of(study, run_dir), number, out, name, rank, force=force)

    def _session(self) -> FuseSession:
        assert self.session is not None, "FuseJob.load first"
        return self.session


def run_fuse(config: FuseRunConfig, echo: Callable[[str], None] = print, progress: bool = True) -> RunResult:
    """``autolora fuse``: see the module docstring."""

    return run_job(FuseJob.plan(config), echo=echo, progress=progress)


def _run_dir_of(study: optuna.Study, run_dir: Path | None) -> Path:
    """The run folder of a fusion study (its config.yaml names the LoRA files and the baseline study)."""

    if run_dir is None or not (run_dir / "config.yaml").is_file():
        raise UserError(f"study '{study.study_name}' is a fusion study; pass its RUN_DIR (it records none that exists)")
    return run_dir


def _best_fusion(study: optuna.Study, space: Space) -> tuple[int, Any] | None:
    """(trial number, Fusion) of the best trial (the first of a Pareto set by its first objective)."""

    found = feasible_best(study)  # confirmed, and feasible only
    if not found:
        return None
    sign = -1 if study.directions[0].name == "MAXIMIZE" else 1
    best = min(found, key=lambda t: (sign * t.values[0], t.number))
    return best.number, space.of_trial(best)


def _log_comparison(parent: Any, comparison: dict[str, Any], names: list[str]) -> None:
    metrics: list[tuple[str, float, int]] = []
    for label, e in comparison.items():
        if "best_value" in e:
            metrics.append((f"{label}.best.{names[0]}", e["best_value"], 0))
        if "hypervolume" in e:
            metrics.append((f"{label}.hypervolume", e["hypervolume"], 0))
            metrics += [(f"{label}.best.{n}", v, 0) for n, v in e["best_values"].items()]
    parent._log_metrics(metrics)


def map_pictures(comparison: dict[str, Any], folder: Path) -> list[Path]:
    """``explain``'s heatmap of each LoRA's map from the block prior's probes, ``<folder>/<lora>.png``."""
    from autolora.explain.output import heatmap as map_heatmap

    maps = comparison.get("fixed", {}).get("maps", {})
    return [map_heatmap({"lora": lora, "map": doc}, folder / f"{lora}.png") for lora, doc in maps.items()]


def write_summary(run_dir: Path, comparison: dict[str, Any]) -> None:
    import json

    write_text(run_dir / SUMMARY_FILE, json.dumps(comparison, indent=2, default=str) + "\n")
