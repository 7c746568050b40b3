"""Streaming dataset readers: raw formats in, `ts, user, item[, event_id]` chunks out.

Every fixture is written here, into tmp_path, in the exact raw format with synthetic
content (the Yelp and Adressa licences forbid copying real rows).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay_data.readers import READER_HELP, READERS, _lines, read
from replay_data.rejects import MalformedInputError, Rejects

T0 = 1_483_225_203  # 2016-12-31 23:00:03 UTC, the first second of 2017 in Oslo


def utc(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())


def read_all(dataset: str, path: Path, rejects: Rejects | None = None, **options) -> pd.DataFrame:
    chunks = list(read(dataset, path, rejects if rejects is not None else Rejects(), progress=False, **options))
    for chunk in chunks:
        assert chunk["ts"].dtype == "int64"
        assert all(pd.api.types.is_string_dtype(chunk[c]) for c in chunk.columns if c != "ts")
    if not chunks:
        return pd.DataFrame(columns=["ts", "user", "item"])
    return pd.concat(chunks, ignore_index=True)


def rows(frame: pd.DataFrame, columns=("ts", "user", "item")) -> list[tuple]:
    return list(frame[list(columns)].itertuples(index=False, name=None))


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


# -- raw-format builders ---------------------------------------------------------------


def adressa_view(
    user: str, ts: int, event: int, item: str | None = None, url: str | None = None, active: int | None = None
) -> str:
    """One Adressa page view as the daily files write it (article fields only on articles)."""
    record: dict = {
        "eventId": event,
        "city": "trondheim",
        "region": "sor-trondelag",
        "country": "no",
        "url": url or (f"http://adressa.no/nyheter/trondheim/{item}.html" if item else "http://adressa.no"),
        "referrerHostClass": "internal",
        "time": ts,
        "userId": user,
        "sessionStart": False,
        "deviceType": "Mobile",
        "sessionStop": False,
        "os": "Android",
    }
    if active is not None:
        record["activeTime"] = active
    if item is not None:
        record.update(
            {
                "id": item,
                "title": "Synthetic headline",
                "category1": "nyheter|trondheim",
                "canonicalUrl": record["url"],
                "publishtime": "2016-12-31T15:48:48.000Z",
                "keywords": "synthetic,test",
                "author": ["tester"],
                "profile": [{"item": "article", "groups": [{"group": "pageclass", "weight": 1.0, "count": 1}]}],
            }
        )
    return json.dumps(record)


ITEM_A, ITEM_B, ITEM_C = ("a" * 40, "b" * 40, "c" * 40)


def adressa_days(root: Path) -> Path:
    """Two daily files under one_week/: clicks, a front-page view, clicks without activeTime."""
    day1 = [
        adressa_view("cx:u1", T0, 1, ITEM_A, active=30),
        adressa_view("cx:u2", T0 + 5, 2),  # front page: no id
        adressa_view("cx:u2", T0 + 9, 3, ITEM_B),  # no activeTime
    ]
    day2 = [
        adressa_view("cx:u3", T0 + 86_400, 4, ITEM_C, active=4),
        adressa_view("cx:u1", T0 + 86_405, 5, ITEM_B, active=12),
    ]
    write_lines(root / "one_week" / "20170101", day1)
    write_lines(root / "one_week" / "20170102", day2)
    return root / "one_week"


def tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def yelp_review(review: str, user: str, business: str, stars, date) -> str:
    return json.dumps(
        {
            "review_id": review,
            "user_id": user,
            "business_id": business,
            "stars": stars,
            "useful": 0,
            "funny": 0,
            "cool": 0,
            "text": "Synthetic review text.",
            "date": date,
        }
    )


# -- registry ---------------------------------------------------------------------------


def test_unknown_reader_is_a_value_error_naming_the_known_ones(tmp_path):
    with pytest.raises(ValueError) as error:
        read("netflix", tmp_path, Rejects())
    for name in ("adressa", "yelp", "movielens", "csv", "parquet"):
        assert name in str(error.value)


def test_every_reader_has_a_one_line_help():
    assert set(READER_HELP) == set(READERS) == {"adressa", "yelp", "movielens", "csv", "parquet"}
    assert all(text and "\n" not in text for text in READER_HELP.values())


def test_missing_input_fails_at_call_time(tmp_path):
    with pytest.raises(FileNotFoundError):
        read("yelp", tmp_path / "absent.json", Rejects())


# -- Adressa ----------------------------------------------------------------------------

ADRESSA_CLICKS = [
    (T0, "cx:u1", ITEM_A, "1"),
    (T0 + 9, "cx:u2", ITEM_B, "3"),
    (T0 + 86_400, "cx:u3", ITEM_C, "4"),
    (T0 + 86_405, "cx:u1", ITEM_B, "5"),
]


def test_adressa_folder_yields_clicks_in_file_order(tmp_path):
    folder = adressa_days(tmp_path)
    write_lines(folder / "README.txt", ["not a day file"])
    write_lines(folder / "._20170101", ["macOS companion, skipped"])
    rejects = Rejects()
    frame = read_all("adressa", folder, rejects)
    assert list(frame.columns) == ["ts", "user", "item", "event_id"]
    assert rows(frame, ("ts", "user", "item", "event_id")) == ADRESSA_CLICKS
    assert dict(rejects.counts) == {"not_a_click": 1}


def test_adressa_archive_streams_the_same_clicks(tmp_path):
    archive = tar_gz(adressa_days(tmp_path / "raw"), tmp_path / "one_week.tar.gz")
    rejects = Rejects()
    frame = read_all("adressa", archive, rejects)
    assert rows(frame, ("ts", "user", "item", "event_id")) == ADRESSA_CLICKS
    assert dict(rejects.counts) == {"not_a_click": 1}


def test_adressa_archive_names_members_in_rejects(tmp_path):
    folder = adressa_days(tmp_path / "raw")
    with open(folder / "20170102", "a") as day:
        day.write('{"id": "broken\n')
    rejects = Rejects()
    read_all("adressa", tar_gz(folder, tmp_path / "one_week.tar.gz"), rejects)
    assert rejects.counts["bad_json"] == 1
    assert rejects.examples[0].startswith(f"{tmp_path / 'one_week.tar.gz'}/one_week/20170102:3: bad_json")


def test_adressa_accepts_jsonl_files_and_a_single_file(tmp_path):
    day = write_lines(tmp_path / "days" / "day1.jsonl", [adressa_view("cx:u9", T0, 7, ITEM_A)])
    assert rows(read_all("adressa", tmp_path / "days")) == [(T0, "cx:u9", ITEM_A)]
    assert rows(read_all("adressa", day)) == [(T0, "cx:u9", ITEM_A)]


def test_adressa_folder_without_day_files_is_an_error(tmp_path):
    write_lines(tmp_path / "notes.txt", ["nothing here"])
    with pytest.raises(ValueError, match="no daily Adressa files"):
        read("adressa", tmp_path, Rejects())


def test_adressa_min_active_time_counts_missing_active_time_as_zero(tmp_path):
    folder = adressa_days(tmp_path)
    rejects = Rejects()
    frame = read_all("adressa", folder, rejects, min_active_time=10)
    # u2's click has no activeTime (0) and u3's lasted 4 s: both below 10 s
    assert rows(frame) == [(T0, "cx:u1", ITEM_A), (T0 + 86_405, "cx:u1", ITEM_B)]
    assert dict(rejects.counts) == {"not_a_click": 1, "inactive": 2}
    # min_active_time=0 keeps untimed clicks: missing is 0, not below 0
    assert len(read_all("adressa", folder, min_active_time=0)) == 4


def test_adressa_bad_active_time_is_a_bad_value(tmp_path):
    line = json.loads(adressa_view("cx:u1", T0, 1, ITEM_A))
    line["activeTime"] = "long"
    write_lines(tmp_path / "20170101", [json.dumps(line)])
    rejects = Rejects()
    assert read_all("adressa", tmp_path, rejects, min_active_time=5).empty
    assert dict(rejects.counts) == {"bad_value": 1}


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_adressa_subscribers_only_keeps_users_with_a_pluss_url(tmp_path, packed):
    folder = adressa_days(tmp_path / "raw")
    # u1 reads a paywalled article on day 3, after both of their clicks above; the view of
    # a /pluss/ section page without an article id still marks u3 as a subscriber
    write_lines(
        folder / "20170103",
        [
            adressa_view(
                "cx:u1",
                T0 + 2 * 86_400,
                6,
                "d" * 40,
                url="http://www.adressa.no/pluss/nyheter/2017/01/03/synthetic.ece",
            ),
            adressa_view("cx:u3", T0 + 2 * 86_400 + 1, 7, url="http:\\/\\/adressa.no/pluss/"),
        ],
    )
    path = tar_gz(folder, tmp_path / "one_week.tar.gz") if packed else folder
    rejects = Rejects()
    frame = read_all("adressa", path, rejects, subscribers_only=True)
    assert rows(frame) == [
        (T0, "cx:u1", ITEM_A),
        (T0 + 86_400, "cx:u3", ITEM_C),
        (T0 + 86_405, "cx:u1", ITEM_B),
        (T0 + 2 * 86_400, "cx:u1", "d" * 40),
    ]
    assert dict(rejects.counts) == {"not_a_click": 2, "not_subscriber": 1}


def test_adressa_malformed_lines_are_counted_by_reason(tmp_path):
    good = adressa_view("cx:u1", T0, 1, ITEM_A)
    no_user = json.loads(good)
    del no_user["userId"]
    no_time = json.loads(good)
    del no_time["time"]
    text_time = json.loads(good) | {"time": "2017-01-01"}
    day = write_lines(
        tmp_path / "20170101",
        [
            good,
            '{"id": "' + ITEM_A + '", "userId": ',  # truncated
            json.dumps(no_user),
            json.dumps(no_time),
            json.dumps(text_time),
            good.encode().replace(b"Synthetic", b"Synth\xe6tic"),  # Latin-1, not UTF-8
            json.dumps(json.loads(good) | {"title": "x" * 5000}),
            '["id", "a list, not an object"]',
            good,
        ],
    )
    rejects = Rejects()
    frame = read_all("adressa", tmp_path, rejects, max_line_bytes=4096)
    assert rows(frame) == [(T0, "cx:u1", ITEM_A)] * 2
    assert dict(rejects.counts) == {
        "bad_json": 2,
        "missing_field": 2,
        "bad_timestamp": 1,
        "not_utf8": 1,
        "line_too_long": 1,
    }
    assert rejects.examples[0].startswith(f"{day}:2: bad_json")
    assert [example.split(": ")[0] for example in rejects.examples] == [f"{day}:{n}" for n in (2, 3, 4, 5, 6)]


def test_adressa_damaged_line_without_id_counts_as_not_a_click(tmp_path):
    # documented shortcut: lines that never mention "id" are not parsed at all
    write_lines(tmp_path / "20170101", ['{"userId": "cx:u1", "time": ', '{"id": "' + ITEM_A + '", '])
    rejects = Rejects()
    assert read_all("adressa", tmp_path, rejects).empty
    assert dict(rejects.counts) == {"not_a_click": 1, "bad_json": 1}


def test_adressa_chunks_are_bounded_and_keep_order(tmp_path):
    chunks = list(read("adressa", adressa_days(tmp_path), Rejects(), progress=False, chunk_rows=3))
    assert [len(chunk) for chunk in chunks] == [3, 1]
    assert rows(pd.concat(chunks, ignore_index=True), ("ts", "user", "item", "event_id")) == ADRESSA_CLICKS


# -- Yelp -------------------------------------------------------------------------------


def yelp_file(tmp_path: Path) -> Path:
    return write_lines(
        tmp_path / "yelp_academic_dataset_review.json",
        [
            yelp_review("r1", "u1", "b1", 5.0, "2018-07-07 22:09:11"),
            yelp_review("r2", "u2", "b1", 2.0, "2012-01-03"),  # old date-only form
            yelp_review("r3", "u1", "b2", 4.0, "2009-12-31 23:59:59"),
            yelp_review("r4", "u3", "b3", 1, "2015-06-01 08:00:00"),
        ],
    )


def test_yelp_reads_both_date_forms_as_utc(tmp_path):
    rejects = Rejects()
    frame = read_all("yelp", yelp_file(tmp_path), rejects)
    assert rows(frame, ("ts", "user", "item", "event_id")) == [
        (utc(2018, 7, 7, 22, 9, 11), "u1", "b1", "r1"),
        (utc(2012, 1, 3), "u2", "b1", "r2"),
        (utc(2009, 12, 31, 23, 59, 59), "u1", "b2", "r3"),
        (utc(2015, 6, 1, 8), "u3", "b3", "r4"),
    ]
    assert rejects.total == 0


def test_yelp_folder_and_gzip_inputs(tmp_path):
    review_file = yelp_file(tmp_path / "yelp")
    packed = tmp_path / "reviews.json.gz"
    packed.write_bytes(gzip.compress(review_file.read_bytes()))
    assert len(read_all("yelp", tmp_path / "yelp")) == 4
    assert rows(read_all("yelp", packed)) == rows(read_all("yelp", review_file))


def test_yelp_star_threshold_and_year_window(tmp_path):
    rejects = Rejects()
    frame = read_all("yelp", yelp_file(tmp_path), rejects, min_stars=4, years=(2010, 2018))
    assert list(frame["event_id"]) == ["r1"]
    assert dict(rejects.counts) == {"outside_years": 1, "below_stars": 2}
    # a YAML config gives the window as a list
    assert list(read_all("yelp", yelp_file(tmp_path), years=[2012, 2012])["event_id"]) == ["r2"]


def test_yelp_year_window_must_be_ordered(tmp_path):
    with pytest.raises(ValueError, match="years"):
        read("yelp", yelp_file(tmp_path), Rejects(), years=(2019, 2010))


def test_yelp_malformed_lines_are_counted_by_reason(tmp_path):
    good = yelp_review("r1", "u1", "b1", 4.0, "2018-07-07 22:09:11")
    path = write_lines(
        tmp_path / "reviews.json",
        [
            "{not json",
            json.dumps({k: v for k, v in json.loads(good).items() if k != "business_id"}),
            yelp_review("r3", "u1", "b1", "five", "2018-07-07"),
            yelp_review("r4", "u1", "b1", 4.0, "07/07/2018"),
            yelp_review("r5", "u1", "b1", 4.0, "2018-13-07"),
            yelp_review("r6", "u1", "b1", 4.0, "1969-12-31 23:59:59"),
            yelp_review("r7", "u1", "b1", 4.0, None),
            yelp_review("r8", "u1", "b1", True, "2018-07-07"),
            good.replace("Synthetic", "\udcff", 1).encode("utf-8", "surrogateescape"),
            yelp_review("r9", "u1", "b1", 4.0, "2018-07-07") + " " * 300,
            "",  # blank lines are not records
            good,
        ],
    )
    rejects = Rejects()
    frame = read_all("yelp", path, rejects, max_line_bytes=300)
    assert list(frame["event_id"]) == ["r1"]
    assert dict(rejects.counts) == {
        "bad_json": 1,
        "missing_field": 2,
        "bad_value": 2,
        "bad_timestamp": 3,
        "not_utf8": 1,
        "line_too_long": 1,
    }
    assert (
        rejects.examples[0]
        == f"{path}:1: bad_json (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    )
    assert rejects.examples[1] == f"{path}:2: missing_field (business_id)"


def test_strict_mode_stops_at_the_first_malformed_line(tmp_path):
    path = write_lines(
        tmp_path / "reviews.json",
        [
            yelp_review("r1", "u1", "b1", 4.0, "2018-07-07"),
            yelp_review("r2", "u1", "b1", 4.0, "yesterday"),
            "{not json",
        ],
    )
    with pytest.raises(MalformedInputError, match=f"{path}:2: bad_timestamp"):
        read_all("yelp", path, Rejects(strict=True))


def test_strict_mode_never_fails_on_filters(tmp_path):
    rejects = Rejects(strict=True)
    assert len(read_all("yelp", yelp_file(tmp_path), rejects, min_stars=5)) == 1
    assert dict(rejects.counts) == {"below_stars": 3}


def test_a_100_mb_line_is_skipped_with_bounded_memory(tmp_path):
    path = tmp_path / "reviews.json"
    with open(path, "wb") as out:
        out.write(b'{"text": "')
        for _ in range(100):
            out.write(b"x" * 2**20)
        out.write(b'"}\n' + yelp_review("r1", "u1", "b1", 4.0, "2018-07-07").encode() + b"\n")
    started = time.perf_counter()
    tracemalloc.start()
    try:
        rejects = Rejects()
        frame = read_all("yelp", path, rejects)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert list(frame["event_id"]) == ["r1"]
    assert dict(rejects.counts) == {"line_too_long": 1}
    assert rejects.examples[0].startswith(f"{path}:1: line_too_long")
    assert peak < 48 * 2**20  # the 16 MiB limit plus a block, never the whole line
    assert time.perf_counter() - started < 3


# -- MovieLens --------------------------------------------------------------------------

RATINGS = [("1", "31", "2.5", 1260759144), ("1", "1029", "3.0", 1260759179), ("7", "31", "4.5", 964982703)]


def movielens_files(tmp_path: Path) -> dict[str, Path]:
    return {
        "csv": write_lines(
            tmp_path / "ratings.csv",
            ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r},{t}" for u, i, r, t in RATINGS],
        ),
        "dat": write_lines(tmp_path / "ratings.dat", [f"{u}::{i}::{r[0]}::{t}" for u, i, r, t in RATINGS]),
        "tsv": write_lines(tmp_path / "u.data", [f"{u}\t{i}\t{r[0]}\t{t}" for u, i, r, t in RATINGS]),
    }


@pytest.mark.parametrize("kind", ["csv", "dat", "tsv"])
def test_movielens_formats_by_file_name(tmp_path, kind):
    rejects = Rejects()
    frame = read_all("movielens", movielens_files(tmp_path)[kind], rejects)
    assert list(frame.columns) == ["ts", "user", "item"]
    assert rows(frame) == [(t, u, i) for u, i, _, t in RATINGS]
    assert rejects.total == 0


def test_movielens_min_rating_and_folder_input(tmp_path):
    movielens_files(tmp_path)
    rejects = Rejects()
    frame = read_all("movielens", tmp_path, rejects, min_rating=3.0)  # ratings.csv first
    assert rows(frame) == [(1260759179, "1", "1029"), (964982703, "7", "31")]
    assert dict(rejects.counts) == {"below_rating": 1}


def test_movielens_format_override_and_unknown_names(tmp_path):
    renamed = tmp_path / "ratings.txt"
    renamed.write_bytes(movielens_files(tmp_path)["dat"].read_bytes())
    assert len(read_all("movielens", renamed, format="dat")) == 3
    with pytest.raises(ValueError, match="format="):
        read("movielens", renamed, Rejects())
    with pytest.raises(ValueError, match="must be one of"):
        read("movielens", renamed, Rejects(), format="xlsx")


def test_movielens_header_without_a_needed_column(tmp_path):
    path = write_lines(tmp_path / "ratings.csv", ["userId,movieId,score,timestamp", "1,2,3,4"])
    with pytest.raises(ValueError, match=r"\['rating'\] not found.*'score'"):
        read_all("movielens", path)


def test_movielens_malformed_lines_are_counted_by_reason(tmp_path):
    path = write_lines(
        tmp_path / "ratings.dat",
        [
            "1::31::2.5::1260759144",
            "1::31::2.5",
            "1::31::2.5::1260759144::extra",
            "1::31::good::1260759144",
            "1::31::nan::1260759144",
            "1::31::2.5::yesterday",
            "::31::2.5::1260759144",
            b"1::3\xff1::2.5::1260759144",
            "2::31::4::1260759144",
        ],
    )
    rejects = Rejects()
    frame = read_all("movielens", path, rejects)
    assert rows(frame) == [(1260759144, "1", "31"), (1260759144, "2", "31")]
    assert dict(rejects.counts) == {"missing_field": 2, "bad_value": 3, "bad_timestamp": 1, "not_utf8": 1}
    assert rejects.examples[0] == f"{path}:2: missing_field (3 fields, expected 4)"


def test_movielens_reads_100k_lines_quickly(tmp_path):
    path = write_lines(
        tmp_path / "ratings.csv",
        ["userId,movieId,rating,timestamp"]
        + [f"{n % 610 + 1},{n % 9742 + 1},{(n % 10 + 1) / 2},{964982703 + n}" for n in range(100_000)],
    )
    started = time.perf_counter()
    frame = read_all("movielens", path)
    assert len(frame) == 100_000 and frame["ts"].iloc[-1] == 964982703 + 99_999
    assert time.perf_counter() - started < 1.5  # about 0.3 s on one core


# -- generic CSV and Parquet -----------------------------------------------------------


def test_csv_named_columns_extra_columns_and_quotes(tmp_path):
    path = write_lines(
        tmp_path / "log.csv",
        [
            "\ufeffsession;ts;title;item;user",
            's1;1483225203;"Semi; colon";i1;u1',
            "s2;1483225210;plain;i2;u2",
        ],
    )
    frame = read_all("csv", path, user_col="user", item_col="item", ts_col="ts", delimiter=";")
    assert rows(frame) == [(T0, "u1", "i1"), (T0 + 7, "u2", "i2")]


def test_csv_milliseconds_and_date_formats(tmp_path):
    millis = write_lines(tmp_path / "ms.csv", ["u,i,t", "u1,i1,1483225203999", "u2,i2,1483225204000"])
    assert list(read_all("csv", millis, user_col="u", item_col="i", ts_col="t", ts_unit="ms")["ts"]) == [T0, T0 + 1]
    dated = write_lines(tmp_path / "dates.csv", ["u,i,when", "u1,i1,31/12/2016 23:00:03", "u2,i2,02/01/2017 01:00:00"])
    frame = read_all("csv", dated, user_col="u", item_col="i", ts_col="when", date_format="%d/%m/%Y %H:%M:%S")
    assert list(frame["ts"]) == [T0, utc(2017, 1, 2, 1)]


def test_csv_seconds_read_as_milliseconds_are_bad_timestamps(tmp_path):
    # no unit guessing: ms read as seconds land past year 9999 and are rejected, not kept
    path = write_lines(tmp_path / "ms.csv", ["u,i,t", "u1,i1,1483225203999"])
    rejects = Rejects()
    assert read_all("csv", path, rejects, user_col="u", item_col="i", ts_col="t").empty
    assert dict(rejects.counts) == {"bad_timestamp": 1}


def test_csv_missing_column_lists_the_columns_present(tmp_path):
    path = write_lines(tmp_path / "log.csv", ["user,item,time", "u1,i1,1"])
    with pytest.raises(ValueError, match=r"\['ts'\] not found; the columns present are \['user', 'item', 'time'\]"):
        read_all("csv", path, user_col="user", item_col="item", ts_col="ts")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ts_unit": "ms", "date_format": "%Y"}, "not both"),
        ({"ts_unit": "us"}, "ts_unit must be one of"),
        ({"delimiter": "::"}, "one character"),
    ],
)
def test_csv_option_errors(tmp_path, options, message):
    path = write_lines(tmp_path / "log.csv", ["u,i,t"])
    with pytest.raises(ValueError, match=message):
        read("csv", path, Rejects(), user_col="u", item_col="i", ts_col="t", **options)


def test_csv_malformed_lines_are_counted_by_reason(tmp_path):
    path = write_lines(
        tmp_path / "log.csv",
        [
            "u,i,t",
            "u1,i1,10",
            ",i1,11",
            "u1,,12",
            "u1,i1,",
            "u1,i1,soon",
            "u1,i1",
            "u1,i1,13,x",
            'u1,"i1,14',
            "u2,i2,15",
        ],
    )
    rejects = Rejects()
    frame = read_all("csv", path, rejects, user_col="u", item_col="i", ts_col="t")
    assert rows(frame) == [(10, "u1", "i1"), (15, "u2", "i2")]
    assert dict(rejects.counts) == {"missing_field": 4, "bad_timestamp": 2, "bad_value": 1}
    assert rejects.examples[0] == f"{path}:3: missing_field (user)"


def parquet_file(path: Path, table: pa.Table, row_group_size: int = 2) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_parquet_reads_batches_in_order_and_rejects_by_row(tmp_path):
    path = parquet_file(
        tmp_path / "log.parquet",
        pa.table(
            {
                "user": [1, 2, None, 4, 5],
                "item": ["i1", "i2", "i3", " ", "i5"],
                "ts": pa.array([T0, None, T0 + 2, T0 + 3, -5], pa.int64()),
                "extra": [0.1] * 5,
            }
        ),
    )
    rejects = Rejects()
    frame = read_all("parquet", path, rejects, user_col="user", item_col="item", ts_col="ts", chunk_rows=2)
    assert rows(frame) == [(T0, "1", "i1")]
    assert dict(rejects.counts) == {"bad_timestamp": 2, "missing_field": 2}
    assert [example.split(": ")[:2] for example in rejects.examples] == [
        [f"{path}:2", "bad_timestamp"],
        [f"{path}:3", "missing_field"],
        [f"{path}:4", "missing_field"],
        [f"{path}:5", "bad_timestamp"],
    ]


@pytest.mark.parametrize(
    "column, options",
    [
        (pa.array([T0 * 1000 + 999, (T0 + 60) * 1000], pa.int64()), {"ts_unit": "ms"}),
        (pa.array([T0 + 0.75, T0 + 60.0], pa.float64()), {}),
        (pa.array([T0 * 10**9 + 999_999_999, (T0 + 60) * 10**9], pa.timestamp("ns")), {}),
        (pa.array([T0 * 1000, (T0 + 60) * 1000], pa.timestamp("ms", tz="Europe/Oslo")), {}),
        (pa.array(["2016-12-31 23:00:03", "2016-12-31 23:01:03"]), {"date_format": "%Y-%m-%d %H:%M:%S"}),
        (pa.array(["1483225203", "1483225263"]), {}),
    ],
)
def test_parquet_timestamp_types(tmp_path, column, options):
    path = parquet_file(tmp_path / "log.parquet", pa.table({"u": ["a", "b"], "i": ["x", "y"], "t": column}))
    frame = read_all("parquet", path, user_col="u", item_col="i", ts_col="t", **options)
    assert rows(frame) == [(T0, "a", "x"), (T0 + 60, "b", "y")]


def test_parquet_date_format_needs_a_text_column(tmp_path):
    path = parquet_file(tmp_path / "log.parquet", pa.table({"u": ["a"], "i": ["x"], "t": [T0]}))
    with pytest.raises(ValueError, match="date_format is for text"):
        read_all("parquet", path, user_col="u", item_col="i", ts_col="t", date_format="%Y")


def test_parquet_missing_column_lists_the_columns_present(tmp_path):
    path = parquet_file(tmp_path / "log.parquet", pa.table({"u": ["a"], "i": ["x"], "t": [T0]}))
    with pytest.raises(ValueError, match=r"\['user'\] not found; the columns present are \['u', 'i', 't'\]"):
        read("parquet", path, Rejects(), user_col="user", item_col="i", ts_col="t")


def test_csv_and_parquet_agree(tmp_path):
    users, items, stamps = ["u1", "u2", "u1"], ["i9", "i8", "i7"], [T0 + 3, T0, T0 + 3]
    csv_path = write_lines(
        tmp_path / "log.csv", ["user,item,ts"] + [f"{u},{i},{t}" for u, i, t in zip(users, items, stamps)]
    )
    parquet_path = parquet_file(tmp_path / "log.parquet", pa.table({"user": users, "item": items, "ts": stamps}))
    options = dict(user_col="user", item_col="item", ts_col="ts")
    assert (
        rows(read_all("csv", csv_path, **options))
        == rows(read_all("parquet", parquet_path, **options))
        == list(zip(stamps, users, items))
    )  # file order, not sorted


def test_progress_bar_on_does_not_change_results(tmp_path, capsys):
    path = yelp_file(tmp_path)
    frame = pd.concat(read("yelp", path, Rejects(), progress=True))
    assert len(frame) == 4


# -- line iteration and robustness ------------------------------------------------------


def reference_lines(data: bytes, limit: int) -> tuple[list[tuple[int, str]], list[str]]:
    """What iter_lines must produce, computed the obvious (whole-file) way."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    lines, rejected = [], []
    for lineno, raw in enumerate(pieces, 1):
        if len(raw) > limit:
            rejected.append(f"x:{lineno}: line_too_long")
            continue
        raw = raw.rstrip(b"\r")
        if not raw:
            continue
        try:
            lines.append((lineno, raw.decode("utf-8")))
        except UnicodeDecodeError:
            rejected.append(f"x:{lineno}: not_utf8")
    return lines, rejected


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(
        st.sampled_from([b"a", b"\xc3\xa9", b"\xff", b"\n", b"\r", b"\r\n", b"\xef\xbb\xbf", b"{}", b"x" * 9]),
        max_size=40,
    ).map(b"".join),
    limit=st.integers(1, 12),
    block=st.integers(1, 8),
)
def test_iter_lines_matches_a_whole_file_split(data, limit, block):
    rejects = Rejects(keep_examples=1000)
    with pytest.MonkeyPatch.context() as patch:  # tiny blocks: lines cross block edges
        patch.setattr(_lines, "_BLOCK_BYTES", block)
        lines = list(_lines.iter_lines(io.BytesIO(data), "x", rejects, limit))
    expected_lines, expected_rejects = reference_lines(data, limit)
    assert lines == expected_lines
    assert [example.split(" (")[0] for example in rejects.examples] == expected_rejects


