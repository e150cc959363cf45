"""The optional extras (``pyproject.toml``'s ``[project.optional-dependencies]``) and how to install one."""

from __future__ import annotations


def missing_extra(feature: str, extra: str) -> ImportError:
    """The error for ``feature`` used without the ``extra`` it needs, naming both ways to install it."""
    return ImportError(
        f'{feature} needs the {extra} extra: pip install "fastsoftmax[{extra}]" '
        f'(from a checkout of the source: python -m pip install -e ".[{extra}]").'
    )
