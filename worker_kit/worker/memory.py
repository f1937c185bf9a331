"""The resident memory (RSS) of a process, for the memory guard (WORKER_KIT_MAX_RSS_MB).

Linux reads /proc/PID/statm (the current RSS, which can go down again); elsewhere only the
own process can be measured, by its peak RSS (getrusage), which never goes down.
"""

from __future__ import annotations

import os
import resource
import sys

MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | None = None) -> int | None:
    """The RSS of `pid` (default: this process) in bytes, or None if it cannot be read
    (the process is gone, or another process's memory on a system without /proc)."""
    try:
        with open(f"/proc/{pid or 'self'}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        pass
    if pid is not None and pid != os.getpid():
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def over_cap(pid: int | None, cap_mb: float | None) -> int | None:
    """The RSS in bytes when it is over `cap_mb` megabytes, else None (no cap, or unreadable)."""
    if cap_mb is None:
        return None
    rss = rss_bytes(pid)
    return rss if rss is not None and rss > cap_mb * MB else None
