"""The package's own source files, parsed, for tests that check rules on the code itself.

``fastsoftmax/`` is imported as ``fastsoftmax`` and ``kernels/`` as
``fastsoftmax.kernels`` (see ``pyproject.toml``); :func:`package_modules` maps
each dotted module name to its path and its ``ast`` tree.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]

#: Source folder -> the dotted package name it is installed as.
PACKAGE_DIRS = {"fastsoftmax": "fastsoftmax", "kernels": "fastsoftmax.kernels"}


class Module(NamedTuple):
    name: str
    path: Path
    tree: ast.Module
    is_package: bool


def module_name(folder: str, path: Path) -> str:
    """Dotted name of ``path`` inside the source folder ``folder``."""
    package = PACKAGE_DIRS[folder]
    return package if path.stem == "__init__" else f"{package}.{path.stem}"


def package_modules(root: Path = ROOT) -> dict[str, Module]:
    """Every module of ``fastsoftmax/`` and ``kernels/`` by dotted name."""
    modules = {}
    for folder in PACKAGE_DIRS:
        for path in sorted((root / folder).glob("*.py")):
            name = module_name(folder, path)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            modules[name] = Module(name, path, tree, path.stem == "__init__")
    return modules
