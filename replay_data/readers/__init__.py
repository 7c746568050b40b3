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

import os
from collections.abc import Callable, Iterator

import pandas as pd

from replay_data.readers.adressa import read_adressa
from replay_data.readers.generic import read_csv, read_parquet
from replay_data.readers.movielens import read_movielens
from replay_data.readers.yelp import read_yelp
from replay_data.rejects import Rejects

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
    "csv": "any delimited file with a header (user_col, item_col, ts_col, ts_unit or "
           "date_format, delimiter)",
    "parquet": "any Parquet file (user_col, item_col, ts_col, ts_unit or date_format)",
}


def read(dataset: str, path: str | os.PathLike, rejects: Rejects,
         **options) -> Iterator[pd.DataFrame]:
    """Stream `path` with the reader registered as `dataset`."""
    try:
        reader = READERS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset reader {dataset!r}; known readers: "
                         f"{', '.join(READERS)}") from None
    return reader(path, rejects, **options)
