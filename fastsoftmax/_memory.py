"""The memory a process may still take: the machine's, or less where its memory control group sets a limit.

Read before a copy of X is made for speed (``_data.copy_of_X_fits``), before
the synthetic generator runs (``datasets``) and before a fit starts
(``engine.fit_memory_shortfall``). Linux's ``MemAvailable`` reads the
machine's memory, also in a container limited to a fraction of it, which
the kernel kills at its own limit; the control group's limit less its use
is then the smaller figure. The process's groups are found once per
process; each call reads their limits and use.
"""

from __future__ import annotations

import contextlib
import functools
import os

#: Where Linux describes the machine's memory and the process's control groups (tests point them elsewhere).
MEMINFO = "/proc/meminfo"
PROC_SELF_CGROUP = "/proc/self/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"

#: Largest share of the available memory that a copy of X made for speed may
#: take: its row blocks, the C-ordered copy of a Fortran-ordered X
#: (``_data.copy_of_X_fits``), or a sparse X with its columns renumbered
#: (``_sparse.SparseObjective``).
COPY_MEMORY_FRACTION = 0.25

#: A cgroup v1 limit at or above this is no limit (v1 writes "none" as the largest page-aligned 63-bit number).
V1_NO_LIMIT = 1 << 62


def available_memory() -> int | None:
    """Bytes of memory available to new allocations, or None when unknown.

    Linux's MemAvailable (free memory plus what the page cache would give
    back), or less where a memory control group of the process allows less
    (:func:`cgroup_memory_left`: a container's limit); else the free
    physical pages, else a quarter of all of them (macOS).
    """
    machine = _mem_available()
    if machine is None:
        machine = _physical_memory_free()
    group = cgroup_memory_left()
    if machine is None:
        return group
    return machine if group is None else min(machine, group)


def _physical_memory_free() -> int | None:
    """The free physical pages' bytes, else a quarter of all of them (macOS); None without sysconf (Windows)."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError):  # no such name (macOS): guess a quarter of the total
            return os.sysconf("SC_PHYS_PAGES") * page // 4
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        return None


def _mem_available() -> int | None:
    try:
        with open(MEMINFO, encoding="ascii", errors="replace") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_memory_left() -> int | None:
    """Bytes that the process's memory control groups let it take still, or None where none sets a limit.

    For each group with a limit (``memory.max`` in cgroup v2,
    ``memory.limit_in_bytes`` in v1; the process's group and the ancestors
    whose limits reach it), the limit less the memory charged to it that the
    kernel cannot reclaim before it kills: its usage less its page cache,
    plus the shared memory counted in that cache (v2's ``file`` and
    ``shmem``, v1's ``total_cache`` and ``total_shmem``), as MemAvailable
    counts the page cache as available. The least of them. Limits are read
    on every call: ``docker update --memory`` and ``systemctl set-property
    ... MemoryMax=`` change them while the process runs.
    """
    left = None
    for directory, v2 in _memory_cgroup_dirs():
        limit_file, usage_file, cache, shared = (
            ("memory.max", "memory.current", "file", "shmem")
            if v2
            else ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_cache", "total_shmem")
        )
        limit = _read_int(os.path.join(directory, limit_file))
        if limit is None or limit >= V1_NO_LIMIT:
            continue
        usage = _read_int(os.path.join(directory, usage_file))
        if usage is None:
            continue
        stat = _memory_stat(os.path.join(directory, "memory.stat"))
        used = usage - min(usage, stat.get(cache, 0)) + stat.get(shared, 0)
        group_left = max(0, limit - used)
        left = group_left if left is None else min(left, group_left)
    return left


@functools.cache
def _memory_cgroup_dirs() -> tuple[tuple[str, bool], ...]:
    """(directory, is cgroup v2) of the process's memory control group and of the ancestors whose limits reach it.

    From ``/proc/self/cgroup``: v1's memory controller (``N:memory:/path``,
    maybe beside other controllers), else v2's single hierarchy
    (``0::/path``). In a container the path is usually ``/``, its own root;
    a path not mounted here (the host's name for the group) falls back to
    the hierarchy's root. In v1 an ancestor whose ``memory.use_hierarchy``
    is 0 does not limit its children, nor do its own ancestors. Found once
    per process (a process is seldom moved to another group); a forked
    child, which starts in its parent's group, inherits it.
    """
    try:
        # Group names may hold any bytes but "/" and NUL.
        with open(PROC_SELF_CGROUP, encoding="utf-8", errors="surrogateescape") as file:
            lines = file.read().splitlines()
    except (OSError, ValueError):
        return ()
    v1 = [(path, False) for hierarchy, controllers, path in _fields(lines) if "memory" in controllers.split(",")]
    v2 = [(path, True) for hierarchy, controllers, path in _fields(lines) if hierarchy == "0" and not controllers]
    for path, is_v2 in v1 + v2:
        root = CGROUP_ROOT if is_v2 else os.path.join(CGROUP_ROOT, "memory")
        parts = [part for part in path.split("/") if part]
        dirs = [os.path.join(root, *parts[:depth]) for depth in range(len(parts), -1, -1)]
        found = [directory for directory in dirs if os.path.isdir(directory)]
        if not found:
            continue
        reaching = found[:1]
        for ancestor in found[1:]:
            if not is_v2 and _read_int(os.path.join(ancestor, "memory.use_hierarchy")) == 0:
                break
            reaching.append(ancestor)
        return tuple((directory, is_v2) for directory in reaching)
    return ()


def _fields(lines: list[str]) -> list[tuple[str, str, str]]:
    """The (hierarchy, controllers, path) of each line of ``/proc/self/cgroup``."""
    fields = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        fields.append((hierarchy, controllers, path))
    return fields


def _read_int(path: str) -> int | None:
    """The integer a control-group file holds; None for ``max`` (no limit) or a file that cannot be read."""
    try:
        # os.read, not open(): a text file object costs about 10 us more, and this runs before every fit
        descriptor = os.open(path, os.O_RDONLY)
        try:
            text = os.read(descriptor, 64).strip()
        finally:
            os.close(descriptor)
        return None if text == b"max" else int(text)
    except (OSError, ValueError):
        return None


def _memory_stat(path: str) -> dict[str, int]:
    """A control group's ``memory.stat`` as {key: value}, but for lines that are not ``key value``."""
    stat = {}
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(" ")
                with contextlib.suppress(ValueError):
                    stat[key] = int(value)
    except OSError:
        pass
    return stat


def within_copy_budget(nbytes: int, available: int | None) -> bool:
    """Whether a copy of ``nbytes`` fits :data:`COPY_MEMORY_FRACTION` of ``available`` bytes; False when unknown."""
    return available is not None and nbytes <= COPY_MEMORY_FRACTION * available
