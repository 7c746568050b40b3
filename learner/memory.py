"""The learner process's memory: reading it, and handing what a closed period freed back to
the operating system."""

from __future__ import annotations

import ctypes
import gc
import math
import os
import resource
import sys
from pathlib import Path


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to call
        return None


_MALLOC_TRIM = _malloc_trim()
# where a container's memory limit is: cgroup v2, then v1 ("max" or a huge number: none)
_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def release_free_memory() -> bool:
    """Free the cyclic garbage, then return the free pages inside glibc's heap to the OS;
    False where there is no glibc (the garbage is still freed).

    Python runs a full collection only when the long-lived objects have grown by a quarter,
    which with a large vocabulary is rarely: meanwhile cycles such as kafka-python's timed-out
    fetches, which keep their fetched responses, piled up to 4.3 GB over four periods of the
    full-scale Adressa-shaped Kafka replay. And tables and history-sized buffers grow a
    little every period, so the buffers a period frees are slightly smaller than those the
    next one asks for, and glibc keeps the holes resident: a full-scale run's memory crept
    up by ~0.37 GB per period (BENCHMARKS.md).
    """
    gc.collect()
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def resident_bytes() -> float:
    """The process's resident set now; NaN where there is no /proc (macOS)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return math.nan


def peak_resident_bytes() -> float:
    """The process's largest resident set so far. A scrape every few seconds misses the
    peak of a phase that lasts one (a retrain's working set); the kernel's high-water mark
    does not."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def memory_limit_bytes() -> float:
    """What the process may hold before it is killed: the machine's memory, or its container's
    limit where that is lower; NaN where neither can be read."""
    try:
        limit = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        limit = math.nan
    for path in _CGROUP_LIMITS:
        try:
            cgroup = float(path.read_text().strip())
        except (OSError, ValueError):  # absent, or "max"
            continue
        limit = cgroup if math.isnan(limit) else min(limit, cgroup)
    return limit
