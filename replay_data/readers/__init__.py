"""Streaming readers of raw interaction logs, by dataset name.

Every reader is `reader(path, rejects, **options) -> Iterator[pd.DataFrame]`, yielding
chunks (at most `chunk_rows`, default 200,000 rows) with columns `ts` (int64 unix
seconds), `user` and `item` (raw ids as text), plus `event_id` where the source has one
(Adressa eventId, Yelp review_id). Rows come in file order: nothing is sorted or
deduplicated here. Malformed records are counted in `rejects` with reasons bad_json,
missing_field, bad_timestamp, not_utf8, line_too_long, bad_value; records left out by a
filter are counted with `rejects.drop` (not_a_click, inactive, not_subscriber,
below_stars, outside_years, below_rating). Every reader takes `progress` (a byte
progress bar on a TTY) and `chunk_rows`; line-based ones also take `max_line_bytes`
(default 16 MiB).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pandas as pd

from replay_data.readers.adressa import read_adressa
from replay_data.readers.generic import read_csv, read_parquet
from replay_data.readers.movielens import read_movielens
from replay_data.readers.yelp import read_yelp
from replay_data.rejects import Rejects
from replay_data.typed_config import ConfigError, build

Reader = Callable[..., Iterator[pd.DataFrame]]

READERS: dict[str, Reader] = {
    "adressa": read_adressa,
    "yelp": read_yelp,
    "movielens": read_movielens,
    "csv": read_csv,
    "parquet": read_parquet,
}

READER_HELP: dict[str, str] = {
    "adressa": "Adressa news clicks: folder of daily JSON-lines files or the .tar.gz "
    "(min_active_time, subscribers_only)",
    "yelp": "Yelp reviews: yelp_academic_dataset_review.json (min_stars, years)",
    "movielens": "MovieLens ratings: ratings.csv, ratings.dat or u.data (min_rating, format)",
    "csv": "any delimited file with a header (user_col, item_col, ts_col, ts_unit or date_format, delimiter)",
    "parquet": "any Parquet file (user_col, item_col, ts_col, ts_unit or date_format)",
}


def read(dataset: str, path: str | os.PathLike, rejects: Rejects, **options) -> Iterator[pd.DataFrame]:
    """Stream `path` with the reader registered as `dataset`."""
    try:
        reader = READERS[dataset]
    except KeyError:
        raise ConfigError(f"unknown dataset reader {dataset!r}; known readers: {', '.join(READERS)}") from None
    return reader(path, rejects, **options)


__all__ = ["READERS", "READER_HELP", "Reader", "check_options", "read"]

# keyword arguments a reader gets from the caller, not from data.reader
_CALLER_OPTIONS = frozenset({"progress"})


def check_options(dataset: str, options: Mapping[str, Any], path: str = "data.reader") -> None:
    """Check `options` against reader `dataset`'s keyword arguments, before anything is read:
    unknown keys, missing required ones (the csv reader's columns) and types, as a
    ConfigError naming the key `path.<option>`."""
    try:
        reader = READERS[dataset]
    except KeyError:
        raise ConfigError(
            f"data.dataset: unknown dataset reader {dataset!r}; known readers: "
            f"{', '.join(READERS)}, or a synthetic world (synthetic-*)",
            located=True,
        ) from None
    try:
        build(_options_class(dataset, reader), dict(options), path)
    except ConfigError as err:
        raise ConfigError(f"{err} (the {dataset} reader)", located=True) from None


@functools.cache
def _options_class(dataset: str, reader: Reader) -> type:
    """A dataclass of the reader's keyword-only arguments, typed by their annotations."""
    hints = typing.get_type_hints(reader)
    fields = []
    for name, param in inspect.signature(reader).parameters.items():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY or name in _CALLER_OPTIONS:
            continue
        default = (
            dataclasses.field()
            if param.default is inspect.Parameter.empty
            else dataclasses.field(default=param.default)
        )
        fields.append((name, hints.get(name, Any), default))
    # required options first: a dataclass wants its fields without defaults before the others
    fields.sort(key=lambda f: f[2].default is not dataclasses.MISSING)
    return dataclasses.make_dataclass(f"{dataset}_reader_options", fields, frozen=True)
