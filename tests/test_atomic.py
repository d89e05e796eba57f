"""The one write-then-rename helper: a reader never sees half a file or folder, a failed write leaves the target as
it was and no temporary behind, and what is kept has the permissions of any saved file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autolora.atomic import replace_folder, write_file, write_text


class Boom(Exception):
    pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_file_is_written_whole_with_the_umasks_mode(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "notes.txt"
    assert write_text(target, "first\n") == target
    assert target.read_text() == "first\n"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()

    def private(tmp: Path) -> None:  # as safetensors' save_file does: 0600 whatever the umask
        tmp.write_text("second\n")
        tmp.chmod(0o600)

    write_file(target, private)
    assert target.read_text() == "second\n" and target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(p.name for p in target.parent.iterdir()) == ["notes.txt"]


def test_a_failed_file_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "kept.txt"
    write_text(target, "old\n")

    def half(tmp: Path) -> None:
        tmp.write_text("half")
        raise Boom

    with pytest.raises(Boom):
        write_file(target, half)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with replace_folder(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert target.stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's 0700
    with replace_folder(target) as tmp:  # an existing folder is replaced, not merged
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    with pytest.raises(Boom), replace_folder(target) as tmp:
        (tmp / "c.txt").write_text("3")
        raise Boom
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no staging folder left behind
