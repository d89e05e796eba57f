"""Files and folders written beside their target and renamed into place: a reader (a UI, a worker, a resumed run)
never sees half of one, and what is kept has the permissions of any saved file.

The one home of write-then-rename in the package: every file a user or another process reads is written through
``write_file``/``write_text``, every folder through ``replace_folder`` (or ``staging_folder`` where concurrent
builders race for the same target, as the built-in models' cache does).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def readable(path: Path) -> Path:
    """Give ``path`` the mode of any saved file (0644 under the usual umask) and return it.

    safetensors' ``save_file`` creates its files 0600 whatever the umask (checked with safetensors 0.7), which
    would hide an exported LoRA from a UI running as another user; every file kept passes here.
    """
    os.chmod(path, 0o666 & ~_umask())
    return path


def write_file(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary name beside ``path``, make it readable, rename it onto ``path``.

    The temporary name is unique per call (concurrent writers never share one) and removed if ``write`` fails.
    The parent folder is created when missing. Returns ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(readable(tmp), path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    """``text`` as UTF-8 into ``path``, atomically."""
    return write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def staging_folder(target: Path) -> Path:
    """An empty folder beside ``target`` to write into, then rename onto ``target``.

    ``tempfile.mkdtemp`` makes it 0700, which the rename would carry to the user's folder (a style folder, a build,
    a kept adapter) and hide it from a UI or a colleague running as another user: the mode is reset to what
    ``mkdir`` gives under the umask (0755 under the usual 022).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextmanager
def replace_folder(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder; when the block ends without an error it replaces ``target`` whole (an
    existing ``target`` is removed first), and on an error it is removed and ``target`` stays as it was."""
    tmp = staging_folder(target)
    try:
        yield tmp
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
