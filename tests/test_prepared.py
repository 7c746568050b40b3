"""Prepared event logs: order, codes, manifest, cache identity, errors (replay_data.prepared).

The MovieLens input is a synthetic ratings.csv written here (never real data): ids are
numbers, so raw-id order (text) differs from numeric order; timestamps are whole hours, so
many events tie; some (user, movie) pairs repeat, so the preset's repeat_policy removes rows;
three lines are malformed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from replay_data.prepared import list_prepared, load, prepare
from replay_data.rejects import InputError, MalformedInputError
from replay_data.typed_config import ConfigError, to_dict
from simulator.config import resolve

N_ROWS = 2000
# (1-based line number in the file, text); the header is line 1
BAD_LINES = {51: "7,8,4.0,notatime", 61: "7,8", 71: "7,8,good,1000000000"}
BAD_REASONS = {"bad_timestamp": 1, "missing_field": 1, "bad_value": 1}


def synthetic_ratings(seed: int = 1) -> list[tuple[str, str, float, int]]:
    """Rows (userId, movieId, rating, timestamp) in file order, not sorted by time."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, 61, N_ROWS)
    items = rng.integers(1, 120, N_ROWS)
    ratings = rng.integers(1, 11, N_ROWS) / 2
    hours = rng.integers(0, 500, N_ROWS)
    return [
        (str(u), str(i), float(r), 1_000_000_000 + 3600 * int(h)) for u, i, r, h in zip(users, items, ratings, hours)
    ]


def write_ratings(path, rows, bad_lines=BAD_LINES) -> None:
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r},{ts}" for u, i, r, ts in rows]
    for lineno in sorted(bad_lines):
        lines.insert(lineno - 1, bad_lines[lineno])
    path.write_text("\n".join(lines) + "\n")


def expected_events(rows, min_rating: float | None = None) -> list[tuple[int, str, str]]:
    """What the movielens preset should keep, by brute force: the earliest rating of each
    (user, movie) pair (equal times: the earlier line), sorted by (ts, raw user, raw item)."""
    kept = [(ts, u, i) for u, i, r, ts in rows if min_rating is None or r >= min_rating]
    first: dict[tuple[str, str], int] = {}
    for _position, (ts, u, i) in sorted(enumerate(kept), key=lambda p: (p[1][0], p[0])):
        first.setdefault((u, i), ts)
    return sorted((ts, u, i) for (u, i), ts in first.items())


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("movielens")
    rows = synthetic_ratings()
    path = folder / "ratings.csv"
    write_ratings(path, rows)
    return path, rows


@pytest.fixture(scope="module")
def prepared(ratings, tmp_path_factory):
    path, rows = ratings
    cfg = resolve("movielens", input_path=str(path))
    cache = tmp_path_factory.mktemp("cache")
    log, cached = prepare(cfg.data, cache_root=cache, progress=False)
    return cfg, cache, log, cached


def test_events_are_the_kept_rows_sorted_by_time_then_raw_ids(ratings, prepared):
    _, rows = ratings
    _, _, log, cached = prepared
    assert not cached
    assert log.ts.dtype == np.int64 and log.users.dtype == np.int32 and log.items.dtype == np.int32
    frame = log.frame()
    got = list(zip(frame["ts"].tolist(), frame["user"].tolist(), frame["item"].tolist()))
    assert got == expected_events(rows)
    # raw ids order as text: user "10" comes before user "9" at the same second
    assert got == sorted(got)


def test_codes_follow_first_appearance(prepared):
    _, _, log, _ = prepared
    frame = log.frame()
    for codes, ids, raw in ((log.users, log.user_ids, frame["user"]), (log.items, log.item_ids, frame["item"])):
        assert list(ids[codes]) == raw.tolist()
        values, first = np.unique(codes, return_index=True)
        assert values.tolist() == list(range(len(ids)))  # every code used, none skipped
        assert np.all(np.diff(first) > 0)  # code k first occurs before code k+1
        assert len(set(ids.tolist())) == len(ids)
        assert ids[codes[0]] == raw.iloc[0] and codes[0] == 0


