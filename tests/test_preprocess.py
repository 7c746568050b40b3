import itertools
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay_data.preprocess import STEP_ORDER, apply_steps, dedup_exact, kcore, repeat_policy, time_window


def frame(rows, event_ids=None) -> pd.DataFrame:
    """rows: (ts, user, item); a `row` column records the input position."""
    df = pd.DataFrame(
        {
            "ts": np.array([r[0] for r in rows], dtype=np.int64),
            "user": pd.Series([f"u{r[1]}" for r in rows], dtype="str"),
            "item": pd.Series([f"i{r[2]}" for r in rows], dtype="str"),
            "row": np.arange(len(rows)),
        }
    )
    if event_ids is not None:
        df["event_id"] = pd.Series(event_ids, dtype="str")
    return df


rows_strategy = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 3)), max_size=40)


# --- dedup_exact -------------------------------------------------------------------------


def test_dedup_by_event_id_then_by_key_for_rows_without_id():
    df = frame(
        [(1, 0, 0), (2, 0, 1), (1, 0, 0), (3, 1, 0), (3, 1, 0), (1, 0, 0)],
        event_ids=["e1", "e1", "e2", None, None, None],
    )
    records = []
    out = dedup_exact(df, records=records)
    # row 1 repeats e1; row 4 repeats row 3's key; row 5 shares row 0's key but row 0 has an id
    assert out["row"].tolist() == [0, 2, 3, 5]
    assert out.index.tolist() == [0, 1, 2, 3]
    assert records == [{"step": "dedup_exact", "before": 6, "after": 4, "dropped_by_event_id": 1, "dropped_by_key": 1}]


@settings(max_examples=100, deadline=None)
@given(rows=rows_strategy)
def test_dedup_without_event_id_keeps_first_of_each_key(rows):
    out = dedup_exact(frame(rows))
    first = {}
    for pos, key in enumerate(rows):
        first.setdefault(key, pos)
    assert out["row"].tolist() == sorted(first.values())


# --- repeat_policy -----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(rows=rows_strategy, keep=st.sampled_from(["first", "last"]))
def test_repeat_policy_keeps_one_row_per_pair_with_the_right_time(rows, keep):
    records = []
    out = repeat_policy(frame(rows), keep, records=records)
    chosen = {}
    for pos, (ts, user, item) in enumerate(rows):
        rank = (ts, pos)  # ties broken by input position
        best = chosen.get((user, item))
        if best is None or (rank < best if keep == "first" else rank > best):
            chosen[(user, item)] = rank
    assert out["row"].tolist() == sorted(pos for _, pos in chosen.values())
    pairs = list(zip(out["user"], out["item"]))
    assert len(pairs) == len(set(pairs)) == len({(u, i) for _, u, i in rows})
    assert records == [{"step": "repeat_policy", "before": len(rows), "after": len(chosen), "keep": keep}]


def test_repeat_policy_ties_and_all():
    df = frame([(5, 0, 0), (3, 0, 0), (3, 0, 0), (9, 1, 1), (5, 0, 0)])
    assert repeat_policy(df, "first")["row"].tolist() == [1, 3]
    assert repeat_policy(df, "last")["row"].tolist() == [3, 4]
    records = []
    assert repeat_policy(df, "all", records=records)["row"].tolist() == [0, 1, 2, 3, 4]
    assert records == [{"step": "repeat_policy", "before": 5, "after": 5, "keep": "all"}]
    with pytest.raises(ValueError, match="repeat_policy.keep.*'newest'"):
        repeat_policy(df, "newest")


# --- kcore -------------------------------------------------------------------------------


def valid_core(rows, subset, min_user, min_item) -> bool:
    users = Counter(rows[i][1] for i in subset)
    items = Counter(rows[i][2] for i in subset)
    return all(c >= min_user for c in users.values()) and all(c >= min_item for c in items.values())


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)), max_size=9),
    min_user=st.integers(0, 4),
    min_item=st.integers(0, 4),
)
def test_iterated_kcore_is_the_largest_valid_subset(rows, min_user, min_item):
    out = kcore(frame(rows), min_user=min_user, min_item=min_item)
    best: set[int] = set()
    for size in range(len(rows) + 1):
        for subset in itertools.combinations(range(len(rows)), size):
            if valid_core(rows, subset, min_user, min_item) and size > len(best):
                best = set(subset)
    assert out["row"].tolist() == sorted(best)


def brute_kcore(rows, min_user, min_item, iterate):
    alive = list(range(len(rows)))
    while True:
        before = len(alive)
        for side, k in ((1, min_user), (2, min_item)):
            counts = Counter(rows[i][side] for i in alive)
            alive = [i for i in alive if counts[rows[i][side]] >= k]
        if not iterate or len(alive) == before:
            return alive


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 15), st.integers(0, 15)), max_size=150),
    min_user=st.integers(0, 6),
    min_item=st.integers(0, 6),
    iterate=st.booleans(),
)
def test_kcore_matches_brute_force_fixed_point_and_single_pass(rows, min_user, min_item, iterate):
    records = []
    out = kcore(frame(rows), min_user=min_user, min_item=min_item, iterate=iterate, records=records)
    assert out["row"].tolist() == brute_kcore(rows, min_user, min_item, iterate)
    if iterate:
        assert out["user"].value_counts().to_numpy().min(initial=min_user) >= min_user
        assert out["item"].value_counts().to_numpy().min(initial=min_item) >= min_item
    assert records[0]["before"] == len(rows) and records[0]["after"] == len(out)


