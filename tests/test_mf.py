import numpy as np
import pytest
import torch

from learner import tables
from learner.config import TrainSpec
from learner.mf import MF, bce_loss, mf_gradients, shuffled_batches, train_mf, weighted_batches
from learner.tables import AdamSteps, EmbeddingTable
from learner.vocab import Vocabulary, initial_rows


def test_closed_form_gradients_equal_autograd():
    torch.manual_seed(0)
    pu, qi, qj = (torch.randn(7, 5, requires_grad=True) for _ in range(3))
    l2 = 0.3
    loss = bce_loss((pu * qi).sum(1), (pu * qj).sum(1)) + 0.5 * l2 * (
        pu.pow(2).sum() + qi.pow(2).sum() + qj.pow(2).sum()
    )
    loss.backward()
    g_u, g_i, g_j = mf_gradients(pu.detach(), qi.detach(), qj.detach(), l2)
    assert torch.allclose(g_u, pu.grad, atol=1e-6)
    assert torch.allclose(g_i, qi.grad, atol=1e-6)
    assert torch.allclose(g_j, qj.grad, atol=1e-6)


@pytest.mark.parametrize("merge", ["unique rows (CPU)", "repeats with sums (GPU)"])
def test_row_adam_matches_torch_sparse_adam(merge, monkeypatch):
    if merge.startswith("repeats"):  # the GPU's way, run here on the CPU
        monkeypatch.setattr(tables, "_unique_rows", tables._repeats_with_sums)
    torch.manual_seed(1)
    weight = torch.randn(10, 3)
    table = EmbeddingTable(weight.clone())
    emb = torch.nn.Embedding.from_pretrained(weight.clone(), freeze=False, sparse=True)
    opt = torch.optim.SparseAdam(emb.parameters(), lr=0.05)
    for rows in ([1, 4, 4, 7], [4, 2], [9, 1, 0, 9, 9]):
        idx = torch.tensor(rows)
        target = torch.randn(len(rows), 3)
        opt.zero_grad()
        ((emb(idx) - target) ** 2).sum().backward()
        opt.step()
        out = table.weight[idx].requires_grad_(True)
        ((out - target) ** 2).sum().backward()
        table.adam_step(idx, out.grad, lr=0.05)  # repeated rows (4, 4) sum, as SparseAdam coalesces
    assert torch.allclose(table.weight, emb.weight.detach(), atol=1e-6)
    untouched = [3, 5, 6, 8]
    assert torch.equal(table.weight[untouched], weight[untouched])


def test_dense_adam_matches_torch_adam_on_the_whole_table():
    torch.manual_seed(2)
    weight = torch.randn(10, 3)
    table = EmbeddingTable(weight.clone())
    param = torch.nn.Parameter(weight.clone())
    opt = torch.optim.Adam([param], lr=0.05)
    for rows in ([1, 4, 4, 7], [4, 2], [9, 1, 0, 9, 9]):
        idx = torch.tensor(rows)
        target = torch.randn(len(rows), 3)
        opt.zero_grad()
        ((param[idx] - target) ** 2).sum().backward()
        opt.step()
        out = table.weight[idx].requires_grad_(True)
        ((out - target) ** 2).sum().backward()
        table.dense_adam_step(idx, out.grad, lr=0.05)
    assert torch.allclose(table.weight, param.detach(), atol=1e-6)
    # rows 4 and 7 had gradients once and keep moving by their momentum, as in torch's Adam
    assert not torch.equal(table.weight[7], weight[7])
    assert torch.equal(table.weight[[3, 5, 6, 8]], weight[[3, 5, 6, 8]])


def test_the_compiled_dense_adam_gives_the_bits_of_the_torch_ops_it_replaces_on_the_cpu():
    gen = torch.Generator().manual_seed(3)
    native = EmbeddingTable(torch.randn(300, 16, generator=gen))
    reference = native.copy()
    for step in range(60):
        if step == 30:  # a grown table: the step's buffers follow the new shape
            rows = torch.randn(20, 16, generator=gen)
            native.grow(rows)
            reference.grow(rows)
        idx = torch.randint(0, len(native), (50,), generator=gen)  # with repeats
        grad = torch.randn(50, 16, generator=gen) * 0.1
        native.dense_adam_step(idx, grad, lr=0.01)
        reference.step += 1
        tables._dense_adam_torch(reference, idx, grad, 0.01, (0.9, 0.999), 1e-8)
    same = torch.equal if torch.backends.cpu.get_cpu_capability() != "DEFAULT" else torch.allclose
    for name in ("weight", "exp_avg", "exp_avg_sq"):  # torch's AVX2/AVX-512 kernels fuse as ours do
        assert same(getattr(native, name), getattr(reference, name)), name
    assert native.step == reference.step == 60


