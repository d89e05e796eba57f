"""Checks of where a study lives, made before anything is created: the storage URL and a stored study's fingerprint."""

from __future__ import annotations

from pathlib import Path

from autolora.core.storage import with_retries
from autolora.core.study import ATTR, StudySpec
from autolora.errors import UserError

_OPTUNA_TABLES = {"studies", "trials"}


def check_storage(url: str, default_in: Path | None = None, *, must_exist: bool = False) -> None:
    """Refuse a storage URL that cannot be opened as an Optuna storage, without creating anything in it.

    Args:
        url: The storage URL (``sqlite:///FILE``, ``postgresql://...``, ``mysql://...``).
        default_in: The run folder that will be created for the default SQLite file (it may not exist yet).
        must_exist: ``show``/``export``/``worker``: the database must already be there.

    Raises:
        UserError: a missing folder or file, a file that is not a database, a database that holds tables
            but not Optuna's (another program's), or a server that cannot be reached.
    """
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            if must_exist:
                raise UserError(f"storage {url}: no such database file")
            if path.parent != default_in and not path.parent.is_dir():
                raise UserError(f"storage {url}: folder {path.parent} does not exist")
            return
        if not path.is_file():
            raise UserError(f"storage {url}: {path} is not a file (expected an SQLite database)")
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect():
                tables = set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except Exception as e:
        what = "is not an SQLite database" if url.startswith("sqlite") else "cannot be opened"
        raise UserError(f"storage {url}: {what} ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if tables and not tables >= _OPTUNA_TABLES:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise UserError(
            f"storage {url}: a database of another program (tables {shown}), not an Optuna storage; "
            f"give a new file or an Optuna database"
        )
    if must_exist and not tables:
        raise UserError(f"storage {url}: empty database (no Optuna studies in it)")


def check_existing_study(url: str, spec: StudySpec) -> None:
    """Refuse to add to the study of ``spec`` in ``url`` if it was made with another space or directions."""
    import optuna

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return
    storage = with_retries(lambda: optuna.storages.RDBStorage(url))
    try:
        try:
            study_id = storage.get_study_id_from_name(spec.name)
        except KeyError:
            return
        attrs = storage.get_study_user_attrs(study_id)
        stored = attrs.get(ATTR + "search_space_hash")
        what = spec.space_kind
        if stored and stored != spec.fingerprint:
            raise UserError(
                f"study '{spec.name}' in {url} was made with a different {what} "
                f"(hash {stored}, now {spec.fingerprint}); mixing them would corrupt the study: "
                f"use a new --study-name or the original {what}"
            )
        stored_directions = attrs.get(ATTR + "directions")
        if stored_directions and stored_directions != spec.directions:
            raise UserError(
                f"study '{spec.name}' optimises {stored_directions}; objective "
                f"{spec.objective} has {spec.directions}: use a new --study-name"
            )
    finally:
        storage.remove_session()
        storage.engine.dispose()
