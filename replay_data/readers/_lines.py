"""What every reader shares: counted opening, bounded line iteration, record -> chunk building.

A reader turns each raw line into an event tuple `(ts, user, item[, event_id])` with a
small `parse(text)` function. That function raises `Reject` for a malformed record and
`Drop` for one left out by design; `parse_lines` counts both in `Rejects` with the line's
`file:line`, and `to_chunks` packs the surviving tuples into DataFrames of bounded size.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import math
import os
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
from tqdm import tqdm

from replay_data.rejects import InputError, MalformedInputError, MissingInputError, Rejects
from replay_data.typed_config import ConfigError

MAX_LINE_BYTES = 16 * 2**20
CHUNK_ROWS = 200_000
# Latest second that datetime can represent (9999-12-31T23:59:59Z). Milliseconds read as
# seconds land far beyond it, so a wrong unit shows up as bad_timestamp, not year 55000.
MAX_SECONDS = 253_402_300_799
_BLOCK_BYTES = 2**20
EVENT_COLUMNS = ("ts", "user", "item")
EVENT_ID_COLUMNS = ("ts", "user", "item", "event_id")

Event = tuple  # (ts, user, item) or (ts, user, item, event_id)


class Reject(Exception):
    """A malformed record: counted with `rejects.reject` (fatal in strict mode)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class Drop(Exception):
    """A well-formed record left out on purpose (a filter): counted, never fatal."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- opening and progress ---------------------------------------------------------------


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool, unit: str = "B") -> Iterator[tqdm]:
    """A bar over bytes read; `disable=None` lets tqdm hide it when stderr is not a TTY."""
    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        unit_divisor=1024,
        disable=None if enabled else True,
        leave=False,
    )
    try:
        yield bar
    finally:
        bar.close()


class _Counted(io.RawIOBase):
    """Reports every raw read to the bar, so progress counts bytes on disk (compressed or not)."""

    def __init__(self, raw: BinaryIO, bar: tqdm) -> None:
        self._raw = raw
        self._bar = bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self._bar.update(n)
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


@contextmanager
def readable(path: Path) -> Iterator[None]:
    """A truncated or corrupt archive only shows while it is read, deep in a reader: say
    which file it is and what to do, in one line."""
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile, tarfile.TarError) as err:
        raise MalformedInputError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {err}); copy or download it again"
        ) from None


@contextmanager
def open_counted(path: Path, bar: tqdm, decompress: bool = True) -> Iterator[BinaryIO]:
    """Open `path` for binary reading; `.gz` files are decompressed on the fly unless told not to."""
    stream = io.BufferedReader(_Counted(open(path, "rb", buffering=0), bar), buffer_size=2**20)
    try:
        if decompress and path.name.endswith(".gz"):
            with readable(path), gzip.GzipFile(fileobj=stream) as unzipped:
                yield unzipped
        else:
            yield stream
    finally:
        stream.close()


def file_size(path: Path) -> int:
    return os.stat(path).st_size


def existing(path: str | os.PathLike) -> Path:
    """Fail at call time, not at the first chunk, when the input is not there."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"input not found: {path}")
    return path


# -- lines ------------------------------------------------------------------------------


def iter_lines(
    stream: BinaryIO, name: str, rejects: Rejects, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, str]]:
    """Yield (line number, text without its line break) for every non-empty line.

    Reads fixed-size blocks and keeps at most `max_line_bytes` of an unfinished line, so an
    over-long line is rejected ("line_too_long") without ever being held in memory whole.
    Lines that are not UTF-8 are rejected ("not_utf8") one by one, not the whole file.
    """
    lineno = 0
    pending = b""  # the unfinished last line of the blocks read so far
    too_long = False  # the unfinished line is already over the limit; its bytes are dropped
    # the first read is long enough to hold a whole byte-order mark, which json.loads refuses
    head = stream.read(max(_BLOCK_BYTES, len(codecs.BOM_UTF8))).removeprefix(codecs.BOM_UTF8)
    blocks = chain([head], iter(partial(stream.read, _BLOCK_BYTES), b""), [None])
    for block in blocks:
        if block is None:  # end of input: the unfinished line, if any, is the last line
            lines = [pending] if pending or too_long else []
        else:
            lines = block.split(b"\n")
            lines[0] = pending + lines[0]
            pending = lines.pop()
        for raw in lines:
            lineno += 1
            if too_long or len(raw) > max_line_bytes:
                too_long = False
                rejects.reject("line_too_long", f"{name}:{lineno}", f"over {max_line_bytes} bytes")
                continue
            raw = raw.rstrip(b"\r")
            if not raw:
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                rejects.reject("not_utf8", f"{name}:{lineno}", f"byte {error.start}")
                continue
            yield lineno, text
        if too_long or len(pending) > max_line_bytes:
            too_long, pending = True, b""


