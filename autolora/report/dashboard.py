"""``autolora dashboard``: optuna-dashboard on a study's storage, with the run folder's artifact store (the
trials' sample grids), and ratings by eye for the final pick.

optuna-dashboard's own forms (``register_user_attr_form_widgets``) write user attributes, which Optuna refuses
on finished trials (its storage raises ``UpdateFinishedTrialError``: the dashboard answers 500), so they serve
trials still running only. Its trial *notes* are kept in the study's system attributes and stay editable, so the
rating lives there: ``dashboard`` gives every complete trial without a note one whose first line is
``rating:``; a person writes 1-5 after it while looking at the trial's samples, ``autolora show`` lists the
ratings and ``autolora export --top-rated`` exports the highest-rated trial (ties: the better objective).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from autolora.core.artifacts import artifact_store
from autolora.core.reading import find_study
from autolora.errors import UserError

if TYPE_CHECKING:
    import optuna

NOTE = (
    "rating: \n\n"
    "Rate this trial's samples (its artifacts, below) from 1 to 5 after `rating:` on the first line; "
    "`autolora export RUN_DIR --top-rated` exports the highest-rated trial."
)
_RATING = re.compile(r"^\s*rating:\s*([0-9]+(?:\.[0-9]+)?)\s*$", re.MULTILINE | re.IGNORECASE)


def _dashboard() -> object:
    try:
        import optuna_dashboard
    except ImportError:
        raise UserError("optuna-dashboard is not installed: pip install 'autolora[dashboard]'") from None
    return optuna_dashboard


def note_rating(body: str) -> float | None:
    """The number after ``rating:`` in a trial's note, or None."""
    found = _RATING.search(body or "")
    return float(found.group(1)) if found else None


def _live(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> optuna.Trial:
    """A ``Trial`` handle of a stored trial: what optuna-dashboard's ``get_note``/``save_note`` take."""
    import optuna

    return optuna.Trial(study, trial._trial_id)


def ratings(study: optuna.Study) -> dict[int, float]:
    """Trial number -> rating, for the complete trials whose note has one."""
    import optuna

    board = _dashboard()
    out = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        rating = note_rating(board.get_note(_live(study, t)))  # type: ignore[attr-defined]
        if rating is not None:
            out[t.number] = rating
    return out


def top_rated(study: optuna.Study) -> int:
    """The complete trial rated highest; ties go to the better first objective, then the earlier trial."""
    import optuna

    rated = ratings(study)
    if not rated:
        raise UserError(
            f"--top-rated: no complete trial of study '{study.study_name}' is rated yet; rate trials in "
            "'autolora dashboard' (write 1-5 after 'rating:' in a trial's note)"
        )
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    values = {t.number: t.values[0] for t in study.trials if t.number in rated}
    return min(rated, key=lambda n: (-rated[n], sign * values[n], n))


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def serve(run_dir: Path | None, storage: str | None, name: str | None, host: str, port: int) -> int:
    """Serve until Ctrl-C; prints the study's URL first."""
    import optuna

    if not 0 < port < 65536:
        raise UserError(f"--port {port}: expected 1..65535")
    board = _dashboard()
    study, run_dir = find_study(run_dir, storage, name)
    if run_dir is None:
        raise UserError(f"study '{study.study_name}' records no run folder; pass RUN_DIR (its artifacts live there)")
    if not _port_free(host, port):
        raise UserError(f"--port {port}: {host}:{port} is in use; choose another port")
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        live = _live(study, t)
        if not board.get_note(live).strip():  # type: ignore[attr-defined]
            board.save_note(live, NOTE)  # type: ignore[attr-defined]
    backend = study._storage
    study_id = backend.get_study_id_from_name(study.study_name)
    print(f"optuna-dashboard: http://{host}:{port}/dashboard/studies/{study_id} (Ctrl-C to stop)", flush=True)
    board.run_server(backend, host=host, port=port, artifact_store=artifact_store(run_dir))  # type: ignore[attr-defined]
    return 0
