import math

import numpy as np
import pytest
import torch

from learner.evaluation import metrics_from_ranks, rank_positives


def _embeddings():
    # user 0 = (1, 0); item scores for user 0 are item_emb[:, 0]
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[5.0, 0.0], [3.0, 9.0], [3.0, 0.0], [1.0, 0.0], [7.0, 0.0], [-2.0, 0.0]])
    return users, items


def test_rank_counts_strictly_higher_plus_half_the_ties():
    users, items = _embeddings()
    # positive item 2 (score 3) vs negatives 0 (5), 1 (3, a tie), 3 (1), 4 (7): 2 higher + 0.5 tie
    ranks = rank_positives(users, items, np.array([0]), np.array([2]), np.array([[0, 1, 3, 4]]))
    assert ranks.tolist() == [2.5]


def test_padding_entries_are_ignored_when_fewer_negatives_are_eligible():
    users, items = _embeddings()
    ranks = rank_positives(
        users, items, np.array([0, 0]), np.array([0, 5]), np.array([[3, -1, -1, -1], [4, 0, -1, -1]])
    )
    # item 0 (5) beats item 3 (1): rank 0; item 5 (-2) is below 4 (7) and 0 (5): rank 2; the
    # -1 pads would point at the last item (score -2, a tie) if they were not masked
    assert ranks.tolist() == [0.0, 2.0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_positive_ranks_below_every_candidate(bad):
    users, items = _embeddings()
    items[2, 0] = bad  # the positive's score for user 0 is not finite
    ranks = rank_positives(users, items, np.array([0]), np.array([2]), np.array([[0, 1, 3, -1]]))
    assert ranks.tolist() == [3.0]
    assert metrics_from_ranks(ranks, (1, 3), np.array([False]), np.array([False])).ndcg == {1: 0.0, 3: 0.0}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_negatives_count_as_above_a_finite_positive(bad):
    users, items = _embeddings()
    items[3, 0] = bad
    items[5, 0] = bad
    # positive item 4 (score 7) beats items 0 (5) and 2 (3); items 3 and 5 are broken
    ranks = rank_positives(users, items, np.array([0]), np.array([4]), np.array([[0, 3, 2, 5]]))
    assert ranks.tolist() == [2.0]


def test_a_nan_model_ranks_last_in_both_rankings():
    from learner.evaluation import full_ranks
    from learner.history import History

    rng = np.random.default_rng(5)
    history = History()
    history.extend(rng.integers(0, 8, 60), rng.integers(0, 30, 60))
    users, items = rng.integers(0, 10, 40), rng.integers(0, 30, 40)
    user_emb = torch.full((10, 3), float("nan"))
    item_emb = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
    negatives = rng.integers(0, 30, (40, 20))
    sampled = rank_positives(user_emb, item_emb, users, items, negatives)
    assert sampled.tolist() == [20.0] * 40
    full = full_ranks(user_emb, item_emb, history, users, items, 30)
    for r in range(len(users)):  # below every eligible item: rank = their count
        seen = {i for u, i in zip(history.users, history.items) if u == users[r]}
        seen |= {i for u, i in zip(users[: r + 1], items[: r + 1]) if u == users[r]}
        assert full[r] == 30 - len(seen)


def test_chunked_ranking_equals_one_chunk():
    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(20, 4, generator=g), torch.randn(50, 4, generator=g)
    rng = np.random.default_rng(0)
    u, pos, neg = rng.integers(0, 20, 33), rng.integers(0, 50, 33), rng.integers(0, 50, (33, 9))
    assert np.array_equal(
        rank_positives(users, items, u, pos, neg, chunk_rows=4),
        rank_positives(users, items, u, pos, neg, chunk_rows=1000),
    )


def test_metrics_by_hand():
    ranks = np.array([0.0, 4.5, 7.0, 30.0])
    new_user = np.array([False, False, True, True])
    new_item = np.array([False, True, False, True])
    m = metrics_from_ranks(ranks, (5, 10, 20), new_user, new_item)
    assert m.recall == {5: 0.5, 10: 0.75, 20: 0.75}
    g0, g45, g7 = 1.0, 1 / math.log2(6.5), 1 / math.log2(9.0)
    assert math.isclose(m.ndcg[5], (g0 + g45) / 4)
    assert math.isclose(m.ndcg[10], (g0 + g45 + g7) / 4)
    assert math.isclose(m.ndcg[20], (g0 + g45 + g7) / 4)
    assert m.segment_ndcg[20] == {"OU-OI": 1.0, "OU-NI": g45, "NU-OI": g7, "NU-NI": 0.0}
    assert m.segment_ndcg[5] == {"OU-OI": 1.0, "OU-NI": g45, "NU-OI": 0.0, "NU-NI": 0.0}


def test_empty_segment_is_nan_not_zero():
    m = metrics_from_ranks(np.array([1.0]), (5,), np.array([False]), np.array([False]))
    assert math.isnan(m.segment_ndcg[5]["NU-NI"]) and m.segment_ndcg[5]["OU-OI"] == 1 / math.log2(3)


def test_full_ranking_counts_every_eligible_item_by_brute_force():
    from learner.evaluation import full_ranks
    from learner.history import History

    rng = np.random.default_rng(3)
    history = History()
    history.extend(rng.integers(0, 8, 60), rng.integers(0, 30, 60))
    users, items = rng.integers(0, 10, 40), rng.integers(0, 36, 40)
    user_emb = torch.from_numpy(rng.integers(-2, 3, (10, 3)).astype(np.float32))  # small ints: real ties
    item_emb = torch.from_numpy(rng.integers(-2, 3, (36, 3)).astype(np.float32))
    ranks = full_ranks(user_emb, item_emb, history, users, items, 30)
    for r in range(len(users)):
        pool = max(30, int(items[: r + 1].max()) + 1)
        seen = {i for u, i in zip(history.users, history.items) if u == users[r]}
        seen |= {i for u, i in zip(users[: r + 1], items[: r + 1]) if u == users[r]}
        scores = (item_emb @ user_emb[users[r]]).numpy()
        s_pos = scores[items[r]]
        others = [scores[j] for j in range(pool) if j not in seen]
        assert ranks[r] == sum(s > s_pos for s in others) + 0.5 * sum(s == s_pos for s in others)


def test_full_ranking_columns_in_a_run(tiny):
    from dataclasses import replace

    from learner.engine import Engine
    from learner.results import as_row, columns

    cfg, phases, periods = tiny
    learner_cfg = replace(
        cfg.learner,
        eval=replace(cfg.learner.eval, full_ranking=True),
        strategies=replace(cfg.learner.strategies, enabled=["fine_tune"], serving="fine_tune"),
    )
    engine = Engine(learner_cfg, phases)
    rows = [as_row(r) for t, events in periods[:4] for r in engine.close_period(t, events)]
    assert set(columns(full_ranking=True)) == set(rows[0])
    # tiny's catalogue is smaller than 999 negatives, so every eligible item is a sampled
    # negative and both rankings must agree exactly
    assert all(row["n_candidates"] < 1000 for row in rows)
    assert all(row["full_ndcg@20"] == row["ndcg@20"] and row["full_recall@5"] == row["recall@5"] for row in rows)
