"""Period schedules: the boundary timestamps that cut an event log into periods.

A schedule is an int64 array of T+1 edges in unix seconds; period t is the half-open
interval [edges[t], edges[t+1]). The last edge is exclusive too, and is placed after the
last event so that event is inside:

- `equal_count` ends at max_ts + 1;
- calendar kinds (`daily_slots`, `fixed`) end at the first grid boundary after max_ts, so
  every period is a whole slot or duration (unless `days` asks for a fixed span).

Edges never decrease. Two equal edges make an empty period, which is allowed: callers
report them with `empty_periods(period_counts(ts, edges))`. Events outside
[edges[0], edges[-1]) belong to no period (index -1).
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from replay_data.rejects import InputError
from replay_data.typed_config import ConfigError

_SLOT = re.compile(r"(\d{1,2}):(\d{2})")


def _as_ts(ts: Any) -> np.ndarray:
    arr = np.asarray(ts)
    if arr.ndim != 1:
        raise ValueError("timestamps must be a 1-D array of unix seconds")
    if arr.size == 0:
        raise InputError("cannot build a schedule from an empty log")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"timestamps must be integer unix seconds, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _int(name: str, value: Any, minimum: int | None = None) -> int:
    # bool is an int subclass; `days: true` in a config is a mistake, not 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(f"unknown time zone {tz!r} (use an IANA name like 'Europe/Oslo' or 'UTC')") from None


def _parse_slots(slots: Sequence[str]) -> list[int]:
    """'HH:MM' strings -> minutes after local midnight, strictly increasing."""
    if isinstance(slots, str) or len(slots) == 0:
        raise ConfigError(f"slots must be a non-empty list of 'HH:MM' strings, got {slots!r}")
    minutes = []
    for slot in slots:
        match = _SLOT.fullmatch(slot) if isinstance(slot, str) else None
        if match is None or int(match[1]) > 23 or int(match[2]) > 59:
            raise ConfigError(f"slot {slot!r} is not a time of day 'HH:MM' between 00:00 and 23:59")
        minutes.append(int(match[1]) * 60 + int(match[2]))
    if any(b <= a for a, b in zip(minutes, minutes[1:])):
        raise ConfigError(f"slots must be strictly increasing within the day, got {list(slots)}")
    return minutes


def _start_day(start: Any, zone: ZoneInfo) -> dt.date:
    if isinstance(start, str):
        try:
            return dt.date.fromisoformat(start)
        except ValueError:
            raise ConfigError(f"start {start!r} is not a date 'YYYY-MM-DD'") from None
    if isinstance(start, dt.date) and not isinstance(start, dt.datetime):
        return start  # YAML loads an unquoted 2017-01-01 as a date
    return dt.datetime.fromtimestamp(_int("start", start), zone).date()


def _local_to_utc(day: dt.date, minute: int, zone: ZoneInfo) -> int:
    """Unix seconds of a local wall-clock time on `day`.

    An ambiguous time (clocks set back) means its first occurrence. A time skipped by
    clocks going forward means the instant of the jump, the first moment the clock reads
    later; this keeps edges non-decreasing whatever the slots.
    """
    wall = dt.datetime(day.year, day.month, day.day, minute // 60, minute % 60)
    after_jump = int(wall.replace(tzinfo=zone).timestamp())  # fold=0: the earlier offset
    if dt.datetime.fromtimestamp(after_jump, zone).replace(tzinfo=None) == wall:
        return after_jump
    lo = int(wall.replace(tzinfo=zone, fold=1).timestamp())  # before the jump
    hi = after_jump
    while lo < hi:  # smallest instant whose local reading is past `wall`
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, zone).replace(tzinfo=None) > wall:
            hi = mid
        else:
            lo = mid + 1
    return hi


def daily_slots(
    ts: np.ndarray,
    *,
    slots: Sequence[str] = ("00:00", "10:00", "17:00"),
    tz: str = "Europe/Oslo",
    days: int | None = None,
    start: int | str | dt.date | None = None,
) -> np.ndarray:
    """Edges at the given local times of day, len(slots) periods per day.

    Each day's boundaries are converted from wall-clock time separately, so they stay at
    the same local time across DST changes (those days last 23 h or 25 h). `start` names
    the first local day (a date, 'YYYY-MM-DD', or a unix timestamp inside it); default:
    the day of the first event. `days` fixes the span to that many days (periods may then
    be empty or events fall after the end); without it the schedule runs until the first
    boundary after the last event.
    """
    ts = _as_ts(ts)
    zone = _zone(tz)
    minutes = _parse_slots(slots)
    last = int(ts.max())
    first_day = _start_day(int(ts.min()) if start is None else start, zone)
    if days is None:
        n_days = (dt.datetime.fromtimestamp(last, zone).date() - first_day).days + 1
    else:
        n_days = _int("days", days, minimum=1)
    if n_days < 1:
        raise InputError(f"start {start!r} is after the last event")
    edges = [_local_to_utc(first_day + dt.timedelta(days=d), m, zone) for d in range(n_days) for m in minutes]
    edges.append(_local_to_utc(first_day + dt.timedelta(days=n_days), minutes[0], zone))
    out = np.array(edges, dtype=np.int64)
    if days is None:
        n_before = int(np.searchsorted(out, last, side="right"))
        if n_before == 0:
            raise InputError(f"every event falls before the first slot of the start day {first_day}")
        out = out[: n_before + 1]  # drop the periods that start after the last event
    return out


def equal_count(ts_sorted: np.ndarray, n_periods: int = 40) -> np.ndarray:
    """Edges giving n_periods periods of (nearly) equal event counts.

    The ideal cut before period k is at index k*n // n_periods. A cut that falls inside a
    run of equal timestamps moves forward to the end of the run (the next timestamp
    change), so the whole run stays in the earlier period. Each cut is placed from its
    ideal index, so moves never accumulate. Heavy ties therefore give uneven or empty
    periods; fewer events than periods gives empty ones.
    """
    ts = _as_ts(ts_sorted)
    n_periods = _int("n_periods", n_periods, minimum=1)
    if np.any(ts[1:] < ts[:-1]):
        raise ValueError("equal_count needs timestamps sorted ascending")
    n = ts.size
    cuts = np.arange(1, n_periods, dtype=np.int64) * n // n_periods
    # the period before a cut runs through the timestamp of its last ideal event
    next_change = np.searchsorted(ts, ts[np.maximum(cuts - 1, 0)], side="right")
    inner = np.where(next_change < n, ts[np.minimum(next_change, n - 1)], ts[-1] + 1)
    inner = np.where(cuts == 0, ts[0], inner)  # only when n < n_periods: leading empty periods
    return np.concatenate(([ts[0]], inner, [ts[-1] + 1])).astype(np.int64)


def fixed(ts: np.ndarray, *, duration_s: int, start: int | None = None) -> np.ndarray:
    """Edges every duration_s seconds from start (default: the first event)."""
    ts = _as_ts(ts)
    duration = _int("duration_s", duration_s, minimum=1)
    last = int(ts.max())
    origin = int(ts.min()) if start is None else _int("start", start)
    if origin > last:
        raise InputError(f"start {origin} is after the last event {last}")
    n = (last - origin) // duration + 1
    return origin + duration * np.arange(n + 1, dtype=np.int64)


# The version of the algorithms that cut a log into periods (the schedule builders and the
# bulk rule): bump it whenever the same log and options would be cut differently, so that
# prepared logs cut by the older algorithm are rebuilt (replay_data/prepared.py). 2: the bulk rule.
SCHEDULE_VERSION = 2

BULK_TRIM = 0.01  # the bulk of a log: its event times from rank 1% to rank 99%
MIN_MARGIN_S = 86_400
BULK_RULE = (
    "the bulk is the event times from rank 1% to rank 99%; events more than the bulk's "
    "own length (at least a day) before or after it are time outliers"
)


def bulk(ts_sorted: np.ndarray) -> tuple[int, int]:
    """The [first, last] time an event may have without being a time outlier (BULK_RULE).

    Schedules are built on the events inside, so one stray record dated 1970 or 9999 can
    neither move a schedule's start nor stretch its last period."""
    ts = _as_ts(ts_sorted)
    n = ts.size
    k = min(int(np.ceil(BULK_TRIM * n)), (n - 1) // 2)
    lo, hi = int(ts[k]), int(ts[n - 1 - k])
    margin = max(hi - lo, MIN_MARGIN_S)
    return lo - margin, hi + margin


def period_index(ts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Period of each timestamp, -1 outside [edges[0], edges[-1])."""
    edges = np.asarray(edges, dtype=np.int64)
    # side="right" skips empty periods [e, e): an event at e belongs to the next real one
    idx = np.searchsorted(edges, np.asarray(ts, dtype=np.int64), side="right") - 1
    idx[idx == edges.size - 1] = -1
    return idx


def period_counts(ts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Events per period (length T); events outside the schedule are not counted."""
    idx = period_index(ts, edges)
    return np.bincount(idx[idx >= 0], minlength=len(edges) - 1).astype(np.int64)


def empty_periods(counts: np.ndarray) -> list[int]:
    """Indices of periods without events, for reporting."""
    return [int(i) for i in np.flatnonzero(np.asarray(counts) == 0)]


_BUILDERS: dict[str, Callable[..., np.ndarray]] = {
    "daily_slots": daily_slots,
    "equal_count": equal_count,
    "fixed": fixed,
}
KINDS = tuple(_BUILDERS)


def _json_value(value: Any) -> Any:
    # params go into the JSON manifest and must compare equal after a round trip
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass(frozen=True, eq=False)
class Schedule:
    """A built schedule: how it was made (kind, resolved params) and its edges."""

    kind: str
    params: dict[str, Any]
    edges: np.ndarray

    def __post_init__(self) -> None:
        if self.kind not in _BUILDERS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        edges = np.array(self.edges, dtype=np.int64)  # own read-only copy: frozen means frozen
        if edges.ndim != 1 or edges.size < 2:
            raise ValueError("a schedule needs at least two edges (one period)")
        if np.any(edges[1:] < edges[:-1]):
            raise ValueError("schedule edges must not decrease")
        edges.flags.writeable = False
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "params", dict(self.params))

    @property
    def n_periods(self) -> int:
        return self.edges.size - 1

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return self.kind == other.kind and self.params == other.params and np.array_equal(self.edges, other.edges)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": dict(self.params), "edges": self.edges.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        missing = {"kind", "params", "edges"} - set(data)
        if missing:
            raise ValueError(f"schedule is missing key(s) {sorted(missing)}")
        return cls(data["kind"], data["params"], data["edges"])


def build_schedule(kind: str, ts_sorted: np.ndarray, **params: Any) -> Schedule:
    """Build a schedule of `kind` over the log's timestamps; params as the kind's builder."""
    builder, signature, allowed = check_schedule(kind, params)
    edges = builder(ts_sorted, **params)
    resolved = {name: _json_value(params.get(name, signature.parameters[name].default)) for name in allowed}
    return Schedule(kind, resolved, edges)


def check_schedule(kind: str, params: dict[str, Any]) -> tuple[Callable[..., np.ndarray], inspect.Signature, list[str]]:
    """Check the kind and the parameter names (not their values, which need the log)."""
    if kind not in _BUILDERS:
        raise ConfigError(f"unknown schedule kind {kind!r}; allowed: {', '.join(KINDS)}")
    builder = _BUILDERS[kind]
    signature = inspect.signature(builder)
    allowed = list(signature.parameters)[1:]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown} for schedule kind {kind!r}; allowed: {allowed}")
    missing = [
        name for name in allowed if signature.parameters[name].default is inspect.Parameter.empty and name not in params
    ]
    if missing:
        raise ConfigError(f"schedule kind {kind!r} needs parameter(s) {missing}")
    return builder, signature, allowed
