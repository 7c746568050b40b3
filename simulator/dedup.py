"""Which producer records were already ingested, so that only true re-sends are dropped.

The producer stamps every events record with the log row of its first event
(wire.ROW_HEADER). A resumed producer sends its last blocks again, byte for byte (blocks
depend on the log alone), so a record is a duplicate only when a record with the same
partition, row *and bytes* was ingested before. Nothing else in a record can make the
learner drop another one: a stray record neither takes a genuine record's place nor moves
a high-water mark past the genuine records still to come. Rows reach the ledger only after
simulator.admission has checked them against the run manifest.
"""

from __future__ import annotations

import hashlib


class RowLedger:
    def __init__(self) -> None:
        self._seen: set[bytes] = set()  # digests of (partition, row, value) ingested

    def first_time(self, partition: int, row: int, value: bytes) -> bool:
        """Whether this events record is new; records it as seen."""
        # SHA-256 (hardware-accelerated on current CPUs: about twice blake2b's speed here)
        digest = hashlib.sha256(b"%d:%d:" % (partition, row) + value).digest()[:16]
        if digest in self._seen:
            return False
        self._seen.add(digest)
        return True

    def state_dict(self) -> list[bytes]:
        return sorted(self._seen)

    def load_state_dict(self, state: list[bytes]) -> None:
        self._seen = set(state)
