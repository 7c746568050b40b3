import datetime as dt
import json
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay_data.schedules import (
    KINDS,
    Schedule,
    build_schedule,
    daily_slots,
    empty_periods,
    equal_count,
    fixed,
    period_counts,
    period_index,
)

OSLO = ZoneInfo("Europe/Oslo")
HOUR = 3600


def utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp())


def local_hm(edge: int, zone: ZoneInfo = OSLO) -> tuple[int, int]:
    wall = dt.datetime.fromtimestamp(int(edge), zone)
    return wall.hour, wall.minute


# --- daily_slots -------------------------------------------------------------------------


def test_daily_slots_oslo_spring_forward_day_has_23_hours():
    ts = np.array([utc(2017, 3, 26, 1), utc(2017, 3, 26, 20)])  # 02:00 CET -> 03:00 CEST; 22:00 CEST
    edges = daily_slots(ts)
    # 00:00 CET (+1), then 10:00 and 17:00 CEST (+2), next midnight CEST
    assert edges.tolist() == [utc(2017, 3, 25, 23), utc(2017, 3, 26, 8), utc(2017, 3, 26, 15), utc(2017, 3, 26, 22)]
    assert np.diff(edges).tolist() == [9 * HOUR, 7 * HOUR, 7 * HOUR]


def test_daily_slots_oslo_fall_back_day_has_25_hours():
    ts = np.array([utc(2017, 10, 29, 1), utc(2017, 10, 29, 20)])
    edges = daily_slots(ts)
    assert edges.tolist() == [utc(2017, 10, 28, 22), utc(2017, 10, 29, 9), utc(2017, 10, 29, 16), utc(2017, 10, 29, 23)]
    assert edges[-1] - edges[0] == 25 * HOUR


@settings(max_examples=60, deadline=None)
@given(
    first=st.dates(min_value=dt.date(2015, 1, 1), max_value=dt.date(2019, 12, 31)),
    n_days=st.integers(1, 80),
    offset_s=st.integers(0, 86399),
)
def test_daily_slots_three_per_day_at_local_times(first, n_days, offset_s):
    start = int(dt.datetime(first.year, first.month, first.day, tzinfo=OSLO).timestamp())
    ts = np.array([start + offset_s, start + (n_days - 1) * 86400 + offset_s // 2])
    edges = daily_slots(ts, start=first.isoformat(), days=n_days)
    assert edges.size == 3 * n_days + 1
    assert np.all(np.diff(edges) > 0)
    assert [local_hm(e) for e in edges] == [(0, 0), (10, 0), (17, 0)] * n_days + [(0, 0)]
    for d in range(n_days):
        day = first + dt.timedelta(days=d)
        assert dt.datetime.fromtimestamp(int(edges[3 * d]), OSLO).date() == day
        assert edges[3 * d + 3] - edges[3 * d] in (23 * HOUR, 24 * HOUR, 25 * HOUR)
    assert np.all(period_index(ts, edges) >= 0)


def test_daily_slots_default_start_and_end_cover_every_event():
    ts = np.array([utc(2017, 1, 1, 9), utc(2017, 1, 3, 13)])  # 10:00 and 14:00 Oslo
    edges = daily_slots(ts)
    assert edges[0] == utc(2016, 12, 31, 23)  # local midnight of the first event's day
    assert edges[-1] == utc(2017, 1, 3, 16)  # 17:00 on the last day: first boundary after it
    assert edges[-2] <= ts[-1] < edges[-1]
    assert edges.size == 3 * 2 + 2 + 1
    assert period_index(ts, edges).tolist() == [1, 7]


def test_daily_slots_days_fixes_the_span_like_the_adressa_preset():
    first = utc(2017, 1, 1, 5)
    ts = np.array([first, first + 25 * 86400])
    schedule = build_schedule("daily_slots", ts, days=21)
    assert schedule.n_periods == 63
    assert schedule.edges[-1] == utc(2017, 1, 21, 23)  # midnight Oslo after 21 days
    assert period_index(ts, schedule.edges).tolist() == [0, -1]


def test_daily_slots_events_before_first_slot_are_outside():
    ts = np.array([utc(2017, 1, 1, 3), utc(2017, 1, 1, 12)])  # 04:00 and 13:00 Oslo
    edges = daily_slots(ts, slots=["06:00", "18:00"])
    assert [local_hm(e) for e in edges] == [(6, 0), (18, 0)]
    assert period_index(ts, edges).tolist() == [-1, 0]


def test_daily_slots_utc_and_integer_start():
    ts = np.array([utc(2017, 3, 26, 12)])
    edges = daily_slots(ts, tz="UTC", start=utc(2017, 3, 26, 18), days=1)
    assert edges.tolist() == [utc(2017, 3, 26), utc(2017, 3, 26, 10), utc(2017, 3, 26, 17), utc(2017, 3, 27)]


def test_skipped_wall_time_maps_to_the_instant_of_the_jump():
    ts = np.array([utc(2017, 3, 26, 12)])
    # 02:30 and 03:00 do not both exist on the Oslo spring-forward day: both are 01:00 UTC
    edges = daily_slots(ts, slots=["02:30", "03:00"], days=1, start="2017-03-26")
    assert edges.tolist() == [utc(2017, 3, 26, 1), utc(2017, 3, 26, 1), utc(2017, 3, 27, 0, 30)]
    # Sao Paulo skipped midnight on 2018-11-04 (00:00 -> 01:00 at 03:00 UTC)
    sp = daily_slots(np.array([utc(2018, 11, 4, 12)]), tz="America/Sao_Paulo", start="2018-11-04", days=1)
    assert sp[0] == utc(2018, 11, 4, 3)
    assert local_hm(sp[0], ZoneInfo("America/Sao_Paulo")) == (1, 0)
    assert local_hm(sp[1], ZoneInfo("America/Sao_Paulo")) == (10, 0)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"slots": ["00:00", "25:00"]}, "25:00"),
        ({"slots": ["10:60"]}, "10:60"),
        ({"slots": ["noon"]}, "noon"),
        ({"slots": "10:00"}, "list"),
        ({"slots": []}, "non-empty"),
        ({"slots": ["10:00", "09:00"]}, "strictly increasing"),
        ({"tz": "Mars/Olympus_Mons"}, "Mars/Olympus_Mons"),
        ({"days": 0}, "days"),
        ({"days": True}, "days"),
        ({"start": "first of May"}, "first of May"),
        ({"start": "2030-01-01"}, "after the last event"),
    ],
)
def test_daily_slots_bad_params(params, message):
    with pytest.raises(ValueError, match=message):
        build_schedule("daily_slots", np.array([utc(2017, 1, 1)]), **params)


