"""A new folder written beside its target and renamed into place, with the permissions of any saved folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def staging_folder(target: Path) -> Path:
    """An empty folder beside ``target`` to write into, then ``os.replace`` onto ``target``.

    ``tempfile.mkdtemp`` makes it 0700, which the rename would carry to the user's folder (a style folder, a build,
    a kept adapter) and hide it from a UI or a colleague running as another user: the mode is reset to what
    ``mkdir`` gives under the umask (0755 under the usual 022).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def readable(path: Path) -> Path:
    """Give ``path`` the mode of any saved file (0644 under the usual umask) and return it.

    safetensors' ``save_file`` creates its files 0600 whatever the umask (checked with safetensors 0.7), which
    would hide an exported LoRA from a UI running as another user; every safetensors file we keep passes here.
    """
    os.chmod(path, 0o666 & ~_umask())
    return path
