"""Reading a finished (or running) study: find it, print its trials, choose the one to export."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.core.checks import check_storage
from autolora.core.feasible import (
    BROKEN_ATTR,
    best,
    complete,
    confirmation,
    infeasible_line,
    is_feasible,
    noise_line,
    ranked,
)
from autolora.core.rundir import kept_numbers
from autolora.core.storage import heartbeat_ages, make_storage
from autolora.core.study import ATTR
from autolora.errors import UserError

if TYPE_CHECKING:
    import optuna


def find_study(run_dir: Path | None, storage: str | None, name: str | None) -> tuple[optuna.Study, Path | None]:
    """A study from its run folder, or from a storage URL and a study name."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if run_dir is not None:
        cfg_file = run_dir / "config.yaml"
        if not cfg_file.is_file():
            raise UserError(f"{run_dir}: not an autolora run folder (no config.yaml)")
        import yaml

        from autolora.textfiles import read_text

        try:
            cfg = yaml.safe_load(read_text(cfg_file, "run config")) or {}
        except yaml.YAMLError:
            raise UserError(f"{cfg_file}: not valid YAML; is {run_dir} an autolora run folder?") from None
        if not isinstance(cfg, dict):
            raise UserError(f"{cfg_file}: expected a mapping of sections; is {run_dir} an autolora run folder?")
        study_cfg = cfg.get("study") or {}
        storage = storage or study_cfg.get("storage")
        name = name or study_cfg.get("name")
    if not storage or not name:
        raise UserError("give a RUN_DIR, or both --storage and --study-name")

    check_storage(storage, must_exist=True)
    store = make_storage(storage, pool_size=1)
    try:
        study = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = [s.study_name for s in store.get_all_studies()]
        raise UserError(f"storage {storage}: no study named '{name}' (studies: {', '.join(names) or 'none'})") from None
    stored_dir = study.user_attrs.get(ATTR + "run_dir")
    return study, run_dir or (Path(stored_dir) if stored_dir else None)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def print_table(study: optuna.Study, run_dir: Path | None) -> None:
    kept = set(kept_numbers(run_dir)) if run_dir else set()
    stale = stale_trials(study)
    names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    print(
        f"study '{study.study_name}': {len(study.trials)} trials, directions "
        f"{[d.name.lower() for d in study.directions]}"
    )
    found = study.user_attrs.get(ATTR + "findings")
    if found is None:  # studies made before the findings were kept whole: their warnings only
        found = [{"line": w, "warning": True, "kind": "data"} for w in study.user_attrs.get(ATTR + "warnings", [])]
    for f in found:
        kind = f.get("kind", "data")
        if f.get("warning"):
            print(f"WARNING ({kind}, at setup): {f['line']}")
        elif kind == "judge" and f.get("check") == "style":  # what the study's style: auto chose
            print(f"judge (at setup): {f['line']}")
    header = f"{'#':>4} {'state':9s} " + " ".join(f"{n:>10s}" for n in names) + f" {'secs':>7s} kept  params"
    print(header)
    for t in study.trials:
        values = (
            t.values
            if t.values
            else ([t.intermediate_values[max(t.intermediate_values)]] if t.intermediate_values else [])
        )
        shown = (
            " ".join(f"{v:>+10.4f}" for v in values).ljust(11 * len(names) - 1)
            if values
            else " ".join(f"{'-':>10s}" for _ in names)
        )
        secs = f"{t.duration.total_seconds():7.1f}" if t.duration else f"{'-':>7s}"
        params = t.user_attrs.get("spec") or " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        params += adapter_size(t.user_attrs)
        reason = t.user_attrs.get("fail_reason")
        if t.state.name == "COMPLETE" and t.user_attrs.get(BROKEN_ATTR):
            reason = f"infeasible: {t.user_attrs[BROKEN_ATTR]}"
        if t.number in stale:
            reason = f"stale: no heartbeat for {stale[t.number]:.0f}s, its worker is probably dead"
        tail = f" [{reason}]" if reason else ""
        if t.user_attrs.get("autolora.preset"):
            tail += f" [{t.user_attrs['autolora.preset']}]"
        state = "STALE" if t.number in stale else t.state.name
        print(f"{t.number:>4} {state:9s} {shown} {secs} {'yes ' if t.number in kept else '    '}  {params}{tail}")
    print_best(study)


