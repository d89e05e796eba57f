"""Reading the text files users hand us (captions, prompts, configs, recipes, model JSON): one clear line when
a file is not text we can read, never a raw ``UnicodeDecodeError``.

Text is read as UTF-8 (a UTF-8 byte-order mark is dropped). Windows tools also write UTF-16 with a byte-order
mark (Notepad's "Unicode"), which is recognised by that mark and read too. Anything else, a legacy code page
such as cp1252 or Latin-1 included, is refused with the file, the first byte that is not UTF-8 and its
position: guessing a code page would silently turn a caption into other words.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

from autolora.errors import UserError

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode(data: bytes, where: str) -> str:
    """``data`` as text (see the module docstring); ``where`` names the file in the error."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{where}: starts with a {encoding} byte-order mark but is not {encoding} ({e.reason})"
                ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(
            f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}, offset {e.start}); "
            f"save it as UTF-8 (a Windows code page such as cp1252 is not guessed)"
        ) from None


def read_text(path: Path, what: str) -> str:
    """The text of ``path``; ``what`` (``caption``, ``prompts file``...) names it in errors."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{what} {path}: cannot be read ({e.strerror or type(e).__name__})") from None
    return decode(data, f"{what} {path}")


def read_json(path: Path, what: str) -> Any:
    """The JSON document in ``path``, or one line naming the file and the problem."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path}: not valid JSON (line {e.lineno}: {e.msg})") from None
