"""Yelp Open Dataset reviews (`yelp_academic_dataset_review.json`, JSON lines) as interactions.

Each review is one interaction (user_id -> business_id) at `date`. `date` carries no zone
and is read as UTC; both the current "YYYY-MM-DD HH:MM:SS" and the old date-only form are
accepted. `stars` must be a number on every line, even when no threshold is set, because a
review without it is a damaged line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import pandas as pd

from replay_data.readers._lines import (
    CHUNK_ROWS,
    EVENT_ID_COLUMNS,
    MAX_LINE_BYTES,
    Drop,
    Event,
    Reject,
    existing,
    id_field,
    load_object,
    number_field,
    optional_id,
    read_text_file,
)
from replay_data.rejects import Rejects
from replay_data.typed_config import ConfigError

REVIEW_FILE = "yelp_academic_dataset_review.json"
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?: [0-9]{2}:[0-9]{2}:[0-9]{2})?")


def read_yelp(
    path: str | os.PathLike,
    rejects: Rejects,
    *,
    min_stars: float | None = None,
    years: tuple[int, int] | None = None,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[pd.DataFrame]:
    """Stream reviews as chunks of `ts, user, item, event_id` (event_id = review_id).

    `path` is the review file (optionally gzipped) or the folder holding it.
    min_stars: keep reviews with stars >= min_stars; None keeps every review as a positive.
    years: inclusive (first, last) UTC years to keep; None keeps all.
    """
    source = existing(path)
    if source.is_dir():
        source = existing(source / REVIEW_FILE)
    if years is not None:
        if not (len(years) == 2 and all(isinstance(year, int) for year in years) and years[0] <= years[1]):
            raise ConfigError(f"years must be (first, last) integers with first <= last, got {years!r}")
        years = (years[0], years[1])
    parse = partial(_review, min_stars=min_stars, years=years)
    return read_text_file(
        Path(source),
        "yelp",
        rejects,
        parse=parse,
        columns=EVENT_ID_COLUMNS,
        progress=progress,
        chunk_rows=chunk_rows,
        max_line_bytes=max_line_bytes,
    )


def _review(text: str, *, min_stars: float | None, years: tuple[int, int] | None) -> Event:
    record = load_object(text)
    user = id_field(record, "user_id")
    item = id_field(record, "business_id")
    stars = number_field(record, "stars")
    ts, year = _date(record)
    if years is not None and not years[0] <= year <= years[1]:
        raise Drop("outside_years")
    if min_stars is not None and stars < min_stars:
        raise Drop("below_stars")
    return ts, user, item, optional_id(record, "review_id")


def _date(record: dict) -> tuple[int, int]:
    """(unix seconds, year) of the review's date, read as UTC."""
    value = record.get("date")
    if value is None:
        raise Reject("missing_field", "date")
    # fromisoformat alone would also take "20180707", week dates or offsets
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise Reject("bad_timestamp", f"date={str(value)[:40]!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:  # e.g. month 13
        raise Reject("bad_timestamp", f"date={value!r}") from None
    if moment < _EPOCH:
        raise Reject("bad_timestamp", f"date={value!r} is before 1970")
    # naive arithmetic: five times faster than attaching a zone and calling timestamp()
    return (moment - _EPOCH) // _SECOND, moment.year
