"""Growing id vocabularies and the deterministic initial embedding rows of new ids."""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class Vocabulary:
    """Raw string id -> dense row index, growing in first-appearance order."""

    def __init__(self, ids: list[str] | None = None) -> None:
        self.ids: list[str] = []
        self._index: dict[str, int] = {}
        if ids:
            self.register(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def register(self, raw_ids) -> list[str]:
        """Add ids not seen before, in the given order; return the new ones."""
        new = []
        index = self._index
        for raw in raw_ids:
            if raw not in index:
                index[raw] = len(self.ids)
                self.ids.append(raw)
                new.append(raw)
        return new

    def lookup(self, raw_ids) -> np.ndarray:
        """Row indices of known ids (a KeyError names the first unknown one)."""
        index = self._index
        return np.fromiter((index[r] for r in raw_ids), dtype=np.int64, count=len(raw_ids))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def id_keys(raw_ids: list[str], namespace: str) -> np.ndarray:
    """A stable 64-bit key per raw id (blake2b), independent of the Python hash seed."""
    prefix = namespace.encode() + b"\x00"
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(prefix + r.encode(), digest_size=8).digest(), "little") for r in raw_ids),
        dtype=np.uint64,
        count=len(raw_ids),
    )


def initial_rows(raw_ids: list[str], namespace: str, seed: int, dim: int, std: float) -> np.ndarray:
    """N(0, std^2) rows that depend only on (seed, namespace, raw id).

    Counter-based (splitmix64 + Box-Muller), so a row never depends on arrival order,
    partitioning or how many other ids were registered before it.
    """
    n = len(raw_ids)
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    seed_key = _splitmix64(np.array([seed & (2**64 - 1)], dtype=np.uint64))[0]
    base = _splitmix64(id_keys(raw_ids, namespace) ^ seed_key)
    with np.errstate(over="ignore"):
        counters = base[:, None] + np.arange(1, 2 * dim + 1, dtype=np.uint64)[None, :] * _GOLDEN
    bits = _splitmix64(counters) >> np.uint64(11)  # 53 random bits
    uniform = (bits.astype(np.float64) + 0.5) / float(2**53)  # in (0, 1)
    u1, u2 = uniform[:, :dim], uniform[:, dim:]
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return (normal * std).astype(np.float32)