def test_manifest_records_source_options_counts_schedule_and_phases(ratings, prepared):
    path, rows = ratings
    cfg, _, log, _ = prepared
    m = log.manifest
    assert m["format"] == 1 and m["dataset"] == "movielens"
    (source,) = m["source"]["files"]
    assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert source["bytes"] == path.stat().st_size
    assert m["source"]["input"] == str(path.resolve())
    assert m["options"] == json.loads(json.dumps(to_dict(cfg.data)))
    assert m["options"]["preprocess"] == {"repeat_policy": {"keep": "first"}}

    assert m["rejected"]["counts"] == BAD_REASONS
    assert [e.split(": ")[0].rsplit(":", 1)[1] for e in m["rejected"]["examples"]] == ["51", "61", "71"]

    counts = m["counts"]
    n_events = len(expected_events(rows))
    assert counts["read"] == N_ROWS
    (step,) = m["preprocess"]
    assert step["step"] == "repeat_policy" and step["keep"] == "first"
    assert step["before"] == N_ROWS and step["after"] == n_events < N_ROWS
    assert counts["outside_schedule"] == 0
    assert counts["events"] == n_events == len(log.ts)
    assert counts["users"] == len(log.user_ids) == len({u for u, _, _, _ in rows})
    assert counts["items"] == len(log.item_ids) == len({i for _, i, _, _ in rows})
    assert len(counts["period_counts"]) == 40
    assert sum(counts["period_counts"]) == n_events
    assert counts["period_counts"] == np.diff(log.period_bounds()).tolist()
    assert counts["empty_periods"] == []

    edges = np.array(m["schedule"]["edges"])
    assert m["schedule"]["kind"] == "equal_count" and m["schedule"]["params"] == {"n_periods": 40}
    assert len(edges) == 41 and log.schedule.n_periods == 40
    assert edges[0] == log.ts[0] and edges[-1] == log.ts[-1] + 1
    assert np.all(np.diff(edges) > 0)
    # equal count: each period within a few events of the ideal (ties move cuts a little)
    assert max(abs(c - n_events / 40) for c in counts["period_counts"]) < 12
    # cuts sit at timestamp changes: no second is split between two periods
    inner = log.period_bounds()[1:-1]
    assert np.all(log.ts[inner - 1] < log.ts[inner])

    assert m["phases"] == log.phases
    assert log.phases == ["pretrain"] * 10 + ["online"] * 20 + ["validation"] * 3 + ["test"] * 7
    assert [i for i, p in enumerate(log.phases) if p == "validation"] == [30, 31, 32]
    assert [i for i, p in enumerate(log.phases) if p == "test"] == list(range(33, 40))


