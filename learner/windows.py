"""Period windows cut by event time from a partitioned stream.

Events are buffered in the period their timestamp falls in. Period t closes once every
partition's watermark has passed its end (or every partition has ended), so a quiet
partition never stalls the stream. An event older than the open period is late: it is
folded into the open period and counted, never dropped silently.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class WindowStats:
    consumed: int = 0
    late: int = 0
    outside: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class _Buffer:
    """The events of one open period: timestamp chunks, joined when it closes, and ids."""

    ts: list[np.ndarray] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)


class PeriodWindows:
    def __init__(self, edges: np.ndarray, partitions: int) -> None:
        self.edges = np.asarray(edges, dtype=np.int64)
        self.n_periods = len(self.edges) - 1
        self.open = 0  # the oldest period not yet closed
        self.watermarks = np.full(partitions, np.iinfo(np.int64).min, dtype=np.int64)
        self.ended = np.zeros(partitions, dtype=bool)
        self._edge_list = self.edges.tolist()  # bisect on Python ints: no numpy call per record
        self._buffers: dict[int, _Buffer] = {}
        # per open period and partition: the first offset of a record that fed it, so a
        # committed position never skips an event of an unclosed period
        self._first_offsets: dict[int, dict[int, int]] = defaultdict(dict)
        self.stats = WindowStats()

    def add(self, partition: int, offset: int, ts: np.ndarray, users: list[str], items: list[str]) -> None:
        n = len(ts)
        if n == 0:
            return
        # The common case, a record whose events all fall in one period of the schedule:
        # its columns go to that period whole, without per-event work.
        if n == 1:
            first = last = int(ts[0])
        else:
            first, last = int(ts.min()), int(ts.max())
        t = bisect_right(self._edge_list, first) - 1
        if t == bisect_right(self._edge_list, last) - 1 and 0 <= t < self.n_periods:
            if t < self.open:
                self.stats.late += n
                t = self.open
            self.stats.consumed += n
            self._buffer(t, partition, offset, ts, users, items)
            return
        period = np.searchsorted(self.edges, ts, side="right") - 1
        before, after = period < 0, period >= self.n_periods
        self.stats.outside["before_schedule"] += int(before.sum())
        self.stats.outside["after_schedule"] += int(after.sum())
        late = (period >= 0) & (period < self.open)
        self.stats.late += int(late.sum())
        period = np.where(late, self.open, period)
        keep = ~before & ~after
        self.stats.consumed += int(keep.sum())
        for t in np.unique(period[keep]):
            rows = np.flatnonzero(keep & (period == t))
            self._buffer(int(t), partition, offset, ts[rows], [users[r] for r in rows], [items[r] for r in rows])

    def _buffer(self, t: int, partition: int, offset: int, ts: np.ndarray, users: list[str], items: list[str]) -> None:
        buffer = self._buffers.get(t)
        if buffer is None:
            buffer = self._buffers[t] = _Buffer()
        buffer.ts.append(ts)
        buffer.users.extend(users)
        buffer.items.extend(items)
        offsets = self._first_offsets[t]
        if partition not in offsets:
            offsets[partition] = offset

    def watermark(self, partition: int, ts: int) -> None:
        self.watermarks[partition] = max(self.watermarks[partition], ts)

    def end(self, partition: int) -> None:
        self.ended[partition] = True

    @property
    def finished(self) -> bool:
        return self.open >= self.n_periods

    def pop_closed(self) -> tuple[int, pd.DataFrame] | None:
        """The oldest period if it can close now, as (t, events with raw ids), else None.

        One at a time: the caller processes (and may checkpoint) each period before the
        next one leaves the windows, so a checkpoint never counts a period as closed that
        the engine has not seen."""
        if self.finished or not self._closable(self.open):
            return None
        t = self.open
        buffer = self._buffers.pop(t, None) or _Buffer()
        self._first_offsets.pop(t, None)
        self.open += 1
        return t, pd.DataFrame(
            {
                "ts": np.concatenate(buffer.ts) if buffer.ts else np.zeros(0, np.int64),
                "user": buffer.users,
                "item": buffer.items,
            }
        )

    def _closable(self, t: int) -> bool:
        end = self.edges[t + 1]
        return bool(np.all(self.ended | (self.watermarks >= end)))

    def safe_positions(self, positions: dict[int, int]) -> dict[int, int]:
        """Positions that are safe to commit: before any record feeding an open period."""
        safe = dict(positions)
        for offsets in self._first_offsets.values():
            for partition, offset in offsets.items():
                safe[partition] = min(safe.get(partition, offset), offset)
        return safe

    def refill(self, partition: int, offset: int, ts: np.ndarray, users: list[str], items: list[str]) -> None:
        """Events re-read after a resume: those of still-open periods are buffered again;
        they were counted before the checkpoint, so no statistic moves."""
        period = np.searchsorted(self.edges, ts, side="right") - 1
        keep = (period >= self.open) & (period < self.n_periods)
        for t in np.unique(period[keep]):
            rows = np.flatnonzero(keep & (period == t))
            self._buffer(int(t), partition, offset, ts[rows], [users[r] for r in rows], [items[r] for r in rows])

    def state_dict(self) -> dict:
        """Progress and counts; buffered events are not kept: they are re-read from the bus."""
        return {
            "open": self.open,
            "watermarks": self.watermarks.tolist(),
            "ended": self.ended.tolist(),
            "consumed": self.stats.consumed,
            "late": self.stats.late,
            "outside": dict(self.stats.outside),
        }

    def load_state_dict(self, state: dict) -> None:
        self.open = int(state["open"])
        self.watermarks = np.array(state["watermarks"], dtype=np.int64)
        self.ended = np.array(state["ended"], dtype=bool)
        self.stats.consumed, self.stats.late = int(state["consumed"]), int(state["late"])
        self.stats.outside.update(state["outside"])
