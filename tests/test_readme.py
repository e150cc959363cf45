"""Every ```python block of the README runs as written.

Each block runs in a fresh interpreter, from a file in an empty directory (so
the files it writes go there, and Dask's spawned workers can import it). A
block may be preceded by a marker comment, invisible on the rendered page::

    <!-- readme-test: needs=zarr shrink 2_000_000=20_000 -->

``needs=`` names modules the block uses without importing them; ``shrink``
replaces sizes for the test (each must occur in the block), so the README can
show a realistic size while the test stays small. A block whose modules are
not installed is skipped with the reason, never passed.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(
    r"(?:<!-- readme-test:(?P<marker>[^>]*)-->\n)?```python\n(?P<code>.*?)```",
    re.DOTALL,
)


def _blocks() -> list[tuple[str, str, str]]:
    """(id, marker, code) of every python block, the id from the section it is in."""
    text = README.read_text()
    blocks, seen = [], {}
    for match in _BLOCK.finditer(text):
        headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.MULTILINE)
        section = re.sub(r"\W+", "-", headings[-1].lower()).strip("-") if headings else "top"
        seen[section] = seen.get(section, 0) + 1
        blocks.append((f"{section}-{seen[section]}", match["marker"] or "", match["code"]))
    return blocks


def _needed_modules(marker: str, code: str) -> list[str]:
    imported = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    for word in marker.split():
        if word.startswith("needs="):
            imported.update(word[len("needs=") :].split(","))
    return sorted(imported)


def _shrunk(marker: str, code: str) -> str:
    words = marker.split()
    if "shrink" in words:
        for pair in words[words.index("shrink") + 1 :]:
            if "=" not in pair or pair.startswith("needs="):
                break
            old, new = pair.split("=")
            assert old in code, f"the marker shrinks {old}, which the block no longer contains"
            code = code.replace(old, new)
    return code


BLOCKS = _blocks()


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3, [name for name, _, _ in BLOCKS]


@pytest.mark.slow
@pytest.mark.parametrize("marker, code", [(m, c) for _, m, c in BLOCKS], ids=[name for name, _, _ in BLOCKS])
def test_readme_block_runs_as_written(tmp_path, marker, code):
    missing = [name for name in _needed_modules(marker, code) if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"this README block needs {', '.join(missing)}, which is not installed")
    script = tmp_path / "readme_block.py"
    script.write_text(_shrunk(marker, code))
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
