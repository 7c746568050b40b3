"""Handing the memory a closed period freed back to the operating system."""

from __future__ import annotations

import ctypes
import gc


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to call
        return None


_MALLOC_TRIM = _malloc_trim()


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
