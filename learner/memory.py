"""Handing the memory a closed period freed back to the operating system."""
from __future__ import annotations

import ctypes


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to call
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the free pages inside glibc's heap to the OS; False where there is no glibc.

    Tables and history-sized buffers grow a little every period, so the buffers a period
    frees are slightly smaller than those the next one asks for, and glibc keeps the holes
    resident: a full-scale run's memory crept up by ~0.37 GB per period (BENCHMARKS.md).
    """
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
