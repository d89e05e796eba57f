"""A table on disk: per style ``meta.json`` (what built it), ``rows.jsonl`` (one trained configuration a line,
appended as it finishes) and ``images.u8`` (the samples, raw uint8, appended; rows point into it).

A packed table (``pack``) holds the same files compressed with xz (``rows.jsonl.xz``, ``images.u8.xz``), the
images of some rungs left out where the repository's budget asks (``meta["packed"]`` says which); ``load_table``
reads either.

A row::

    {"config": 7, "origin": "design" | "preset kohya-like", "params": {...}, "spec": "r=4 a=8 ...",
     "rungs": [{"step": 100,
                "search":  {"metrics": {name: [per sample]}, "values": [...], "violations": {...},
                            "truth": {"presence": [...], "tone": [...], "shape": [...], "colour": [...]},
                            "images": [first, count] | null},
                "confirm": {... the same on the confirmation seeds ...}}, ...],
     "loss": [mean per 10 steps], "seconds": {"train": ..., "sample": ..., "score": ..., "truth": ...},
     "failed": null | "reason", "commit": "..."}

Samples are prompt-major over the seeds (every seed of the first prompt, then the next), as the scorers take them.
"""

from __future__ import annotations

import json
import lzma
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autolora.errors import UserError

META, ROWS, IMAGES = "meta.json", "rows.jsonl", "images.u8"


@dataclass
class StyleTable:
    """One style's part of a table."""

    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    images: np.ndarray | None = field(default=None, repr=False)
    """All samples, (N, H, W, 3) uint8; rows' ``images`` are (first, count) into it."""

    @property
    def style(self) -> str:
        return str(self.meta["style"])

    def samples(self, row: dict[str, Any], step: int, seeds: str = "search") -> np.ndarray | None:
        """The samples of ``row`` at rung ``step`` on the ``search`` or ``confirm`` seeds (None when not kept)."""
        rung = next(r for r in row["rungs"] if r["step"] == step)
        where = rung[seeds].get("images")
        if where is None or self.images is None:
            return None
        first, count = where
        return self.images[first : first + count]

    def complete(self) -> list[dict[str, Any]]:
        """The rows that trained to their last rung."""
        return [r for r in self.rows if not r.get("failed")]


def load_table(folder: Path | str, styles: list[str] | None = None, images: bool = True) -> dict[str, StyleTable]:
    """Every style of the table in ``folder`` (a build's working folder or a packed one), by style name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such table folder")
    out = {}
    for sub in sorted(p for p in folder.iterdir() if (p / META).is_file()):
        meta = json.loads((sub / META).read_text())
        if styles and meta["style"] not in styles:
            continue
        rows = [json.loads(line) for line in _read_text(sub, ROWS).splitlines() if line.strip()]
        array = _read_images(sub, meta) if images else None
        out[meta["style"]] = StyleTable(meta, rows, array)
    return out


def _read_text(sub: Path, name: str) -> str:
    if (sub / name).is_file():
        return (sub / name).read_text()
    if (sub / f"{name}.xz").is_file():
        return lzma.decompress((sub / f"{name}.xz").read_bytes()).decode()
    return ""


def _read_images(sub: Path, meta: dict[str, Any]) -> np.ndarray | None:
    size = int(meta["resolution"])
    if (sub / IMAGES).is_file():
        raw = (sub / IMAGES).read_bytes()
    elif (sub / f"{IMAGES}.xz").is_file():
        raw = lzma.decompress((sub / f"{IMAGES}.xz").read_bytes())
    else:
        return None
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, size, size, 3)


class StyleWriter:
    """Appends one style's rows and samples; a restart truncates what a crash left half-written."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        meta_path = folder / META
        if meta_path.is_file():
            old = json.loads(meta_path.read_text())
            keys = ("style", "space", "objective", "world", "design", "rungs", "prompts", "seeds", "confirm_seeds")
            for key in (*keys, "resolution", "train_seed"):
                if old.get(key) != meta.get(key):
                    raise UserError(
                        f"{folder}: the table there was built with another {key} ({old.get(key)!r}, now "
                        f"{meta.get(key)!r}); build into another folder"
                    )
            self.meta = old
        else:
            self.meta = meta
            _atomic_write(meta_path, json.dumps(meta, indent=1))
        self.rows = [json.loads(x) for x in _read_text(folder, ROWS).splitlines() if x.strip()]
        per_image = int(self.meta["resolution"]) ** 2 * 3
        end = max([_end(r) for r in self.rows] + [_end_of_base(self.meta)]) * per_image
        images = folder / IMAGES
        if images.is_file() and images.stat().st_size != end:  # a crash between the samples and the row
            with open(images, "r+b") as f:
                f.truncate(end)
        self.count = end // per_image

    def set_base(self, figures: dict[str, Any], images: dict[str, list[Any]]) -> None:
        """Record the base model's figures (and samples) per seed set in ``meta["base"]``, once."""
        if self.meta.get("base"):
            return
        base = {part: dict(figures[part], images=self.add_images(images[part])) for part in figures}
        self.meta["base"] = base
        _atomic_write(self.folder / META, json.dumps(self.meta, indent=1))

    def update_meta(self, **items: Any) -> None:
        self.meta.update(items)
        _atomic_write(self.folder / META, json.dumps(self.meta, indent=1))

    def done(self) -> set[int]:
        return {int(r["config"]) for r in self.rows}

    def add_images(self, images: list[Any]) -> list[int]:
        """Append samples (PIL images); return [first, count]."""
        arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
        with open(self.folder / IMAGES, "ab") as f:
            f.write(arr.tobytes())
            f.flush()
            os.fsync(f.fileno())
        first, self.count = self.count, self.count + len(arr)
        return [first, len(arr)]

    def add_row(self, row: dict[str, Any]) -> None:
        with open(self.folder / ROWS, "a") as f:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)


