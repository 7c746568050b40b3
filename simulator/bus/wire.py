"""The wire format of rtsim's topics (docs/architecture.md, "Bus: wire format and topics"): names, headers, values.

`events` records carry one JSON object {"ts", "user", "item"} or an array of up to 1,000;
`watermark` records {"ts": T} promise that every event with ts < T has been sent to that
partition; `end` says the log is exhausted. Raw string ids travel, never codes.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import numpy as np
import orjson

FORMAT = "1"
TYPE_HEADER = "rtsim-type"
FORMAT_HEADER = "rtsim-format"
# on events records: the log row of the record's first event, so a consumer can drop the
# records a resumed producer sends again
ROW_HEADER = "rtsim-row"
# on events, watermark and end records: the producer identity the run manifest announces
PRODUCER_HEADER = "rtsim-producer"
EVENTS, WATERMARK, END = "events", "watermark", "end"
MAX_EVENTS_PER_RECORD = 1000
_TS_LIMIT = 2**62  # |ts| below it: seconds far beyond any log, and safe in int64 arithmetic


def events_topic(prefix: str, run_id: str) -> str:
    return f"{prefix}.events.{run_id}"


def runs_topic(prefix: str) -> str:
    return f"{prefix}.runs"


def results_topic(prefix: str) -> str:
    return f"{prefix}.results"


def deadletter_topic(prefix: str) -> str:
    return f"{prefix}.deadletter"


def control_topic(prefix: str) -> str:
    return f"{prefix}.control"


def headers(kind: str, row: int | None = None, producer: str | None = None) -> dict[str, str]:
    out = {TYPE_HEADER: kind, FORMAT_HEADER: FORMAT}
    if row is not None:
        out[ROW_HEADER] = str(row)
    if producer is not None:
        out[PRODUCER_HEADER] = producer
    return out


def partition_for(user: str, partitions: int) -> int:
    """Records are keyed by user; the partition is a stable hash, the same on every bus."""
    return zlib.crc32(user.encode()) % partitions


def encode_events(ts: np.ndarray, users: list[str], items: list[str]) -> bytes:
    events = [{"ts": int(t), "user": u, "item": i} for t, u, i in zip(ts, users, items)]
    return json.dumps(events[0] if len(events) == 1 else events, separators=(",", ":")).encode()


def encode_watermark(ts: int) -> bytes:
    return json.dumps({"ts": int(ts)}).encode()


class DecodeError(ValueError):
    """A record that cannot be ingested; `reason` is a stable label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    kind: str
    ts: np.ndarray  # events: event times; watermark: one value; end: empty
    users: list[str]
    items: list[str]


def decode(record_headers: dict[str, str], value: bytes) -> Decoded:
    """Validate and decode one record; raises DecodeError with a reason label."""
    fmt = record_headers.get(FORMAT_HEADER)
    if fmt != FORMAT:
        raise DecodeError("bad_format", f"{FORMAT_HEADER}={fmt!r}, this learner reads format {FORMAT}")
    kind = record_headers.get(TYPE_HEADER)
    if kind == END:
        return Decoded(END, np.zeros(0, np.int64), [], [])
    if kind not in (EVENTS, WATERMARK):
        raise DecodeError("bad_type", f"{TYPE_HEADER}={kind!r}")
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError as utf8_err:
            raise DecodeError("not_utf8", str(utf8_err)) from None
        raise DecodeError("bad_json", str(err)) from None
    if kind == WATERMARK:
        if not isinstance(payload, dict):
            raise DecodeError("bad_shape", 'a watermark is an object {"ts": ...}')
        return Decoded(WATERMARK, np.array([_ts(payload)], np.int64), [], [])
    if type(payload) is dict:  # a single event, the common small record: no columns to build
        ts, user, item = payload.get("ts"), payload.get("user"), payload.get("item")
        if (
            type(ts) is int
            and -_TS_LIMIT < ts < _TS_LIMIT
            and type(user) is str
            and user
            and type(item) is str
            and item
        ):
            return Decoded(EVENTS, np.array([ts], np.int64), [user], [item])
        return _decode_checked([payload])
    if type(payload) is not list or not 0 < len(payload) <= MAX_EVENTS_PER_RECORD:
        return _decode_checked(payload if isinstance(payload, list) else [payload])
    # Columns first, then whole-column checks (a bad record takes _decode_checked, which
    # finds the first bad event and says what is wrong with it): far cheaper than
    # checking every field of every event in Python.
    try:
        ts = [event["ts"] for event in payload]
        users = [event["user"] for event in payload]
        items = [event["item"] for event in payload]
        "".join(users)  # TypeError unless every id is a str
        "".join(items)
    except (KeyError, TypeError):
        return _decode_checked(payload)
    if not (all(users) and all(items)) or set(map(type, ts)) != {int}:  # empty ids; float or bool ts
        return _decode_checked(payload)
    try:
        column = np.fromiter(ts, np.int64, len(ts))
    except OverflowError:
        return _decode_checked(payload)
    if column.min() <= -_TS_LIMIT or column.max() >= _TS_LIMIT:
        return _decode_checked(payload)
    return Decoded(EVENTS, column, users, items)


def _decode_checked(events: list) -> Decoded:
    """Events checked one at a time, so that the error names the first bad one."""
    if not events or len(events) > MAX_EVENTS_PER_RECORD:
        raise DecodeError("bad_shape", f"{len(events)} events in one record (1 to {MAX_EVENTS_PER_RECORD} allowed)")
    ts, users, items = [], [], []
    for event in events:
        if not isinstance(event, dict):
            raise DecodeError("bad_shape", f"an event is an object, got {type(event).__name__}")
        user, item = event.get("user"), event.get("item")
        if not isinstance(user, str) or not isinstance(item, str) or not user or not item:
            raise DecodeError("missing_field", f"user and item must be non-empty strings in {event!r:.200}")
        ts.append(_ts(event))
        users.append(user)
        items.append(item)
    return Decoded(EVENTS, np.array(ts, np.int64), users, items)


def _ts(obj: dict) -> int:
    value = obj.get("ts")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise DecodeError("bad_timestamp", f"ts must be unix seconds, got {value!r:.100}")
    if isinstance(value, float) and not value.is_integer():
        raise DecodeError("bad_timestamp", f"ts must be whole seconds, got {value!r}")
    if not -_TS_LIMIT < value < _TS_LIMIT:
        raise DecodeError("bad_timestamp", f"ts out of range: {value!r}")
    return int(value)
