import numpy as np
import pytest

from learner.reservoir import Reservoir


@pytest.mark.parametrize("batches", [1, 7])
def test_every_offered_row_is_kept_with_equal_probability(batches):
    """Chi-square over 20 position bins: 3,000 reservoirs of 50 rows from a stream of 2,000."""
    n, capacity, trials = 2_000, 50, 3_000
    rng = np.random.default_rng(123)
    kept = np.zeros(n)
    for _ in range(trials):
        reservoir = Reservoir(capacity)
        for part in np.array_split(np.arange(n), batches):
            reservoir.offer(part, part, rng)
        assert len(reservoir) == capacity and len(set(reservoir.users.tolist())) == capacity
        kept[reservoir.users] += 1
    bins = kept.reshape(20, -1).sum(1)
    expected = trials * capacity / 20
    chi2 = ((bins - expected) ** 2 / expected).sum()
    assert chi2 < 43.8  # chi-square, 19 degrees of freedom, p = 0.001
    assert abs(kept.mean() - trials * capacity / n) < 1e-9


def test_fill_then_replace_and_counts():
    reservoir = Reservoir(3)
    rng = np.random.default_rng(0)
    reservoir.offer(np.array([1, 2]), np.array([10, 20]), rng)
    assert reservoir.users.tolist() == [1, 2] and reservoir.offered == 2
    reservoir.offer(np.array([3, 4, 5]), np.array([30, 40, 50]), rng)
    assert len(reservoir) == 3 and reservoir.offered == 5
    assert reservoir.users[0] in (1, 4, 5) and (reservoir.items == reservoir.users * 10).all()


def test_state_round_trip():
    a = Reservoir(10)
    a.offer(np.arange(25), np.arange(25), np.random.default_rng(1))
    b = Reservoir(1)
    b.load_state_dict(a.state_dict())
    a.offer(np.arange(25, 40), np.arange(25, 40), np.random.default_rng(2))
    b.offer(np.arange(25, 40), np.arange(25, 40), np.random.default_rng(2))
    assert np.array_equal(a.users, b.users) and a.offered == b.offered == 40