# --- equal_count -------------------------------------------------------------------------


def test_equal_count_moves_a_tied_cut_forward_to_the_next_change():
    ts = np.array([1, 1, 1, 1, 2, 3])
    edges = equal_count(ts, 3)  # ideal cuts at indices 2 and 4; the first splits the 1s
    assert edges.tolist() == [1, 2, 2, 4]
    counts = period_counts(ts, edges)
    assert counts.tolist() == [4, 0, 2]
    assert empty_periods(counts) == [1]


def test_equal_count_all_ties_and_fewer_events_than_periods():
    assert equal_count(np.array([7, 7, 7, 7]), 3).tolist() == [7, 8, 8, 8]
    edges = equal_count(np.array([5, 6]), 4)
    assert edges.tolist() == [5, 5, 6, 6, 7]
    assert period_counts(np.array([5, 6]), edges).tolist() == [0, 1, 0, 1]


def brute_moved_cut(ts: list[int], cut: int) -> int:
    """First index >= cut that does not split equal timestamps."""
    j = cut
    while 0 < j < len(ts) and ts[j - 1] == ts[j]:
        j += 1
    return j


@settings(max_examples=200, deadline=None)
@given(
    ts=st.lists(st.integers(0, 30), min_size=1, max_size=120).map(sorted),
    n_periods=st.integers(1, 50),
)
def test_equal_count_never_splits_a_timestamp_and_covers_everything(ts, n_periods):
    arr = np.array(ts, dtype=np.int64)
    edges = equal_count(arr, n_periods)
    assert edges.size == n_periods + 1
    assert np.all(np.diff(edges) >= 0)
    idx = period_index(arr, edges)
    assert np.all(idx >= 0)
    assert period_counts(arr, edges).sum() == len(ts)
    for value in set(ts):
        assert len(set(idx[arr == value].tolist())) == 1
    for k in range(1, n_periods):
        events_before = int((arr < edges[k]).sum())
        assert events_before == brute_moved_cut(ts, k * len(ts) // n_periods)


@settings(max_examples=100, deadline=None)
@given(
    ts=st.lists(st.integers(0, 10**9), min_size=1, max_size=300, unique=True).map(sorted),
    n_periods=st.integers(1, 40),
)
def test_equal_count_without_ties_is_near_equal(ts, n_periods):
    counts = period_counts(np.array(ts), equal_count(np.array(ts), n_periods))
    n = len(ts)
    assert set(counts.tolist()) <= {n // n_periods, -(-n // n_periods)}
    assert counts.sum() == n


def test_equal_count_bad_input():
    with pytest.raises(ValueError, match="sorted"):
        equal_count(np.array([3, 1, 2]), 2)
    with pytest.raises(ValueError, match="n_periods must be >= 1"):
        build_schedule("equal_count", np.array([1, 2]), n_periods=0)
    with pytest.raises(ValueError, match="empty"):
        equal_count(np.array([], dtype=np.int64), 2)
    with pytest.raises(ValueError, match="integer"):
        equal_count(np.array([1.5, 2.0]), 2)


# --- fixed -------------------------------------------------------------------------------


def test_fixed_grid_from_first_event_or_start():
    ts = np.array([100, 150, 399])
    assert fixed(ts, duration_s=100).tolist() == [100, 200, 300, 400]
    assert fixed(ts, duration_s=100, start=50).tolist() == [50, 150, 250, 350, 450]
    assert fixed(ts, duration_s=300, start=120).tolist() == [120, 420]
    assert period_index(ts, fixed(ts, duration_s=300, start=120)).tolist() == [-1, 0, 0]
    with pytest.raises(ValueError, match="duration_s must be >= 1"):
        fixed(ts, duration_s=0)
    with pytest.raises(ValueError, match="after the last event"):
        fixed(ts, duration_s=10, start=400)


# --- period_index / counts ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    edges=st.lists(st.integers(-20, 20), min_size=2, max_size=10).map(sorted),
    ts=st.lists(st.integers(-30, 30), max_size=60),
)
def test_period_index_matches_brute_force(edges, ts):
    expected = []
    for t in ts:
        found = -1
        for p in range(len(edges) - 1):
            if edges[p] <= t < edges[p + 1]:
                found = p
        expected.append(found)
    assert period_index(np.array(ts, dtype=np.int64), np.array(edges)).tolist() == expected
    counts = period_counts(np.array(ts, dtype=np.int64), np.array(edges))
    assert counts.tolist() == [expected.count(p) for p in range(len(edges) - 1)]
    assert empty_periods(counts) == [p for p in range(len(edges) - 1) if p not in expected]


# --- Schedule / build_schedule -----------------------------------------------------------


def test_schedule_round_trips_through_json():
    ts = np.array([utc(2017, 1, 1, 5), utc(2017, 1, 2, 20)])
    for kind, params in [
        ("daily_slots", {"days": 2}),
        ("equal_count", {"n_periods": 3}),
        ("fixed", {"duration_s": 3600}),
    ]:
        schedule = build_schedule(kind, ts, **params)
        again = Schedule.from_dict(json.loads(json.dumps(schedule.to_dict())))
        assert again == schedule
        assert again.edges.dtype == np.int64
    daily = build_schedule("daily_slots", ts, days=2)
    assert daily.params == {"slots": ["00:00", "10:00", "17:00"], "tz": "Europe/Oslo", "days": 2, "start": None}
    assert daily.to_dict()["edges"][:2] == [utc(2016, 12, 31, 23), utc(2017, 1, 1, 9)]


def test_schedule_is_immutable_and_validated():
    schedule = build_schedule("fixed", np.array([0, 10]), duration_s=5)
    with pytest.raises(ValueError):
        schedule.edges[0] = 3
    with pytest.raises(ValueError, match="must not decrease"):
        Schedule.from_dict({"kind": "fixed", "params": {}, "edges": [5, 3]})
    with pytest.raises(ValueError, match="missing key"):
        Schedule.from_dict({"kind": "fixed", "edges": [1, 2]})
    with pytest.raises(ValueError, match="at least two edges"):
        Schedule("fixed", {}, [1])


def test_build_schedule_rejects_unknown_kind_and_params():
    ts = np.array([1, 2, 3])
    with pytest.raises(ValueError, match="unknown schedule kind 'weekly'.*daily_slots, equal_count, fixed"):
        build_schedule("weekly", ts)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['periods'\].*n_periods"):
        build_schedule("equal_count", ts, periods=3)
    with pytest.raises(ValueError, match="needs parameter.*duration_s"):
        build_schedule("fixed", ts)
    assert KINDS == ("daily_slots", "equal_count", "fixed")
