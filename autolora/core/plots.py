"""The study's plots (optuna's matplotlib visualisations), shared by the MLflow parent run and the HTML report:
optimisation history, Pareto front (several objectives) and parameter importances per objective."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Plot:
    what: str
    """``history``, ``pareto`` or ``importances``."""
    path: str
    """Its artifact path (``plots/optimization_history.png``...)."""
    title: str
    draw: Callable[[], Any]


def _objective(i: int, sign: float = 1.0) -> Callable[[optuna.trial.FrozenTrial], float]:
    return lambda t: sign * t.values[i]


def study_plots(study: optuna.Study, names: list[str]) -> tuple[list[Plot], str | None]:
    """The plots of ``study`` and, when parameter importances cannot be computed, why not."""
    import optuna.visualization.matplotlib as vis
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    multi = len(names) > 1
    first: dict[str, Any] = {"target": _objective(0), "target_name": names[0]} if multi else {}
    plots = [
        Plot(
            "history",
            "plots/optimization_history.png",
            f"optimisation history ({names[0]})",
            partial(vis.plot_optimization_history, study, **first),
        )
    ]
    if multi:
        plots.append(
            Plot(
                "pareto",
                "plots/pareto_front.png",
                "Pareto front",
                partial(vis.plot_pareto_front, study, target_names=names),
            )
        )
    seen: dict[str, set[str]] = {}
    for t in done:
        for k, v in t.params.items():
            seen.setdefault(k, set()).add(repr(v))
    if len(done) < 2 or all(len(values) < 2 for values in seen.values()):
        return plots, f"{len(done)} complete trial(s)" if len(
            done
        ) < 2 else "no parameter varies across complete trials"
    for i, name in enumerate(names):
        sign = -1.0 if study.directions[i].name == "MAXIMIZE" else 1.0  # PED-ANOVA takes low targets as good
        kw: dict[str, Any] = {"target": _objective(i, sign), "target_name": name} if multi else {}
        safe = re.sub(r"[^\w./\- ]", "_", name).strip("/")  # as MLflow accepts artifact names
        path = f"plots/param_importances_{safe}.png" if multi else "plots/param_importances.png"
        plots.append(
            Plot(
                "importances", path, f"parameter importances ({name})", partial(vis.plot_param_importances, study, **kw)
            )
        )
    return plots, None


def render(plot: Plot) -> Figure:
    """Draw ``plot`` (optuna's experimental-API and empty-legend warnings silenced); the caller closes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig: Figure = plot.draw().figure
    fig.tight_layout()
    return fig
