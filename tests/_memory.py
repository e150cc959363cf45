"""Resident memory of the test process, for the tests that bound it (Linux: ``/proc/self/status``).

What a chunked pass over a memory-mapped file leaves resident is measured as
the growth of ``RssFile`` (file pages mapped into the process) while it runs:
without releasing the pages it has read or written, it grows to the size of
the file, whatever the chunk size.
"""

from __future__ import annotations

import pytest


def resident_bytes(field: str = "RssFile") -> int | None:
    """A ``/proc/self/status`` field (``RssFile``, ``RssAnon``, ``VmRSS``) in bytes; None where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


needs_resident_bytes = pytest.mark.skipif(
    resident_bytes() is None, reason="needs /proc/self/status with RssFile (Linux)"
)


class ResidentGrowth:
    """The largest growth of a ``/proc/self/status`` field over its value at creation, sampled by calls."""

    def __init__(self, field: str = "RssFile") -> None:
        self.field = field
        self.start = resident_bytes(field)
        self.largest = 0

    def __call__(self, *args) -> None:
        self.largest = max(self.largest, resident_bytes(self.field) - self.start)
