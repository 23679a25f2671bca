"""How much memory this process may still use: the budget behind `implementation="auto"` and memory limits."""

from __future__ import annotations

import os
import resource
from pathlib import Path

_FALLBACK = 4e9  # where the system reports nothing (non-Linux)


def _read_number(path: str) -> float | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return None if text in ("", "max") else float(text)


def _cgroup_room() -> float | None:
    """The cgroup's memory limit minus its current usage (cgroup v2, else v1), or None without a limit."""
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_number(limit_path)
        if limit is not None and limit < 2 ** 60:  # v1 reports "no limit" as a huge number
            return max(limit - (_read_number(usage_path) or 0.0), 0.0)
    return None


def _address_space_room() -> float | None:
    """`RLIMIT_AS` minus the address space in use (the limit `prlimit --as` and `ulimit -v` set), or None."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        status = Path(f"/proc/{os.getpid()}/status").read_text()
        used = float(status.split("VmSize:")[1].split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        used = 0.0
    return max(soft - used, 0.0)


def available_bytes() -> float:
    """The least of physical memory, the cgroup's remaining memory and the remaining address space."""
    try:
        physical = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        physical = _FALLBACK
    return min([physical] + [room for room in (_cgroup_room(), _address_space_room()) if room is not None])


def memory_budget_bytes() -> float:
    """Half of `available_bytes()`: what one kernel computation may plan to use, leaving room for the rest."""
    return 0.5 * available_bytes()
