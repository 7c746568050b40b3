import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from learner.candidates import sample_eval_candidates
from learner.history import History
from learner.negatives import period_negatives, sample_training_negatives


def _stream(seed: int, n_prev: int, n_now: int, n_users: int, n_items: int):
    """Previous periods and a current period; current items may be new (codes >= n_items)."""
    rng = np.random.default_rng(seed)
    history = History()
    if n_prev:
        history.extend(rng.integers(0, n_users, n_prev), rng.integers(0, n_items, n_prev))
    users = rng.integers(0, n_users + 5, n_now)
    items = rng.integers(0, n_items + 7, n_now)
    return history, users, items


def _brute_force_eligible(history, users, items, n_items_before, row):
    pool = max(n_items_before, int(items[: row + 1].max()) + 1)
    seen = {i for (u, i) in zip(history.users, history.items) if u == users[row]}
    seen |= {i for u, i in zip(users[: row + 1], items[: row + 1]) if u == users[row]}
    return set(range(pool)) - seen, pool


@given(
    seed=st.integers(0, 10_000),
    n_prev=st.integers(0, 400),
    n_now=st.integers(1, 60),
    n_items=st.integers(1, 60),
    n_neg=st.sampled_from([3, 20, 999]),
)
def test_eval_candidates_follow_the_protocol(seed, n_prev, n_now, n_items, n_neg):
    history, users, items = _stream(seed, n_prev, n_now, 12, n_items)
    n_before = n_items if n_prev else 0
    cand = sample_eval_candidates(history, users, items, n_before, n_neg, np.random.default_rng(seed))
    for row in range(n_now):
        eligible, pool = _brute_force_eligible(history, users, items, n_before, row)
        negs = cand.negatives[row, : cand.counts[row]]
        assert len(set(negs.tolist())) == len(negs), "negatives are distinct"
        assert set(negs.tolist()) <= eligible, "only seen items, none in the user's history so far"
        assert cand.counts[row] == min(n_neg, len(eligible)), "all eligible when fewer than asked"
        assert (cand.negatives[row, cand.counts[row] :] == -1).all()


def test_large_pool_rejection_path_keeps_the_rules():
    history, users, items = _stream(1, 50_000, 1_300, 200, 5_000)  # crosses sampling chunks
    cand = sample_eval_candidates(history, users, items, 5_000, 999, np.random.default_rng(0))
    assert (cand.counts == 999).all()
    for row in list(range(0, 1_300, 97)) + [511, 512, 1_023, 1_024]:
        eligible, _ = _brute_force_eligible(history, users, items, 5_000, row)
        negs = cand.negatives[row]
        assert len(set(negs.tolist())) == 999 and set(negs.tolist()) <= eligible


def test_eval_candidates_are_uniform_over_eligible_items():
    # one user, 3,000 items, 30 in history: every eligible item should be drawn ~equally
    history = History()
    history.extend(np.zeros(30, dtype=np.int64), np.arange(30))
    users = np.zeros(400, dtype=np.int64)
    items = np.full(400, 2_999)
    cand = sample_eval_candidates(history, users, items, 3_000, 999, np.random.default_rng(5))
    counts = np.bincount(cand.negatives.ravel(), minlength=3_000)
    assert counts[:30].sum() == 0 and counts[2_999] == 0
    eligible = counts[30:2_999]
    expected = 400 * 999 / len(eligible)
    chi2 = ((eligible - expected) ** 2 / expected).sum()
    # df = 2968: mean 2968, sd ~77; 5 sd is a generous bound for a fixed seed
    assert chi2 < 2968 + 5 * 77


def test_eval_candidates_refuse_a_history_beyond_the_known_items():
    history, users, items = _stream(4, 500, 50, 20, 300)
    with pytest.raises(ValueError, match="n_items_before is 200"):
        sample_eval_candidates(history, users, items, 200, 999, np.random.default_rng(0))


def test_eval_candidates_are_deterministic_per_seed():
    history, users, items = _stream(3, 2_000, 100, 50, 3_000)
    a = sample_eval_candidates(history, users, items, 3_000, 999, np.random.default_rng(9))
    b = sample_eval_candidates(history, users, items, 3_000, 999, np.random.default_rng(9))
    c = sample_eval_candidates(history, users, items, 3_000, 999, np.random.default_rng(10))
    assert np.array_equal(a.negatives, b.negatives) and not np.array_equal(a.negatives, c.negatives)


@given(seed=st.integers(0, 10_000), n_items=st.integers(2, 40))
def test_training_negatives_are_known_items_outside_the_users_history(seed, n_items):
    rng = np.random.default_rng(seed)
    history = History()
    users = rng.integers(0, 10, 300)
    items = rng.integers(0, n_items - 1, 300)  # nobody has seen the last item
    history.extend(users, items)
    neg = sample_training_negatives(history, n_items, users, np.random.default_rng(seed))
    assert ((neg >= 0) & (neg < n_items)).all()
    assert not history.contains(users, neg).any()


