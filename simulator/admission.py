"""What the learner believes of a record's headers: no more than the run manifest allows.

Headers are claims. The manifest (ReplayProducer.manifest) bounds them: every events,
watermark and end record must carry the run's producer identity (wire.PRODUCER_HEADER); an
events record's row (wire.ROW_HEADER) must fit its partition's row range with all its
events; a watermark may not promise beyond the producer's last one (`end_watermark`); and a
partition may end only once that last watermark has reached it, which the producer sends
after every event of the partition. A record outside these bounds raises DecodeError with
the reason, so it is counted and dead-lettered like any bad record, and nothing it claims
reaches the windows or the duplicate ledger.

This stops strays (another run, an older or differently configured producer, a mistyped
header), not an adversary: the identity is announced in the clear on the runs topic.
"""

from __future__ import annotations

from simulator.bus import BusError, wire

_MAX_ROW_DIGITS = 19  # int64


class Admission:
    def __init__(self, manifest: dict) -> None:
        missing = [key for key in ("producer", "partition_rows", "end_watermark") if key not in manifest]
        if missing:
            raise BusError(
                f"the manifest of run {manifest.get('run_id')!r} has no {', '.join(missing)}: it was announced "
                "by an older rtsim producer; replay the run with this version under a new --run-id"
            )
        self.producer = str(manifest["producer"])
        self.partition_rows = [(int(lo), int(hi)) for lo, hi in manifest["partition_rows"]]
        self.end_watermark = int(manifest["end_watermark"])

    def check_producer(self, headers: dict[str, str]) -> None:
        claimed = headers.get(wire.PRODUCER_HEADER)
        if claimed != self.producer:
            raise wire.DecodeError(
                "foreign_producer",
                f"{wire.PRODUCER_HEADER}={claimed!r:.50}, but this run's producer is {self.producer!r}",
            )

    def row(self, partition: int, headers: dict[str, str], n_events: int) -> int:
        """The record's first row, checked: its n_events distinct rows all lie in the partition's range."""
        raw = headers.get(wire.ROW_HEADER)
        # ASCII digits only: int() would also take "+1", " 1", "1_0" and other digits
        if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw) > _MAX_ROW_DIGITS:
            raise wire.DecodeError("bad_row", f"{wire.ROW_HEADER}={raw!r:.50} is not a row number")
        row = int(raw)
        lo, hi = self.partition_rows[partition] if partition < len(self.partition_rows) else (0, 0)
        if not lo <= row <= hi - n_events:
            raise wire.DecodeError(
                "bad_row",
                f"{wire.ROW_HEADER}={row} with {n_events} events is outside partition {partition}'s rows {lo}..{hi - 1}",
            )
        return row

    def check_watermark(self, ts: int) -> None:
        if ts > self.end_watermark:
            raise wire.DecodeError(
                "bad_watermark", f"watermark {ts} is beyond the producer's last one, {self.end_watermark}"
            )

    def check_end(self, partition: int, watermark: int) -> None:
        """`watermark`: the partition's watermark so far."""
        if watermark < self.end_watermark:
            raise wire.DecodeError(
                "early_end",
                f"end marker on partition {partition} before its last watermark ({watermark} < {self.end_watermark})",
            )