SAMPLE_LINES = {
    "adressa": [adressa_view("cx:u1", T0, 1, ITEM_A, active=3).encode(), adressa_view("cx:u2", T0, 2).encode()],
    "yelp": [yelp_review("r1", "u1", "b1", 4.0, "2018-07-07").encode()],
    "movielens": [b"1::31::2.5::1260759144"],
    "csv": [b"u1,i1,1483225203"],
}
FILES = {"adressa": "20170101", "yelp": "reviews.json", "movielens": "ratings.dat", "csv": "log.csv"}
OPTIONS = {
    "adressa": {"min_active_time": 1},
    "yelp": {"min_stars": 3, "years": (2010, 2020)},
    "movielens": {"min_rating": 2},
    "csv": {"user_col": "u", "item_col": "i", "ts_col": "t"},
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=st.sampled_from(sorted(SAMPLE_LINES)), data=st.data())
def test_arbitrary_lines_are_read_or_counted_never_crash(tmp_path, dataset, data):
    lines = data.draw(
        st.lists(
            st.one_of(
                st.binary(max_size=60),
                st.sampled_from(SAMPLE_LINES[dataset]),
                st.sampled_from(SAMPLE_LINES[dataset]).flatmap(
                    lambda line: st.integers(0, len(line)).map(lambda n: line[:n])
                ),
            ),
            max_size=12,
        )
    )
    header = [b"u,i,t"] if dataset == "csv" else []
    path = tmp_path / FILES[dataset]
    path.write_bytes(b"\n".join(header + lines))
    rejects = Rejects()
    frame = read_all(dataset, path, rejects, max_line_bytes=200, **OPTIONS[dataset])
    # every non-empty line is exactly one of: a row, a rejected record, a dropped record
    body = path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")[len(header) :]
    records = sum(1 for line in body if line.rstrip(b"\r"))
    assert len(frame) + rejects.total == records
    assert (frame["ts"] >= 0).all() and frame["user"].str.len().gt(0).all()