def test_history_membership_and_user_items():
    history = History()
    history.extend(np.array([0, 0, 2]), np.array([5, 1, 1]))
    history.extend(np.array([1, 0]), np.array([3, 5]))
    assert history.contains(np.array([0, 0, 1, 2, 2]), np.array([5, 1, 3, 1, 5])).tolist() == [
        True,
        True,
        True,
        True,
        False,
    ]
    rows, items = history.user_items(np.array([2, 0, 7]))
    assert sorted(zip(rows.tolist(), items.tolist())) == [(0, 1), (1, 1), (1, 5)]
    assert history.period_slice(1, 1)[0].tolist() == [1, 0]


@given(st.integers(0, 2**31), st.integers(2, 40))
def test_period_negatives_are_the_periods_items_outside_the_users_period_items(seed, n_items):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 15, 300)
    items = rng.integers(0, n_items, 300) * 3  # sparse ids: the pool is the period's items, not a range
    sample = period_negatives(users, items)
    rows = rng.integers(0, 15, 500)
    neg = sample(rows, np.random.default_rng(seed))
    assert set(neg.tolist()) <= set(items.tolist())
    taken = set(zip(users.tolist(), items.tolist()))
    own = {u: {i for v, i in taken if v == u} for u in set(rows.tolist())}
    # every row avoids its user's items in the period, unless that user took all of them
    assert all((u, j) not in taken or own[u] == set(items.tolist()) for u, j in zip(rows.tolist(), neg.tolist()))
    assert np.array_equal(neg, sample(rows, np.random.default_rng(seed)))


@given(st.integers(0, 2**16), st.integers(0, 3))
def test_history_membership_equals_a_set_lookup(seed, n_periods):
    rng = np.random.default_rng(seed)
    history = History()
    for _ in range(n_periods):  # the per-user index is rebuilt after every extend
        history.extend(rng.integers(0, 30, 200), rng.integers(0, 50, 200))
    known = set(zip(history.users.tolist(), history.items.tolist()))
    users, items = rng.integers(0, 40, (2, 3000))  # users 30-39 are in no history
    expected = np.array([(u, i) in known for u, i in zip(users.tolist(), items.tolist())]).reshape(50, 60)
    assert np.array_equal(history.contains(users.reshape(50, 60), items.reshape(50, 60)), expected)


def _numpy_candidates(history, users, items, n_items_before, n_neg, rng, chunk_rows=512):
    """The NumPy implementation the compiled one replaced, kept whole as the oracle of its
    output: a dense history bitmap per chunk of rows, then the same draws in the same order."""
    n = len(users)
    out, counts = np.full((n, n_neg), -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    pool = np.maximum.accumulate(np.maximum(items + 1, n_items_before))
    before = {}
    for u, i in zip(history.users.tolist(), history.items.tolist()):
        before.setdefault(u, []).append(i)
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        seen = np.zeros((hi - lo, int(pool[-1])), dtype=bool)
        for r in range(lo, hi):
            seen[r - lo, before.get(users[r], [])] = True
            seen[r - lo, items[: r + 1][users[: r + 1] == users[r]]] = True
        eligible = pool[lo:hi] - seen.sum(axis=1)
        for r in np.flatnonzero(eligible <= 2 * n_neg):
            free = np.flatnonzero(~seen[r, : pool[lo + r]])
            if len(free) > n_neg:
                free = rng.choice(free, n_neg, replace=False)
            out[lo + r, : len(free)], counts[lo + r] = free, len(free)
        pending = np.flatnonzero(eligible > 2 * n_neg)
        if len(pending) == 0:
            continue
        frac = np.min((1.1 * n_neg) / eligible[pending])
        draws = int(np.ceil(-np.max(pool[lo + pending]) * np.log1p(-frac))) + 16
        while len(pending):
            cand = np.sort((rng.random((len(pending), draws)) * pool[lo + pending, None]).astype(np.int32), axis=1)
            valid = ~seen[pending[:, None], cand]
            valid[:, 1:] &= cand[:, 1:] != cand[:, :-1]
            done = valid.sum(axis=1) >= n_neg
            keys = rng.random((int(done.sum()), draws))
            keys[~valid[done]] = 2.0
            pick = np.argpartition(keys, n_neg - 1, axis=1)[:, :n_neg]
            out[lo + pending[done]] = np.take_along_axis(cand[done], pick, axis=1)
            counts[lo + pending[done]] = n_neg
            pending = pending[~done]
            draws *= 2
    return out, counts


@pytest.mark.parametrize(
    "seed, n_prev, n_now, n_users, n_items, n_before",
    [
        (1, 50_000, 1_300, 200, 5_000, 5_000),  # large pools, across chunks, some second rounds
        (2, 3_000, 1_100, 30, 2_050, 2_050),  # pools near 2 x 999: both paths in one chunk
        (3, 0, 700, 40, 2_600, 0),  # a first period: pools grow row by row from nothing
    ],
)
def test_eval_candidates_are_the_numpy_implementations_bit_for_bit(seed, n_prev, n_now, n_users, n_items, n_before):
    history, users, items = _stream(seed, n_prev, n_now, n_users, n_items)
    compiled = sample_eval_candidates(history, users, items, n_before, 999, np.random.default_rng(seed))
    negatives, counts = _numpy_candidates(history, users, items, n_before, 999, np.random.default_rng(seed))
    assert np.array_equal(compiled.negatives, negatives) and np.array_equal(compiled.counts, counts)
