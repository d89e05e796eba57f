"""Recipes users edit and copy (``search_spaces/``, ``objectives/``): a built-in by name, or a YAML file."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from autolora.errors import UserError, closest
from autolora.textfiles import read_text


def builtin_names(package: str) -> list[str]:
    return sorted(p.name[:-5] for p in importlib.resources.files(package).iterdir() if p.name.endswith(".yaml"))


def read_recipe(name_or_file: str, package: str, what: str) -> tuple[Any, str, str, str]:
    """Find a built-in recipe by name or read a YAML file: (data, name, source, text)."""
    import yaml

    path = Path(name_or_file)
    if name_or_file.endswith((".yaml", ".yml")) or path.exists():
        if not path.is_file():
            raise UserError(f"{what} file {path}: no such file")
        text, source, name = read_text(path, f"{what} file"), str(path), path.stem
    else:
        names = builtin_names(package)
        if name_or_file not in names:
            raise UserError(
                f"{what} '{name_or_file}': no such built-in{closest(name_or_file, names)}; "
                f"built-ins: {', '.join(names)} (or give a .yaml file)"
            )
        text = (importlib.resources.files(package) / f"{name_or_file}.yaml").read_text(encoding="utf-8")
        source, name = f"{what} '{name_or_file}'", name_or_file
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{source}: not valid YAML{line}: {getattr(e, 'problem', e)}") from None
    return data, name, source, text