def test_second_prepare_hits_the_cache_with_identical_arrays(ratings, prepared):
    path, _ = ratings
    _, cache, first, _ = prepared
    again, cached = prepare(resolve("movielens", input_path=str(path)).data, cache_root=cache, progress=False)
    assert cached
    assert again.path == first.path
    for name in ("ts", "users", "items", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert again.manifest == first.manifest
    assert [e["path"] for e in list_prepared(cache)] == [str(first.path)]
    (entry,) = list_prepared(cache)
    assert (entry["dataset"], entry["events"], entry["periods"]) == ("movielens", len(first.ts), 40)


def test_changed_option_misses_the_cache(ratings, prepared):
    path, rows = ratings
    _, cache, first, _ = prepared
    cfg = resolve("movielens", input_path=str(path), overrides=["data.reader.min_rating=4"])
    log, cached = prepare(cfg.data, cache_root=cache, progress=False)
    assert not cached and log.path != first.path
    frame = log.frame()
    assert list(zip(frame["ts"], frame["user"], frame["item"])) == expected_events(rows, min_rating=4)
    below = sum(r < 4 for _, _, r, _ in rows)
    assert log.manifest["rejected"]["counts"] == BAD_REASONS | {"below_rating": below}
    assert log.manifest["counts"]["read"] == N_ROWS - below
    assert log.manifest["options"]["reader"] == {"min_rating": 4}


def test_touched_input_misses_the_cache(ratings, tmp_path):
    path, _ = ratings
    copy = tmp_path / "ratings.csv"
    shutil.copyfile(path, copy)
    cfg = resolve("movielens", input_path=str(copy))
    first, cached_first = prepare(cfg.data, cache_root=tmp_path / "cache", progress=False)
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second, cached_second = prepare(cfg.data, cache_root=tmp_path / "cache", progress=False)
    assert (cached_first, cached_second) == (False, False)
    assert second.path != first.path
    # the same bytes give the same log and checksum
    np.testing.assert_array_equal(second.users, first.users)
    assert second.manifest["source"]["files"][0]["sha256"] == first.manifest["source"]["files"][0]["sha256"]
    assert prepare(cfg.data, cache_root=tmp_path / "cache", progress=False)[1]


def test_a_log_cut_by_an_older_schedule_algorithm_is_prepared_again(ratings, tmp_path, monkeypatch):
    """A cache must not outlive the schedule algorithm that cut it (issue #18): the bulk rule
    changed schedules without changing the cache key, so old caches were reused silently."""
    from replay_data import prepared as prepared_module

    path, _ = ratings
    cfg = resolve("movielens", input_path=str(path))
    monkeypatch.setattr(prepared_module, "SCHEDULE_VERSION", prepared_module.SCHEDULE_VERSION - 1)
    old, _ = prepare(cfg.data, cache_root=tmp_path, progress=False)
    monkeypatch.undo()
    new, cached = prepare(cfg.data, cache_root=tmp_path, progress=False)
    assert not cached and new.path != old.path
    assert new.manifest["schedule_version"] == prepared_module.SCHEDULE_VERSION
    version = prepared_module.SCHEDULE_VERSION
    with pytest.raises(InputError, match=rf"schedule algorithm {version - 1}, this rtsim uses {version}.*--force"):
        load(old.path)  # named by path (export-sml), an old log is refused too


def test_frame_gives_raw_ids_for_a_row_range(ratings, prepared):
    _, rows = ratings
    _, _, log, _ = prepared
    part = log.frame(5, 12)
    assert list(part.columns) == ["ts", "user", "item"]
    assert list(zip(part["ts"], part["user"], part["item"])) == expected_events(rows)[5:12]
    assert all(isinstance(v, str) for v in part["user"].tolist() + part["item"].tolist())
    assert len(log.frame(len(log.ts) - 3)) == 3


def test_strict_mode_stops_at_the_first_malformed_line(ratings, tmp_path):
    path, _ = ratings
    cfg = resolve("movielens", input_path=str(path), overrides=["data.strict=true"])
    with pytest.raises(MalformedInputError, match=r"ratings\.csv:51: bad_timestamp"):
        prepare(cfg.data, cache_root=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_too_few_periods_names_both_numbers(ratings, tmp_path):
    path, _ = ratings
    cfg = resolve("movielens", input_path=str(path), overrides=["data.schedule.params.n_periods=30"])
    with pytest.raises(ConfigError, match=r"yields 30 periods but 40 are needed"):
        prepare(cfg.data, cache_root=tmp_path, progress=False)


def test_extra_schedule_periods_are_cut_off_and_counted(ratings, tmp_path):
    path, rows = ratings
    cfg = resolve("movielens", input_path=str(path), overrides=["data.schedule.params.n_periods=50"])
    log, _ = prepare(cfg.data, cache_root=tmp_path, progress=False)
    counts = log.manifest["counts"]
    n_kept = len(expected_events(rows))
    assert log.schedule.n_periods == 40 == len(log.phases)
    assert counts["events"] + counts["outside_schedule"] == n_kept
    assert counts["events"] == int((log.ts < log.schedule.edges[-1]).sum()) == len(log.ts)
    assert 8 * n_kept // 50 < counts["outside_schedule"] < 12 * n_kept // 50  # about 10 of 50 periods


def test_phases_without_periods_fix_the_number_of_periods(ratings, tmp_path):
    """data.periods unset but phases given: the schedule is cut to the phases' total, so the
    manifest never pairs 40 phase labels with 50 periods."""
    path, _ = ratings
    cfg = resolve(
        "movielens", input_path=str(path), overrides=["data.periods=null", "data.schedule.params.n_periods=50"]
    )
    log, _ = prepare(cfg.data, cache_root=tmp_path, progress=False)
    assert len(log.phases) == log.schedule.n_periods == 40
    assert len(log.manifest["counts"]["period_counts"]) == 40
    assert log.manifest["counts"]["outside_schedule"] > 0


def test_without_phases_or_periods_every_schedule_period_gets_a_default_phase(ratings, tmp_path):
    path, _ = ratings
    cfg = resolve(
        "movielens",
        input_path=str(path),
        overrides=["data.periods=null", "data.phases=null", "data.schedule.params.n_periods=12"],
    )
    log, _ = prepare(cfg.data, cache_root=tmp_path, progress=False)
    # T=12: pretrain 3, online 6, validation 1, test 2
    assert log.phases == ["pretrain"] * 3 + ["online"] * 6 + ["validation"] + ["test"] * 2
    assert log.manifest["counts"]["outside_schedule"] == 0


def test_load_of_a_folder_without_manifest(tmp_path):
    (tmp_path / "events.parquet").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"not a prepared log \(no manifest\.json\).*rtsim prepare"):
        load(tmp_path)


def test_missing_input_names_the_path(tmp_path):
    cfg = resolve("movielens", input_path=str(tmp_path / "absent.csv"))
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        prepare(cfg.data, cache_root=tmp_path / "cache", progress=False)


def test_tiny_synthetic_preset_prepares_deterministically(tmp_path):
    cfg = resolve("tiny")
    a, cached_a = prepare(cfg.data, cache_root=tmp_path / "a", progress=False)
    b, cached_b = prepare(cfg.data, cache_root=tmp_path / "b", progress=False)
    assert not cached_a and not cached_b
    for name in ("ts", "users", "items", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.schedule == b.schedule
    assert a.manifest["counts"] == b.manifest["counts"]
    assert a.manifest["source"]["kind"] == "synthetic"
    assert a.phases == ["pretrain"] * 2 + ["online"] * 3 + ["validation"] + ["test"] * 2
    assert sum(a.manifest["counts"]["period_counts"]) == len(a.ts) > 1000
    # another seed is another world
    other, _ = prepare(
        resolve("tiny", overrides=["data.reader.seed=1"]).data, cache_root=tmp_path / "a", progress=False
    )
    assert other.path != a.path
    assert len(other.ts) != len(a.ts) or not np.array_equal(other.items, a.items)


# -- time outliers (issue #18) -----------------------------------------------------------

OSLO_2017_01_01 = 1483225200  # local midnight in Europe/Oslo
YEAR_9999 = 253402300799


def _adressa_file(path, stray_times: list[int]) -> None:
    from tests.test_readers import adressa_view

    times = [OSLO_2017_01_01 + 600 + i * (21 * 86_400 - 1200) // 4000 for i in range(4001)] + stray_times
    path.write_text(
        "\n".join(adressa_view(f"u{i % 97}", ts, event=i, item=f"{i % 301:040d}") for i, ts in enumerate(times)) + "\n"
    )


def test_a_record_dated_1970_or_9999_neither_moves_nor_stretches_the_schedule(tmp_path):
    """One `"time": 0` record started the daily-slot schedule in 1970 (4,001 of 4,002 events
    outside it); one dated 9999 was folded into the last equal-count period."""
    source = tmp_path / "20170101"
    _adressa_file(source, [0, YEAR_9999])
    cfg = resolve("adressa", input_path=str(source))
    log, _ = prepare(cfg.data, cache_root=tmp_path / "cache", progress=False)
    counts = log.manifest["counts"]
    assert log.schedule.edges[0] == OSLO_2017_01_01 and log.schedule.n_periods == 63
    assert counts["events"] == 4001 and counts["time_outliers"] == 2 and counts["outside_schedule"] == 0
    assert log.manifest["rejected"]["counts"]["time_outlier"] == 2
    assert not log.manifest["counts"]["empty_periods"]

    by_count = resolve(
        "adressa", input_path=str(source), overrides=["data.schedule={kind: equal_count, params: {n_periods: 63}}"]
    )
    log, _ = prepare(by_count.data, cache_root=tmp_path / "cache", progress=False)
    assert log.schedule.edges[-1] == log.ts.max() + 1 < YEAR_9999


def test_a_mostly_rejected_input_fails_unless_rejects_are_allowed(tmp_path):
    source = tmp_path / "20170101"
    _adressa_file(source, [])
    with source.open("a") as handle:  # 1,100 of 5,101 records malformed: over 20%
        handle.write(('{"id": "' + "a" * 40 + '", "userId": \n') * 1100)  # truncated clicks
    cfg = resolve("adressa", input_path=str(source))
    with pytest.raises(ConfigError, match=r"1,100 of 5,101 records were rejected.*--allow-rejects"):
        prepare(cfg.data, cache_root=tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").glob("*/manifest.json"))
    log, _ = prepare(cfg.data, cache_root=tmp_path / "cache", progress=False, allow_rejects=True)
    assert log.manifest["counts"]["events"] == 4001


def test_a_write_that_fails_leaves_no_half_prepared_log(ratings, tmp_path, monkeypatch):
    import errno

    import replay_data.prepared as prepared_module

    path, _ = ratings
    cfg = resolve("movielens", input_path=str(path))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepared_module.pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        prepare(cfg.data, cache_root=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())