def parse_lines(
    lines: Iterable[tuple[int, str]], name: str, parse: Callable[[str], Event], rejects: Rejects
) -> Iterator[Event]:
    """Apply `parse` to every line, counting rejected and dropped records by reason."""
    for lineno, text in lines:
        try:
            event = parse(text)
        except Reject as bad:
            rejects.reject(bad.reason, f"{name}:{lineno}", bad.detail)
            continue
        except Drop as dropped:
            rejects.drop(dropped.reason)
            continue
        yield event


# -- field helpers ----------------------------------------------------------------------


def to_seconds(value: Any, unit: str = "s") -> int | None:
    """Whole unix seconds from an int or float in `unit` ("s" or "ms"); None if unusable."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    seconds = math.floor(value // 1000 if unit == "ms" else value)
    return seconds if 0 <= seconds <= MAX_SECONDS else None


def text_to_seconds(text: str, unit: str = "s") -> int | None:
    """Like `to_seconds` for a number written as text ("1483225203", "1.5e9")."""
    try:
        value: int | float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return None
    else:
        if unit == "s":  # the common case, kept short: it runs once per line
            return value if 0 <= value <= MAX_SECONDS else None
    return to_seconds(value, unit)


def load_object(text: str) -> dict:
    """One JSON object per line; anything else is "bad_json"."""
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise Reject("bad_json", str(error)[:80]) from None
    if not isinstance(record, dict):
        raise Reject("bad_json", f"a JSON {type(record).__name__}, not an object")
    return record


def id_field(record: dict, key: str) -> str:
    """A raw id as text: strings as they are, integers written out; absent or empty is missing."""
    value = record.get(key)
    if value is None or value == "":
        raise Reject("missing_field", key)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise Reject("bad_value", f"{key} is a {type(value).__name__}")


def optional_id(record: dict, key: str) -> str | None:
    """An id that only helps (e.g. for exact dedup downstream): unusable values become None."""
    try:
        return id_field(record, key)
    except Reject:
        return None


def number_field(record: dict, key: str) -> float:
    value = record.get(key)
    if value is None:
        raise Reject("missing_field", key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Reject("bad_value", f"{key}={str(value)[:40]!r}")
    return value


# -- chunks -----------------------------------------------------------------------------


def to_chunks(
    events: Iterable[Event], columns: tuple[str, ...] = EVENT_COLUMNS, chunk_rows: int = CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """Pack event tuples into DataFrames of at most `chunk_rows` rows, in arrival order."""
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be at least 1, got {chunk_rows}")
    batch: list[Event] = []
    for event in events:
        batch.append(event)
        if len(batch) >= chunk_rows:
            yield _frame(batch, columns)
            batch = []
    if batch:
        yield _frame(batch, columns)


def _frame(batch: list[Event], columns: tuple[str, ...]) -> pd.DataFrame:
    ts, *ids = zip(*batch)
    data: dict[str, Any] = {"ts": np.fromiter(ts, dtype=np.int64, count=len(batch))}
    for column, values in zip(columns[1:], ids):
        data[column] = pd.Series(values, dtype=str)
    return pd.DataFrame(data)


Parser = Callable[[str], Event]


def read_text_file(
    path: Path,
    desc: str,
    rejects: Rejects,
    *,
    parse: Parser | None = None,
    header: Callable[[str], Parser] | None = None,
    columns: tuple[str, ...] = EVENT_COLUMNS,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[pd.DataFrame]:
    """The whole pipeline for a one-file, one-record-per-line source.

    With `header`, the first line names the columns and `header(first_line)` builds the
    line parser (it raises ValueError when a needed column is absent).
    """
    name = str(path)
    with progress_bar(file_size(path), desc, progress) as bar, open_counted(path, bar) as stream:
        lines = iter_lines(stream, name, rejects, max_line_bytes)
        if header is not None:
            first = next(lines, None)
            if first is None:
                return
            try:
                parse = header(first[1])
            except Reject as bad:
                raise InputError(f"{name}:{first[0]}: unreadable header ({bad.reason}: {bad.detail})") from None
        assert parse is not None, "read_text_file needs parse or header"
        yield from to_chunks(parse_lines(lines, name, parse, rejects), columns, chunk_rows)