def _end(row: dict[str, Any]) -> int:
    ends = [0]
    for rung in row["rungs"]:
        for part in ("search", "confirm"):
            where = rung.get(part, {}).get("images")
            if where:
                ends.append(where[0] + where[1])
    return max(ends)


def _end_of_base(meta: dict[str, Any]) -> int:
    ends = [0]
    for part in meta.get("base", {}).values():
        where = part.get("images")
        if where:
            ends.append(where[0] + where[1])
    return max(ends)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class _Packer:
    """Copies the samples a packed table keeps into one array and gives their new place."""

    def __init__(self, images: np.ndarray | None) -> None:
        self.images = images
        self.chunks: list[np.ndarray] = []
        self.count = 0

    def move(self, where: list[int] | None) -> list[int] | None:
        if where is None or self.images is None:
            return None
        self.chunks.append(self.images[where[0] : where[0] + where[1]])
        self.count += where[1]
        return [self.count - where[1], where[1]]

    def raw(self) -> bytes:
        return np.concatenate(self.chunks).tobytes() if self.chunks else b""


def pack(
    source: Path,
    dest: Path,
    keep_steps: dict[str, list[int]] | None = None,
    parts: tuple[str, ...] = ("search", "confirm"),
) -> dict[str, int]:
    """Compress each style of the table in ``source`` into ``dest`` (xz), keeping the samples of the rungs in
    ``keep_steps[style]`` only (None: all) and of the seed sets in ``parts``; returns the bytes written per style.
    Rows lose the pointers of dropped samples; ``meta["packed"]`` records what was kept."""
    out = {}
    for name, table in load_table(source).items():
        sub = dest / name
        sub.mkdir(parents=True, exist_ok=True)
        keep = None if keep_steps is None else set(keep_steps.get(name, []))
        packer = _Packer(table.images)
        meta = json.loads(json.dumps(table.meta))
        for part in meta.get("base", {}).values():
            part["images"] = packer.move(part.get("images"))
        rows = []
        for row in table.rows:
            row = json.loads(json.dumps(row))
            for rung in row["rungs"]:
                for part in ("search", "confirm"):
                    kept = (keep is None or rung["step"] in keep) and part in parts
                    rung[part]["images"] = packer.move(rung[part].get("images")) if kept else None
            rows.append(row)
        meta["packed"] = {"steps": sorted(keep) if keep is not None else "all", "seeds": list(parts)}
        _atomic_write(sub / META, json.dumps(meta, indent=1))
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
        (sub / f"{ROWS}.xz").write_bytes(lzma.compress(text.encode(), preset=9 | lzma.PRESET_EXTREME))
        (sub / f"{IMAGES}.xz").write_bytes(lzma.compress(packer.raw(), preset=9 | lzma.PRESET_EXTREME))
        out[name] = sum(p.stat().st_size for p in sub.iterdir())
    return out
