"""Adressa news clicks: daily JSON-lines page views -> (time, userId, article id).

Input: a folder of daily files (`one_week/20170101`, ... without extension, or `*.json`,
`*.jsonl`), searched recursively and read in path order; a single such file; or the
downloaded archive itself (`.tar.gz`, `.tgz`, `.tar`), streamed member by member in
archive order (the published archives store the days in name order) with nothing
extracted to disk. Hidden files (and macOS `._*` companions) are skipped.

A click is a view with an article `id`; front-page and other views without one are dropped
as "not_a_click". `eventId` becomes `event_id` for exact dedup downstream.

subscribers_only: a user is a subscriber when any of their views has a URL containing
"/pluss/", possibly later than the click being read. So a first pass over the whole
input collects subscriber ids (parsing only lines that mention "pluss"), and the reading
pass keeps their clicks. Cost: the input is read, and an archive decompressed, twice;
the id set stays in memory (roughly 100 bytes per subscriber).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pandas as pd
from tqdm import tqdm

from replay_data.readers._lines import (
    CHUNK_ROWS,
    EVENT_ID_COLUMNS,
    MAX_LINE_BYTES,
    Drop,
    Event,
    Reject,
    existing,
    file_size,
    id_field,
    iter_lines,
    load_object,
    open_counted,
    optional_id,
    parse_lines,
    progress_bar,
    readable,
    to_chunks,
    to_seconds,
)
from replay_data.rejects import InputError, Rejects

_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_DAY_SUFFIXES = ("", ".json", ".jsonl")
_URL_KEYS = ("url", "canonicalUrl")


def read_adressa(
    path: str | os.PathLike,
    rejects: Rejects,
    *,
    min_active_time: float | None = None,
    subscribers_only: bool = False,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[pd.DataFrame]:
    """Stream clicks as chunks of `ts, user, item, event_id`.

    min_active_time: keep clicks whose `activeTime` (seconds) is at least this; a click
        without `activeTime` then counts as 0. None keeps every click, timed or not.
    subscribers_only: keep only clicks of users with a "/pluss/" URL anywhere (two passes).
    """
    source = existing(path)
    if source.is_dir() and not _day_files(source):
        raise InputError(f"no daily Adressa files (no extension, .json or .jsonl) under {source}")
    parse = partial(_click, min_active_time=min_active_time)
    return _read(source, rejects, parse, subscribers_only, progress, chunk_rows, max_line_bytes)


def _read(
    source: Path,
    rejects: Rejects,
    parse: partial,
    subscribers_only: bool,
    progress: bool,
    chunk_rows: int,
    max_line_bytes: int,
) -> Iterator[pd.DataFrame]:
    if subscribers_only:
        parse = partial(parse, subscribers=_subscribers(source, progress, max_line_bytes))
    clicks = _parsed(source, rejects, parse, progress, max_line_bytes)
    yield from to_chunks(clicks, EVENT_ID_COLUMNS, chunk_rows)


def _click(text: str, *, min_active_time: float | None, subscribers: set[str] | None = None) -> Event:
    # Most lines are views without "id"; not parsing them saves about half the work. So a
    # damaged line that never mentions "id" counts as not_a_click rather than bad_json.
    if '"id"' not in text:
        raise Drop("not_a_click")
    record = load_object(text)
    if record.get("id") in (None, ""):
        raise Drop("not_a_click")
    item = id_field(record, "id")
    user = id_field(record, "userId")
    if record.get("time") is None:
        raise Reject("missing_field", "time")
    ts = to_seconds(record["time"])
    if ts is None:
        raise Reject("bad_timestamp", f"time={str(record['time'])[:40]!r}")
    if subscribers is not None and user not in subscribers:
        raise Drop("not_subscriber")
    if min_active_time is not None:
        active = record.get("activeTime")
        active = 0 if active is None else to_seconds(active)
        if active is None:
            raise Reject("bad_value", f"activeTime={str(record['activeTime'])[:40]!r}")
        if active < min_active_time:
            raise Drop("inactive")
    return ts, user, item, optional_id(record, "eventId")


def _subscribers(source: Path, progress: bool, max_line_bytes: int) -> set[str]:
    """Users with any "/pluss/" URL. Damaged lines are skipped quietly here: the reading
    pass meets the same lines and counts them once."""
    quiet = Rejects()
    users: set[str] = set()
    with progress_bar(_total_bytes(source), "adressa subscribers", progress) as bar:
        for name, stream in _streams(source, bar):
            for _, text in iter_lines(stream, name, quiet, max_line_bytes):
                if "pluss" not in text:  # cheap filter before parsing
                    continue
                try:
                    record = load_object(text)
                    user = id_field(record, "userId")
                except Reject:
                    continue
                if any("/pluss/" in str(record.get(key, "")) for key in _URL_KEYS):
                    users.add(user)
    return users


def _parsed(source: Path, rejects: Rejects, parse: partial, progress: bool, max_line_bytes: int) -> Iterator[Event]:
    with progress_bar(_total_bytes(source), "adressa", progress) as bar, readable(source):
        for name, stream in _streams(source, bar):
            lines = iter_lines(stream, name, rejects, max_line_bytes)
            yield from parse_lines(lines, name, parse, rejects)


def _streams(source: Path, bar: tqdm) -> Iterator[tuple[str, BinaryIO]]:
    """(name used in `file:line`, binary stream) for every daily file, in reading order.

    Archive members are named `<archive>/<member>`, e.g. `one_week.tar.gz/one_week/20170101`.
    """
    if source.name.endswith(_ARCHIVE_SUFFIXES):
        with open_counted(source, bar, decompress=False) as raw, tarfile.open(fileobj=raw, mode="r|*") as archive:
            for member in archive:
                if member.isfile() and _is_day_file(PurePosixPath(member.name).name):
                    yield f"{source}/{member.name}", archive.extractfile(member)
        return
    for file in _day_files(source) if source.is_dir() else [source]:
        with open_counted(file, bar) as stream:
            yield str(file), stream


def _is_day_file(name: str) -> bool:
    return not name.startswith(".") and PurePosixPath(name).suffix in _DAY_SUFFIXES


def _day_files(folder: Path) -> list[Path]:
    return sorted(
        file
        for file in folder.rglob("*")
        if file.is_file()
        and _is_day_file(file.name)
        and not any(part.startswith(".") for part in file.relative_to(folder).parts)
    )


def _total_bytes(source: Path) -> int:
    if source.is_dir():
        return sum(file_size(file) for file in _day_files(source))
    return file_size(source)
