"""Which producer records were already ingested, so that only true re-sends are dropped.

The producer stamps every events record with the log row of its first event
(wire.ROW_HEADER). A resumed producer sends its last blocks again, byte for byte (blocks
depend on the log alone), so a record is a duplicate only when a record with the same
partition, row *and bytes* was ingested before. Nothing else in a record can make the
learner drop another one: a forged or stray record neither takes a genuine record's place
nor moves a high-water mark past the genuine records still to come. Row numbers the run
manifest cannot hold (outside 0..n_events) are rejected, never trusted.
"""

from __future__ import annotations

import hashlib

from simulator.bus import Message, wire


class RowLedger:
    def __init__(self, n_events: int) -> None:
        self.n_events = n_events
        self._seen: set[bytes] = set()  # digests of (partition, row, value) ingested

    def first_time(self, message: Message, n_events: int) -> bool:
        """Whether this events record is new; records it as seen. Raises DecodeError for a
        row header the manifest cannot hold. Records without the header are always new."""
        raw = message.headers.get(wire.ROW_HEADER)
        if raw is None:
            return True
        row = self._row(raw, n_events)
        # SHA-256 (hardware-accelerated on current CPUs: about twice blake2b's speed here)
        digest = hashlib.sha256(b"%d:%d:" % (message.partition, row) + message.value).digest()[:16]
        if digest in self._seen:
            return False
        self._seen.add(digest)
        return True

    def _row(self, raw: str, n_events: int) -> int:
        # ASCII digits only: int() would also take "+1", " 1", "1_0" and other digits
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
            raise wire.DecodeError("bad_row", f"{wire.ROW_HEADER}={raw!r:.50} is not a row number")
        row = int(raw)
        if row + n_events > self.n_events:
            raise wire.DecodeError(
                "bad_row", f"{wire.ROW_HEADER}={row} with {n_events} events is beyond the run's {self.n_events} events"
            )
        return row

    def state_dict(self) -> list[bytes]:
        return sorted(self._seen)

    def load_state_dict(self, state: list[bytes]) -> None:
        self._seen = set(state)
