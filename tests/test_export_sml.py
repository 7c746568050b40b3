"""`rtsim export-sml`: the SML authors' file layout, with our evaluation's candidates.

Two prepared logs: the `tiny` preset (115 items: every test row has fewer than 999
eligible negatives, so every row is padded) and a synthetic MovieLens-format log whose
catalogue is introduced early (1,200 items in period 0), so later rows draw 999 of many.
Negatives are checked by brute force against the train files written beside them.
"""

from __future__ import annotations

import numpy as np
import pytest

from learner.candidates import sample_eval_candidates
from learner.history import History
from learner.period import stream_rng
from replay_data.prepared import prepare
from simulator.config import resolve
from simulator.export_sml import export_sml

N_NEG = 999


def write_wide_ratings(path, n_items: int = 1500, n_users: int = 40, n_rows: int = 4000) -> None:
    rng = np.random.default_rng(7)
    items = rng.integers(0, n_items, n_rows)
    items[:1200] = rng.permutation(1200)  # the first rows bring 1,200 items
    users = rng.integers(0, n_users, n_rows)
    ts = 1_500_000_000 + np.sort(rng.integers(0, 80 * 86_400, n_rows))
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"u{u},m{i},4.0,{t}" for u, i, t in zip(users, items, ts)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def wide_log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wide")
    write_wide_ratings(folder / "ratings.csv")
    cfg = resolve(
        "movielens",
        input_path=str(folder / "ratings.csv"),
        overrides=[
            "data.schedule.params.n_periods=6",
            "data.periods=6",
            "data.phases={pretrain: 1, online: 3, validation: 1, test: 1}",
        ],
    )
    log, _ = prepare(cfg.data, cache_root=folder / "cache", progress=False)
    return log


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    log, _ = prepare(resolve("tiny").data, cache_root=tmp_path_factory.mktemp("tiny"), progress=False)
    return log


def read_export(out, n_periods):
    info = np.load(out / "information.npy")
    train = [np.load(out / "train" / f"{t}.npy") for t in range(n_periods)]
    test = [np.load(out / "test" / f"{t}.npy") for t in range(n_periods)]
    return info, train, test


def check_layout(log, out, summary):
    n_periods = len(log.phases)
    info, train, test = read_export(out, n_periods)
    assert info.tolist() == [len(log.ts), len(log.user_ids), len(log.item_ids)]
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(f"{t}.npy" for t in range(n_periods))
    bounds = log.period_bounds()
    for t in range(n_periods):
        lo, hi = bounds[t], bounds[t + 1]
        assert train[t].shape == (hi - lo, 2)
        np.testing.assert_array_equal(train[t][:, 0], log.users[lo:hi])
        np.testing.assert_array_equal(train[t][:, 1], log.items[lo:hi])
        assert test[t].shape == (hi - lo, 1 + 1 + N_NEG)
        np.testing.assert_array_equal(test[t][:, :2], train[t])
    assert summary["periods"] == n_periods and summary["interactions"] == len(log.ts)
    return train, test


def brute_force_check(train, test):
    """Every row against the history rebuilt from the train files.

    Returns the number of rows with 999 negatives, with fewer (padded), and with none."""
    history: dict[int, set[int]] = {}
    n_seen = 0
    full = padded = empty = 0
    for t in range(len(train)):
        for row, (u, i) in enumerate(train[t].tolist()):
            history.setdefault(u, set()).add(i)
            n_seen = max(n_seen, i + 1)  # codes in first-appearance order: seen = range(n_seen)
            negatives = test[t][row, 2:]
            eligible = n_seen - len(history[u])
            if eligible == 0:  # nothing to draw: the positive fills the row (never -1)
                empty += 1
                assert np.all(negatives == i), (t, row)
                continue
            if eligible >= N_NEG:
                full += 1
                assert len(np.unique(negatives)) == N_NEG, (t, row)
            else:
                padded += 1
                # all eligible items are used, then repeated to fill the row
                assert set(negatives.tolist()) == set(range(n_seen)) - history[u], (t, row)
                np.testing.assert_array_equal(negatives, np.resize(negatives[:eligible], N_NEG))
            assert negatives.min() >= 0 and negatives.max() < n_seen, (t, row)
            assert not history[u].intersection(negatives.tolist()), (t, row)
    return full, padded, empty


def test_wide_log_layout_and_negatives(wide_log, tmp_path):
    summary = export_sml(wide_log, tmp_path / "sml", seed=0, progress=False)
    train, test = check_layout(wide_log, tmp_path / "sml", summary)
    full, padded, empty = brute_force_check(train, test)
    assert full > 2000  # most rows really draw 999 of a larger pool
    assert padded > 0 and summary["padded_rows"] == padded + empty
    assert empty >= 1 and summary["rows_without_negatives"] == empty  # at least the log's first row


def test_negatives_are_the_evaluation_candidates_for_the_run_seed(wide_log, tmp_path):
    seed = 3
    summary = export_sml(wide_log, tmp_path / "sml", seed=seed, progress=False)
    _, train, test = read_export(tmp_path / "sml", len(wide_log.phases))
    history = History()
    n_items_before = 0
    for t in range(len(train)):
        u, i = train[t][:, 0], train[t][:, 1]
        cand = sample_eval_candidates(history, u, i, n_items_before, N_NEG, stream_rng(seed, "eval", t))
        full = cand.counts == N_NEG
        np.testing.assert_array_equal(test[t][full, 2:], cand.negatives[full])
        for row in np.flatnonzero(~full):
            np.testing.assert_array_equal(
                test[t][row, 2 : 2 + cand.counts[row]], cand.negatives[row, : cand.counts[row]]
            )
        history.extend(u, i)
        n_items_before = int(i.max()) + 1
    # another seed draws other negatives (same positives)
    export_sml(wide_log, tmp_path / "seed0", seed=0, progress=False)
    other = np.load(tmp_path / "seed0" / "test" / "5.npy")
    np.testing.assert_array_equal(other[:, :2], test[5][:, :2])
    assert not np.array_equal(other, test[5])
    assert summary["padded_rows"] > 0


def test_tiny_log_every_row_padded_with_all_eligible_items(tiny_log, tmp_path):
    summary = export_sml(tiny_log, tmp_path / "sml", progress=False)
    train, test = check_layout(tiny_log, tmp_path / "sml", summary)
    full, padded, empty = brute_force_check(train, test)
    assert full == 0 and padded + empty == len(tiny_log.ts) == summary["padded_rows"]
    assert padded > 0 and summary["rows_without_negatives"] == empty >= 1