def test_single_pass_can_leave_users_below_threshold():
    # u0 has 2 rows, one on item i1 that has a single row; dropping i1 leaves u0 with 1
    rows = [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 0), (0, 2, 0), (0, 2, 0)]
    records = []
    once = kcore(frame(rows), min_user=2, min_item=2, iterate=False, records=records)
    assert once["row"].tolist() == [0, 2, 3, 4, 5]
    assert (once["user"] == "u0").sum() == 1
    fixed_point = kcore(frame(rows), min_user=2, min_item=2, records=records)
    assert fixed_point["row"].tolist() == [2, 3, 4, 5]
    assert records == [
        {"step": "kcore", "before": 6, "after": 5, "min_user": 2, "min_item": 2, "iterate": False, "passes": 1},
        {"step": "kcore", "before": 6, "after": 4, "min_user": 2, "min_item": 2, "iterate": True, "passes": 3},
    ]


def test_kcore_thresholds_zero_and_one_disable_a_side():
    df = frame([(0, 0, 0), (0, 0, 1), (0, 1, 2)])
    assert kcore(df, min_user=1, min_item=0)["row"].tolist() == [0, 1, 2]
    assert kcore(df, min_user=2, min_item=1)["row"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="kcore.min_item must be >= 0"):
        kcore(df, min_item=-1)
    with pytest.raises(ValueError, match="kcore.iterate"):
        kcore(df, iterate="yes")


# --- time_window -------------------------------------------------------------------------


def test_time_window_start_inclusive_end_exclusive():
    df = frame([(5, 0, 0), (10, 0, 0), (15, 0, 0), (20, 0, 0)])
    records = []
    assert time_window(df, 10, 20, records=records)["ts"].tolist() == [10, 15]
    assert time_window(df, start=15)["ts"].tolist() == [15, 20]
    assert time_window(df, end=10)["ts"].tolist() == [5]
    assert records == [{"step": "time_window", "before": 4, "after": 2, "start": 10, "end": 20}]
    with pytest.raises(ValueError, match="must be before"):
        time_window(df, 20, 20)
    with pytest.raises(ValueError, match="time_window.start must be an integer"):
        time_window(df, start="2017-01-01")


# --- apply_steps -------------------------------------------------------------------------


def test_apply_steps_runs_in_fixed_order_and_chains_counts():
    rows = [(t % 7, t % 5, t % 3) for t in range(60)] + [(100, 9, 9)]
    df = frame(rows, event_ids=[f"e{t % 50}" for t in range(61)])
    config = {
        "kcore": {"min_user": 3, "min_item": 3},
        "repeat_policy": {"keep": "last"},
        "dedup_exact": True,
        "time_window": {"end": 100},
    }
    out, records = apply_steps(df, config)
    assert [r["step"] for r in records] == list(STEP_ORDER)
    assert [(r["before"], r["after"]) for r in records] == [(61, 60), (60, 50), (50, 15), (15, 15)]
    expected = kcore(repeat_policy(dedup_exact(time_window(df, end=100)), "last"), min_user=3, min_item=3)
    pd.testing.assert_frame_equal(out, expected)


def test_apply_steps_skips_disabled_steps_and_uses_defaults():
    df = frame([(1, 0, 0), (2, 0, 0), (2, 0, 0)])
    out, records = apply_steps(df, {"dedup_exact": False, "repeat_policy": True, "kcore": None})
    assert out["row"].tolist() == [0]
    assert records == [{"step": "repeat_policy", "before": 3, "after": 1, "keep": "first"}]
    assert apply_steps(df, {})[1] == []


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"dedup": True},
            "unknown preprocessing step 'dedup'; allowed: time_window, dedup_exact, repeat_policy, kcore",
        ),
        (
            {"kcore": {"min_users": 5}},
            r"unknown parameter 'kcore.min_users'; allowed for kcore: \['min_user', 'min_item', 'iterate'\]",
        ),
        ({"dedup_exact": {"keep": "first"}}, "unknown parameter 'dedup_exact.keep'; allowed for dedup_exact: none"),
        ({"repeat_policy": "first"}, "step 'repeat_policy': expected true, false or a mapping"),
        ({"repeat_policy": {"keep": "newest"}}, "repeat_policy.keep must be one of"),
        ({"kcore": {"min_user": -2}}, "kcore.min_user must be >= 0"),
        (["kcore"], "must be a mapping"),
    ],
)
def test_apply_steps_config_errors_name_the_bad_key(config, message):
    with pytest.raises(ValueError, match=message):
        apply_steps(frame([(1, 0, 0)]), config)


def test_missing_columns_are_reported():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['item'\]"):
        dedup_exact(pd.DataFrame({"ts": [1], "user": ["a"]}))
