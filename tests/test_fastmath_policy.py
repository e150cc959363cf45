"""One place for the fastmath flags: every ``fastmath`` option names a set from ``kernels/_config.py``.

The check reads the source of ``fastsoftmax/`` and ``kernels/`` twice: with
``ast``, every ``fastmath=`` keyword and every ``"fastmath":`` dict entry (as in
``jit_options``) must have as its value a bare name imported from
``fastsoftmax.kernels._config`` (or, in that module, defined there); and a
text search for the same two spellings must find nothing the ``ast`` pass did
not see, so that the flag cannot hide in a form the first pass does not read.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from _package_source import package_modules

CONFIG_MODULE = "fastsoftmax.kernels._config"
FASTMATH_TEXT = re.compile(r"""\bfastmath\s*=(?!=)|["']fastmath["']\s*:""")


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """Absolute name of the module that ``from ... import`` reads from."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _config_names(tree: ast.Module) -> set[str]:
    """Names bound at the top level of the config module."""
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _names_from_config(tree: ast.Module, module: str, is_package: bool, config_names: set[str]) -> set[str]:
    """Local names that this module binds to a name of the config module."""
    if module == CONFIG_MODULE:
        return set(config_names)
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _resolve(node, module, is_package) == CONFIG_MODULE:
            local.update(alias.asname or alias.name for alias in node.names if alias.name in config_names)
    return local


def _fastmath_sites(tree: ast.Module) -> list[tuple[int, ast.expr]]:
    """(line, value) of every ``fastmath=`` keyword and ``"fastmath":`` dict entry."""
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "fastmath":
            sites.append((node.value.lineno, node.value))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "fastmath":
                    sites.append((key.lineno, value))
    return sites


def fastmath_violations(
    source: str, module: str, config_names: set[str], *, is_package: bool = False, label: str = "<source>"
) -> tuple[list[str], int]:
    """Return (one message per offending line, number of fastmath options seen) for ``source``."""
    tree = ast.parse(source)
    allowed = _names_from_config(tree, module, is_package, config_names)
    sites = _fastmath_sites(tree)
    problems = []
    for line, value in sites:
        if not (isinstance(value, ast.Name) and value.id in allowed):
            problems.append(
                f"{label}:{line}: fastmath is set to {ast.unparse(value)}; use a flag set "
                f"imported from {CONFIG_MODULE} (add a named set there if a kernel needs another one)"
            )
    seen_lines = {line for line, _ in sites}
    for number, text in enumerate(source.splitlines(), start=1):
        if FASTMATH_TEXT.search(text) and number not in seen_lines:
            problems.append(
                f"{label}:{number}: 'fastmath' is written as an option in a form this check "
                f"cannot read (a string or a comment?): {text.strip()}"
            )
    return problems, len(sites)


def test_every_fastmath_option_names_a_set_from_config():
    modules = package_modules()
    config_names = _config_names(modules[CONFIG_MODULE].tree)
    problems, n_sites = [], {}
    for name, module in modules.items():
        found, n_sites[name] = fastmath_violations(
            module.path.read_text(encoding="utf-8"),
            name,
            config_names,
            is_package=module.is_package,
            label=str(module.path.relative_to(module.path.parents[1])),
        )
        problems += found
    assert not problems, "\n".join(problems)
    # The check saw the options it exists for: JIT_OPTIONS and the exp overload's.
    assert n_sites[CONFIG_MODULE] >= 1 and n_sites["fastsoftmax.kernels._math"] >= 1, n_sites


CONFIG_NAMES = {"FASTMATH", "FASTMATH_EXP", "JIT_OPTIONS"}

CASES = {
    "literal-true": ("@njit(fastmath=True)\ndef f(): pass\n", "fastsoftmax.kernels.softmax", 1),
    "literal-set": ('@njit(fastmath={"nsz"})\ndef f(): pass\n', "fastsoftmax.kernels.softmax", 1),
    "jit-options-literal": ('f = overload(g, jit_options={"fastmath": {"nsz"}})\n', "fastsoftmax.kernels._math", 1),
    "local-name": ('FAST = {"nsz"}\n@njit(fastmath=FAST)\ndef f(): pass\n', "fastsoftmax.model", 1),
    "name-from-elsewhere": (
        "from fastsoftmax._checks import FASTMATH\n@njit(fastmath=FASTMATH)\ndef f(): pass\n",
        "fastsoftmax.model",
        1,
    ),
    "attribute": ("import numba\n@njit(fastmath=numba.FLAGS)\ndef f(): pass\n", "fastsoftmax.model", 1),
    "in-a-string": ('"""Compile with fastmath=True."""\n', "fastsoftmax.model", 1),
    "in-a-comment": ('# {"fastmath": {"nsz"}}\nx = 1\n', "fastsoftmax.model", 1),
    "imported-from-config": (
        "from fastsoftmax.kernels._config import FASTMATH\n@njit(fastmath=FASTMATH)\ndef f(): pass\n",
        "fastsoftmax.kernels.softmax",
        0,
    ),
    "relative-import-in-dict": (
        'from ._config import FASTMATH_EXP as EXP\nf = overload(g, jit_options={"fastmath": EXP})\n',
        "fastsoftmax.kernels._math",
        0,
    ),
    "defined-in-config": ('FASTMATH = {"nsz"}\nJIT_OPTIONS = {"fastmath": FASTMATH}\n', CONFIG_MODULE, 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_check_flags_every_other_spelling(case):
    source, module, expected = CASES[case]
    problems, _ = fastmath_violations(source, module, CONFIG_NAMES)
    assert len(problems) == expected, problems


def test_the_check_reads_this_checkout():
    # Guard against a check that passes because it looked in the wrong place.
    modules = package_modules()
    assert {CONFIG_MODULE, "fastsoftmax.kernels.loss_grad", "fastsoftmax.model"} <= set(modules)
    assert all(isinstance(m.path, Path) and m.path.is_file() for m in modules.values())