@pytest.mark.parametrize("replay_floats", [1 << 19, 40], ids=["default", "every-replay-chunked"])
def test_deferred_dense_steps_give_the_bits_of_one_torch_step_after_another(monkeypatch, replay_floats):
    monkeypatch.setattr(tables, "_REPLAY_FLOATS", replay_floats)
    gen = torch.Generator().manual_seed(4)
    deferred = EmbeddingTable(torch.randn(200, 16, generator=gen))
    deferred.exp_avg.normal_(generator=gen).mul_(0.01)  # moments and steps carried over, as in SML
    deferred.exp_avg_sq.uniform_(generator=gen).mul_(1e-4)
    deferred.step = 7
    grown = torch.randn(20, 16, generator=gen)  # rows 200-219: no gradient yet, moments zero
    grown[3, :5] = -0.0
    deferred.grow(grown)
    # momentum long decayed, in units of the smallest subnormal: 212 at fixed points of the
    # decay (still, but at the last run's large lr its momentum, divided by the root, moves
    # its tiny weight), 213
    # still decaying, 214 as 212 but a -0.0 weight that its negative momentum turns +0, 215
    # with a momentum that moves its weight at every lr
    units = torch.tensor([[1, -1, 3, 2], [5, -6, 5, 6], [1, -1, 3, 4], [2**20, 1, -2, 3]], dtype=torch.float32)
    deferred.exp_avg[212:216] = units.repeat(1, 4) * 2.0**-149
    deferred.exp_avg_sq[212:216] = torch.rand(4, 16, generator=gen) * 1e-6
    deferred.weight[214, 0], deferred.exp_avg[214, 0] = -0.0, -(2.0**-149)
    deferred.weight[212, 3] = 2.0**-125 + 2.0**-147  # momentum x lr is half its ulp: a tie that keeps it
    reference = deferred.copy()

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:  # bit for bit: -0.0 is not +0.0
        if torch.backends.cpu.get_cpu_capability() == "DEFAULT":  # torch's kernels unfused
            return torch.allclose(a, b)
        return torch.equal(a.view(torch.int32), b.view(torch.int32))

    for run, lr in enumerate((0.01, 0.01, 0.5)):
        with AdamSteps(deferred, lr=lr, dense=True) as steps:
            for k in range(25):
                # rows 40 and up sit out every other step, some for the whole run; of the
                # grown rows, some get a gradient in the second run, the rest never
                idx = torch.randint(0, 210 if k % 2 and run else 200 if k % 2 else 40, (30,), generator=gen)
                grad = torch.randn(30, 16, generator=gen) * 0.1
                assert same(steps.read(idx), reference.weight.index_select(0, idx)), (run, k)
                steps.step(idx, grad)
                reference.step += 1
                tables._dense_adam_torch(reference, idx, grad, lr, (0.9, 0.999), 1e-8)
        for name in ("weight", "exp_avg", "exp_avg_sq"):
            assert same(getattr(deferred, name), getattr(reference, name)), (run, name)
        assert deferred.step == reference.step == 7 + 25 * (run + 1)


def test_training_on_learnable_data_lowers_the_loss_and_only_moves_used_rows():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 20, 400)
    items = (users % 5) * 4 + rng.integers(0, 4, 400)  # each user likes one block of items
    model = MF.from_rows(torch.randn(25, 8) * 0.1, torch.randn(30, 8) * 0.1)
    before = model.copy()

    def negatives(u, g):
        return g.integers(20, 30, len(u))  # items 20..29 are never positives

    def loss(m):
        p, q = m.embeddings()
        return bce_loss((p[users] * q[items]).sum(1), (p[users] * q[np.full(400, 25)]).sum(1)).item()

    train_mf(model, users, items, negatives, TrainSpec(lr=0.05, batch=32, epochs=5), rng)
    assert loss(model) < 0.5 * loss(before)
    assert torch.equal(model.users.weight[20:], before.users.weight[20:]), "users 20-24 never trained"


def test_initial_rows_depend_only_on_seed_and_raw_id():
    a = initial_rows(["x", "y", "z"], "user", seed=3, dim=16, std=0.1)
    b = initial_rows(["z", "x"], "user", seed=3, dim=16, std=0.1)
    assert np.array_equal(a[0], b[1]) and np.array_equal(a[2], b[0])
    assert not np.array_equal(a[0], initial_rows(["x"], "item", seed=3, dim=16, std=0.1)[0])
    assert not np.array_equal(a[0], initial_rows(["x"], "user", seed=4, dim=16, std=0.1)[0])
    big = initial_rows([str(i) for i in range(5000)], "user", seed=0, dim=16, std=0.1)
    assert abs(big.mean()) < 0.003 and abs(big.std() - 0.1) < 0.003


def test_vocabulary_grows_in_first_appearance_order():
    vocab = Vocabulary()
    assert vocab.register(["b", "a", "b", "c"]) == ["b", "a", "c"]
    assert vocab.register(["c", "d"]) == ["d"]
    assert vocab.lookup(["d", "b"]).tolist() == [3, 0]


def test_weighted_batches_draw_the_numbers_of_one_draw_per_batch():
    weights = np.random.default_rng(3).random(1001)
    rows, ends = weighted_batches(weights, 64, np.random.default_rng(1))
    rng, cdf = np.random.default_rng(1), np.cumsum(weights) / weights.sum()
    per_batch = [np.searchsorted(cdf, rng.random(64), side="right") for _ in range(16)]  # round(1001 / 64)
    assert np.array_equal(rows, np.concatenate(per_batch)) and ends.tolist() == list(range(64, 1025, 64))


def test_shuffled_batches_cover_every_row_once():
    rows, ends = shuffled_batches(10, 4, np.random.default_rng(0))
    assert sorted(rows.tolist()) == list(range(10)) and ends.tolist() == [4, 8, 10]
    assert shuffled_batches(0, 4, np.random.default_rng(0))[1].tolist() == []
