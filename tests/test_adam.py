import pytest
import torch

from learner import adam
from learner.sequences import PAD, embed, grow_parameter, lookup


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (-0.0 is not +0.0) where torch's kernels are vectorised and fuse their
    multiply-adds as ours do; close where they are not."""
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        return torch.allclose(a, b)
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


def _params(gen: torch.Generator) -> list[torch.nn.Parameter]:
    # an embedding table, an odd-length bias (torch's scalar tail), a conv kernel
    return [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in ((301, 16), (1003,), (16, 1, 3, 16))]


@pytest.mark.parametrize("weight_decay", [1e-6, 0.3, 0.0])  # 0.3: the L2 term as large as the gradient
@pytest.mark.parametrize("chunk", [1 << 15, 100], ids=["default", "chunked"])
def test_the_fused_adam_gives_torch_adams_bits(monkeypatch, weight_decay, chunk):
    monkeypatch.setattr(adam, "_CHUNK", chunk)
    gen = torch.Generator().manual_seed(5)
    ours = _params(gen)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    with torch.no_grad():
        ours[0][7, :5] = theirs[0][7, :5] = -0.0
    opt_ours = adam.Adam(ours, lr=0.01, weight_decay=weight_decay)
    opt_theirs = torch.optim.Adam(theirs, lr=0.01, weight_decay=weight_decay)
    for step in range(40):
        for a, b in zip(ours, theirs):
            # embedding-like gradients: most rows zero, some steps none at all
            grad = torch.zeros_like(a)
            if step < 10 or step % 3 == 0:
                rows = torch.randint(0, a.shape[0], (5,), generator=gen)
                grad[rows] = torch.randn(grad[rows].shape, generator=gen) * 0.1
            grad.view(-1)[0] = -0.0
            a.grad, b.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_theirs.step()
        for a, b in zip(ours, theirs):
            assert _same(a, b), step
            for key in ("exp_avg", "exp_avg_sq"):
                assert _same(opt_ours.state[a][key], opt_theirs.state[b][key]), (step, key)
            assert torch.equal(opt_ours.state[a]["step"], opt_theirs.state[b]["step"])


def test_the_fused_adam_and_torchs_load_each_others_state():
    gen = torch.Generator().manual_seed(6)
    ours = _params(gen)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt_ours = adam.Adam(ours, lr=0.01, weight_decay=1e-6)
    opt_theirs = torch.optim.Adam(theirs, lr=0.01, weight_decay=1e-6)
    for step in range(6):
        for a, b in zip(ours, theirs):
            a.grad = b.grad = torch.randn(a.shape, generator=gen)
        if step == 3:  # each side continues from the other's state
            state_ours, state_theirs = opt_ours.state_dict(), opt_theirs.state_dict()
            opt_ours.load_state_dict(state_theirs)
            opt_theirs.load_state_dict(state_ours)
        opt_ours.step()
        opt_theirs.step()
    for a, b in zip(ours, theirs):
        assert _same(a, b)
    assert opt_ours.state_dict()["param_groups"] == opt_theirs.state_dict()["param_groups"]


def test_a_parameter_it_cannot_fuse_takes_torchs_step():
    gen = torch.Generator().manual_seed(7)
    double = torch.nn.Parameter(torch.randn(50, 4, generator=gen, dtype=torch.float64))
    reference = torch.nn.Parameter(double.detach().clone())
    opt, opt_ref = adam.Adam([double], lr=0.01), torch.optim.Adam([reference], lr=0.01)
    for _ in range(3):
        double.grad = reference.grad = torch.randn(50, 4, generator=gen, dtype=torch.float64)
        opt.step()
        opt_ref.step()
    assert torch.equal(double, reference)


def test_a_sparse_gradient_table_gets_the_bits_of_torch_adam_on_the_dense_lookup():
    """learner.adam.Adam with sequences.lookup's sparse gradient, against torch.optim.Adam
    with `table[ids]` (as Caser looks its tables up without it): ids repeat within a batch,
    come as a window with PAD slots, and the table grows."""
    gen = torch.Generator().manual_seed(8)
    ours = torch.nn.Parameter(torch.randn(40, 8, generator=gen))
    theirs = torch.nn.Parameter(ours.detach().clone())
    mix = torch.randn(8, generator=gen)
    opt_ours = adam.Adam([ours], lr=0.01, weight_decay=1e-6)
    opt_theirs = torch.optim.Adam([theirs], lr=0.01, weight_decay=1e-6)
    for step in range(30):
        if step == 15:
            rows = torch.randn(5, 8, generator=gen)
            grow_parameter(ours, rows, opt_ours)
            grow_parameter(theirs, rows, opt_theirs)
        ids = torch.randint(0, len(ours), (6, 4), generator=gen)  # repeats within the batch
        ids[0, :2] = PAD
        for table, sparse in ((ours, True), (theirs, False)):
            rows = embed(table, ids, sparse) if step % 2 else lookup(table, ids[:, 0].clamp_min(0), sparse)
            torch.tanh(rows @ mix).square().sum().backward()
        assert ours.grad.is_sparse and not theirs.grad.is_sparse
        opt_ours.step()
        opt_theirs.step()
        opt_ours.zero_grad(set_to_none=True)
        opt_theirs.zero_grad(set_to_none=True)
        assert _same(ours, theirs), step
        assert _same(opt_ours.state[ours]["exp_avg_sq"], opt_theirs.state[theirs]["exp_avg_sq"]), step
