"""MovieLens ratings: `ratings.csv` (ml-latest, ml-25m), `ratings.dat` (ml-1m, ml-10m) and
`u.data` (ml-100k) as interactions.

The format follows the file name (`*.csv`, `*.dat`, `u.data`/`*.data`) unless `format=`
names it. Every line goes through the shared delimited-line parser, so each bad line is
counted with its `file:line`; ml-latest-small (100k lines) reads in a fraction of a second.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from replay_data.readers._lines import CHUNK_ROWS, MAX_LINE_BYTES, Parser, existing, read_text_file
from replay_data.readers.generic import Layout, column_positions, field_splitter
from replay_data.rejects import InputError, MissingInputError, Rejects
from replay_data.typed_config import ConfigError

FORMATS = ("csv", "dat", "tsv")
# in a folder, the first of these that exists is read
_FILES = ("ratings.csv", "ratings.dat", "u.data")
_CSV_COLUMNS = {"user": "userId", "item": "movieId", "score": "rating", "ts": "timestamp"}
_DELIMITERS = {"dat": "::", "tsv": "\t"}  # fixed order u, i, r, ts; no header


def read_movielens(
    path: str | os.PathLike,
    rejects: Rejects,
    *,
    min_rating: float | None = None,
    format: str | None = None,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[pd.DataFrame]:
    """Stream ratings as chunks of `ts, user, item` (userId, movieId as raw text).

    min_rating: keep ratings >= min_rating; None keeps every rating as a positive.
    format: "csv" (header userId,movieId,rating,timestamp), "dat" (u::i::r::ts) or
        "tsv" (u<TAB>i<TAB>r<TAB>ts, no header); None = from the file name.
    """
    source = _ratings_file(existing(path))
    kind = format or _format_of(source)
    if kind not in FORMATS:
        raise ConfigError(f"MovieLens format must be one of {FORMATS}, got {kind!r}")

    def layout(delimiter: str, width: int, at: dict[str, int]) -> Layout:
        return Layout(
            delimiter,
            width,
            at["user"],
            at["item"],
            at["ts"],
            score=at["score"],
            min_score=min_rating,
            below_reason="below_rating",
        )

    def from_header(text: str) -> Parser:
        header = field_splitter(",")(text)
        return layout(",", len(header), column_positions(header, _CSV_COLUMNS)).parser()

    options = dict(progress=progress, chunk_rows=chunk_rows, max_line_bytes=max_line_bytes)
    if kind == "csv":
        return read_text_file(source, "movielens", rejects, header=from_header, **options)
    fixed = layout(_DELIMITERS[kind], 4, {"user": 0, "item": 1, "score": 2, "ts": 3})
    return read_text_file(source, "movielens", rejects, parse=fixed.parser(), **options)


def _ratings_file(path: Path) -> Path:
    if not path.is_dir():
        return path
    for name in _FILES:
        if (path / name).is_file():
            return path / name
    raise MissingInputError(f"none of {_FILES} in {path}")


def _format_of(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    for suffix, kind in ((".csv", "csv"), (".dat", "dat"), (".data", "tsv")):
        if name.endswith(suffix):
            return kind
    raise InputError(f"cannot tell the MovieLens format of {path.name}; pass format= one of {FORMATS}")
