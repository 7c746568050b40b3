"""Any interaction log with user, item and timestamp columns: delimited text or Parquet.

Timestamps are numbers in `ts_unit` ("s", the default, or "ms"; never guessed), or text
parsed with `date_format` (a strptime format; read as UTC unless it carries a %z offset).
Delimited files need a header naming the columns, and one record per line: a quoted field
may hold the delimiter but not a line break. Parquet is read batch by batch; its "line" in
`file:line` is the 1-based row number. A Parquet timestamp or date column carries its own
unit, so ts_unit does not apply to it.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from replay_data.readers._lines import (
    CHUNK_ROWS,
    MAX_LINE_BYTES,
    MAX_SECONDS,
    Drop,
    Event,
    Parser,
    Reject,
    existing,
    progress_bar,
    read_text_file,
    text_to_seconds,
    to_seconds,
)
from replay_data.rejects import InputError, Rejects
from replay_data.typed_config import ConfigError

TS_UNITS = ("s", "ms")


@dataclass(frozen=True)
class TimeFormat:
    """How a timestamp field is written: a number in `unit`, or text in `date_format`."""

    unit: str = "s"
    date_format: str | None = None

    @classmethod
    def of(cls, ts_unit: str | None, date_format: str | None) -> TimeFormat:
        if date_format is not None and ts_unit is not None:
            raise ConfigError("give ts_unit (numeric timestamps) or date_format (text), not both")
        if ts_unit is not None and ts_unit not in TS_UNITS:
            raise ConfigError(f"ts_unit must be one of {TS_UNITS}, got {ts_unit!r}")
        return cls(ts_unit or "s", date_format)

    def seconds(self, text: str) -> int | None:
        if self.date_format is None:
            return text_to_seconds(text, self.unit)
        try:
            moment = datetime.strptime(text, self.date_format)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return to_seconds(moment.timestamp())


@dataclass(frozen=True)
class Layout:
    """Where the fields sit in a delimited line (0-based positions) and how to read them."""

    delimiter: str
    width: int
    user: int
    item: int
    ts: int
    time: TimeFormat = TimeFormat()
    score: int | None = None  # a rating column: must be a number
    min_score: float | None = None
    below_reason: str = "below_score"

    def parser(self) -> Parser:
        # Runs once per line: everything it needs is bound to locals up front. Ids are kept
        # as written (no whitespace trimming), as pandas.read_csv would.
        split, seconds = field_splitter(self.delimiter), self.time.seconds
        width, user_at, item_at, ts_at, score_at = self.width, self.user, self.item, self.ts, self.score
        check_score = self._check_score

        def parse(text: str) -> Event:
            fields = split(text)
            if len(fields) != width:
                reason = "missing_field" if len(fields) < width else "bad_value"
                raise Reject(reason, f"{len(fields)} fields, expected {width}")
            user, item = fields[user_at], fields[item_at]
            if not user or not item:
                raise Reject("missing_field", "user" if not user else "item")
            ts = seconds(fields[ts_at])
            if ts is None:
                raise Reject("bad_timestamp", repr(fields[ts_at][:40]))
            if score_at is not None:
                check_score(fields[score_at])
            return ts, user, item

        return parse

    def _check_score(self, text: str) -> None:
        try:
            score = float(text)
        except ValueError:
            raise Reject("bad_value", f"rating {text[:40]!r}") from None
        if not math.isfinite(score):
            raise Reject("bad_value", f"rating {text[:40]!r}")
        if self.min_score is not None and score < self.min_score:
            raise Drop(self.below_reason)


def field_splitter(delimiter: str) -> Callable[[str], list[str]]:
    """Split one line; plain `str.split` unless the line has quotes, which need the csv module.

    Multi-character delimiters (MovieLens "::") have no quoting convention: always split.
    """
    if len(delimiter) != 1:
        return lambda text: text.split(delimiter)

    def split(text: str) -> list[str]:
        if '"' not in text:
            return text.split(delimiter)
        try:
            return next(csv.reader([text], delimiter=delimiter), [])
        except csv.Error as error:  # e.g. a field over csv's size limit
            raise Reject("bad_value", str(error)[:80]) from None

    return split


def column_positions(header: list[str], wanted: dict[str, str]) -> dict[str, int]:
    """{role: position} of each wanted column; a ValueError lists the columns present."""
    names = [name.strip() for name in header]
    absent = [column for column in wanted.values() if column not in names]
    if absent:
        raise InputError(f"column(s) {absent} not found; the columns present are {names}")
    return {role: names.index(column) for role, column in wanted.items()}


def read_csv(
    path: str | os.PathLike,
    rejects: Rejects,
    *,
    user_col: str,
    item_col: str,
    ts_col: str,
    ts_unit: str | None = None,
    date_format: str | None = None,
    delimiter: str = ",",
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[pd.DataFrame]:
    """Stream a delimited file with a header as chunks of `ts, user, item`."""
    source = existing(path)
    time = TimeFormat.of(ts_unit, date_format)
    if len(delimiter) != 1:
        raise ConfigError(f"delimiter must be one character, got {delimiter!r}")
    wanted = {"user": user_col, "item": item_col, "ts": ts_col}

    def from_header(text: str) -> Parser:
        header = field_splitter(delimiter)(text)
        at = column_positions(header, wanted)
        return Layout(delimiter, len(header), at["user"], at["item"], at["ts"], time).parser()

    return read_text_file(
        source,
        "csv",
        rejects,
        header=from_header,
        progress=progress,
        chunk_rows=chunk_rows,
        max_line_bytes=max_line_bytes,
    )


def read_parquet(
    path: str | os.PathLike,
    rejects: Rejects,
    *,
    user_col: str,
    item_col: str,
    ts_col: str,
    ts_unit: str | None = None,
    date_format: str | None = None,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """Stream a Parquet file batch by batch as chunks of `ts, user, item`."""
    source = existing(path)
    time = TimeFormat.of(ts_unit, date_format)
    parquet = pq.ParquetFile(source)
    column_positions(parquet.schema_arrow.names, {"user": user_col, "item": item_col, "ts": ts_col})
    return _parquet_chunks(parquet, str(source), rejects, (user_col, item_col, ts_col), time, progress, chunk_rows)


def _parquet_chunks(
    parquet: pq.ParquetFile,
    name: str,
    rejects: Rejects,
    columns: tuple[str, str, str],
    time: TimeFormat,
    progress: bool,
    chunk_rows: int,
) -> Iterator[pd.DataFrame]:
    first_row = 1
    with progress_bar(parquet.metadata.num_rows, "parquet", progress, unit="rows") as bar:
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(columns)):
            users, has_user = _ids(batch.column(0))
            items, has_item = _ids(batch.column(1))
            ts, has_ts = _column_seconds(batch.column(2), time)
            has_ids = has_user & has_item
            for row in np.flatnonzero(~(has_ids & has_ts)):
                reason = "missing_field" if not has_ids[row] else "bad_timestamp"
                rejects.reject(reason, f"{name}:{first_row + row}")
            keep = has_ids & has_ts
            first_row += batch.num_rows
            bar.update(batch.num_rows)
            if keep.any():
                mask = pa.array(keep)
                yield pd.DataFrame(
                    {
                        "ts": ts[keep],
                        "user": users.filter(mask).to_pandas().astype(str),
                        "item": items.filter(mask).to_pandas().astype(str),
                    }
                )


def _ids(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Ids as trimmed text, and which rows have one (not null, not empty)."""
    text = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    present = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False)
    return text, present.to_numpy(zero_copy_only=False)


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _column_seconds(column: pa.Array, time: TimeFormat) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds per row and which rows have a usable timestamp."""
    kind = column.type
    if time.date_format is not None and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InputError(f"date_format is for text timestamps; this column holds {kind}")
    if pa.types.is_timestamp(kind) or pa.types.is_date64(kind):
        seconds = _whole(column, _PER_SECOND[getattr(kind, "unit", "ms")])
    elif pa.types.is_date32(kind):
        seconds = _whole(column, 1) * 86_400
    elif pa.types.is_integer(kind):
        seconds = _whole(column, _PER_SECOND[time.unit])
    elif pa.types.is_floating(kind):
        values = pc.fill_null(column, np.nan).to_numpy(zero_copy_only=False) / _PER_SECOND[time.unit]
        seconds = np.floor(np.where(np.isfinite(values), values, -1)).clip(-1, MAX_SECONDS + 1)
    else:  # text, or anything else written as text
        parsed = [time.seconds(str(value)) if value is not None else None for value in column.to_pylist()]
        seconds = np.array([-1 if value is None else value for value in parsed], dtype=np.int64)
    seconds = seconds.astype(np.int64)
    valid = (seconds >= 0) & (seconds <= MAX_SECONDS) & column.is_valid().to_numpy(zero_copy_only=False)
    return np.where(valid, seconds, 0), valid


def _whole(column: pa.Array, per_second: int) -> np.ndarray:
    """Integer-coded times floored to seconds; exact even for nanoseconds (no float rounding)."""
    counts = pc.fill_null(pc.cast(column, pa.int64(), safe=False), 0)
    return counts.to_numpy(zero_copy_only=False) // per_second