def adapter_size(attrs: dict[str, Any]) -> str:
    """`` | 12.3k params, 49 KB`` from a trial's user attrs (empty for trials that record neither)."""
    count, size = attrs.get("trainable_params"), attrs.get("adapter_bytes")
    parts = []
    if isinstance(count, int):
        parts.append(f"{_short(count)} params")
    if isinstance(size, int):
        parts.append(f"{size / 1024:.0f} KB" if size < 1024**2 else f"{size / 1024**2:.1f} MB")
    return f" | {', '.join(parts)}" if parts else ""


def _short(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10**6 else f"{n / 1e3:.1f}k" if n >= 1000 else str(n)


def stale_trials(study: optuna.Study) -> dict[int, float]:
    """RUNNING trials whose heartbeat is older than the study's grace period (trial number -> seconds silent).

    Such a trial's worker has died; the next worker to start a trial (or the last to leave) fails it.
    """
    import optuna
    from optuna.storages import RDBStorage

    storage = getattr(study._storage, "_backend", study._storage)  # optuna wraps RDBStorage in _CachedStorage
    if not isinstance(storage, RDBStorage):
        return {}

    config = (study.user_attrs.get(ATTR + "config") or {}).get("study") or {}
    grace = float(config.get("grace_period") or 180)
    if not config.get("heartbeat_interval", 60):
        return {}  # heartbeats off: no trial can be told dead
    study_id = storage.get_study_id_from_name(study.study_name)
    ages = heartbeat_ages(storage, study_id)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    out = {}
    now = datetime.datetime.now()  # optuna stamps datetime_start with the local time
    for t in running:
        tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        # A worker killed before its heartbeat thread first wrote leaves a RUNNING trial with no heartbeat at all:
        # silent since it started.
        age = ages.get(tid, (now - t.datetime_start).total_seconds() if t.datetime_start else 0.0)
        if age > grace:
            out[t.number] = age
    return out


def print_best(study: optuna.Study) -> None:
    if not complete(study):
        print("no complete trial yet")
        return
    names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    conf = confirmation(study)
    if conf is not None:
        for line in conf.lines(names):
            print(line)
    nothing = infeasible_line(study)
    if nothing:
        print(f"{nothing}: `autolora export --force` takes the highest-scoring trial anyway")
        return
    if len(study.directions) == 1:
        top = best(study)[0]
        how = f" (confirmed {conf.trials[top.number].values[0]:+.4f} on {len(conf.seeds)} other seeds)" if conf else ""
        spec = top.user_attrs.get("spec") or top.params
        step = top.user_attrs.get("best_step")
        if step is not None and step != top.params.get("steps"):
            spec = f"{spec} | best at step {step} (the adapter kept)"
        print(f"best: trial {top.number} {names[0]}={top.value:+.4f}{how} | {spec}")
    else:
        front = best(study)
        print(f"Pareto set ({len(front)} feasible trials):")
        for t in front:
            vals = " ".join(f"{n}={v:+.4f}" for n, v in zip(names, t.values, strict=True))
            print(f"  trial {t.number}: {vals} | {t.user_attrs.get('spec') or t.params}")
    noise = noise_line(study)
    if noise:
        print(f"{noise}: `autolora export --force` exports it anyway")


def choose_trial(study: optuna.Study, number: int | None, force: bool = False) -> int:
    """The trial to export: ``number``, else the best feasible one (the only Pareto-optimal one), confirmed if the
    study was; a best whose style is within the measured noise of zero is refused unless ``force``.

    An infeasible trial (it broke the objective's constraints, see ``autolora.core.feasible``) is refused unless
    ``force``; with ``force`` and no feasible trial, the highest-scoring complete trial is taken.
    """

    done = complete(study)
    if number is not None:
        if number not in {t.number for t in study.trials}:
            raise UserError(f"--trial {number}: study '{study.study_name}' has trials 0..{len(study.trials) - 1}")
        chosen = study.trials[number]
        if chosen.state.name == "COMPLETE" and not is_feasible(chosen) and not force:
            raise UserError(
                f"--trial {number} is infeasible ({chosen.user_attrs.get(BROKEN_ATTR) or 'it broke a constraint'}); "
                "pass --force to export it anyway"
            )
        return number
    if not done:
        raise UserError(f"study '{study.study_name}' has no complete trial to export")
    found = best(study)
    if not found:
        if force:
            return ranked(study)[0].number
        raise UserError(f"study '{study.study_name}': {infeasible_line(study)}; pass --force to export the top trial")
    if len(found) == 1:
        noise = noise_line(study)
        if noise and not force:
            raise UserError(f"study '{study.study_name}': {noise}; pass --force to export it anyway")
        return found[0].number
    front = [t.number for t in found]
    raise UserError(
        f"study '{study.study_name}' has {len(front)} Pareto-optimal trials ({front}); choose one with --trial N"
    )
