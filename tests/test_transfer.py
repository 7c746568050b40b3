import math

import numba
import pytest
import torch

from learner import transfer_native
from learner.transfer import Transfer, conv_section_torch, gelu_sigmoid, gelu_torch


def _g(z: float) -> float:
    return z / (1 + math.exp(-1.702 * z))


def _fixed_transfer() -> Transfer:
    t = Transfer(dim=2, hidden=2)
    with torch.no_grad():
        for p in t.parameters():
            p.zero_()
        t.conv1.weight[0, 0, :, 0] = torch.tensor([1.0, 2.0, 3.0])  # filter 0 mixes old, new, product
        t.conv1.bias[0] = 0.5
        t.conv1.weight[1, 0, :, 0] = torch.tensor([0.0, -1.0, 0.0])  # filter 1 = -new
        t.conv2.weight[0, 0, 0, 0] = 1.0  # channel 0 <- filter 0
        t.conv2.weight[1, 1, 0, 0] = 2.0  # channel 1 <- 2 * filter 1
        t.conv2.bias[4] = 0.25  # channel 4 = constant
        t.fc1.weight[0] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # hidden 0 <- channel 0, dim 0
        t.fc1.weight[1] = torch.tensor([0, 0, 0.5, 0.5, 0, 0, 0, 0, 1.0, 0])  # channel 1 dims + channel 4 dim 0
        t.fc2.weight[:] = torch.tensor([[1.0, 0.0], [1.0, -1.0]])
        t.fc2.bias[:] = torch.tensor([0.0, 0.1])
    return t


def test_forward_matches_hand_computation():
    old, new = [3.0, 4.0], [1.0, -2.0]
    norm = 5.0
    product = [old[0] * new[0] / norm, old[1] * new[1] / norm]
    f0 = [_g(old[m] + 2 * new[m] + 3 * product[m] + 0.5) for m in range(2)]
    f1 = [_g(-new[m]) for m in range(2)]
    channels = [f0, [2 * v for v in f1], [0, 0], [0, 0], [0.25, 0.25]]
    flat = [_g(v) for ch in channels for v in ch]  # channel-major flatten, then GELU
    h0 = _g(flat[0])
    h1 = _g(0.5 * flat[2] + 0.5 * flat[3] + flat[8])
    expected = [h0, h0 - h1 + 0.1]
    out = _fixed_transfer()(torch.tensor([old]), torch.tensor([new]))
    assert torch.allclose(out, torch.tensor([expected]), atol=1e-6)


def test_gelu_is_the_sigmoid_approximation():
    z = torch.tensor([-2.0, 0.0, 1.5])
    assert torch.allclose(gelu_sigmoid(z), torch.tensor([_g(-2.0), 0.0, _g(1.5)]))


def test_product_row_carries_no_gradient_to_the_new_row_beyond_its_own_row():
    torch.manual_seed(0)
    t = Transfer(dim=4, hidden=8)
    old, new = torch.randn(3, 4), torch.randn(3, 4, requires_grad=True)
    t(old, new).sum().backward()
    grad_with_product = new.grad.clone()
    # the same net with the product row replaced by a constant gives the same gradient
    new2 = new.detach().clone().requires_grad_(True)
    product = old * new.detach() / old.norm(dim=1, keepdim=True)
    z = gelu_sigmoid(t.conv1(torch.stack([old, new2, product], dim=1).unsqueeze(1)))
    out = t.fc2(gelu_sigmoid(t.fc1(gelu_sigmoid(t.conv2(z).flatten(1)))))
    out.sum().backward()
    assert torch.allclose(grad_with_product, new2.grad)


def test_parameter_count_matches_the_reference():
    t = Transfer(dim=64)
    assert sum(p.numel() for p in t.parameters()) == 197_279  # the authors' ConvTransfer_com at d = 64


def test_chunked_table_pass_equals_one_pass():
    torch.manual_seed(1)
    t = Transfer(dim=8, hidden=16)
    old, new = torch.randn(1000, 8), torch.randn(1000, 8)
    with torch.no_grad():
        whole = t(old, new)
    assert torch.allclose(t.apply_table(old, new, chunk_rows=77), whole, atol=1e-6)


def test_ablations_keep_the_output_shape():
    old, new = torch.randn(5, 6), torch.randn(5, 6)
    assert Transfer(6, cnn=False)(old, new).shape == (5, 6)
    assert Transfer(6, fc=False)(old, new).shape == (5, 6)


def test_matmul_form_equals_the_convolutions():
    torch.manual_seed(2)
    for fc in (True, False):
        t = Transfer(dim=6, hidden=16, fc=fc)
        old, new = torch.randn(9, 6), torch.randn(9, 6)
        product = old * new / old.norm(dim=1, keepdim=True)
        z = t.conv2(gelu_sigmoid(t.conv1(torch.stack([old, new, product], dim=1).unsqueeze(1))))
        if fc:
            expected = t.fc2(gelu_sigmoid(t.fc1(gelu_sigmoid(z.flatten(1)))))
        else:
            expected = t.conv_out(gelu_sigmoid(z)).flatten(1)
        assert torch.allclose(t(old, new), expected, atol=1e-5)


def test_compiled_sigmoid_is_within_a_few_units_in_the_last_place():
    z = torch.linspace(-80, 80, 400_001)
    # exact from the float32 argument both forms round first (its rounding, not the sigmoid's,
    # dominates the error far out: e^85 magnifies it 85-fold)
    exact = (z.double() * torch.sigmoid((1.702 * z).double())).float()
    error = (gelu_sigmoid(z) - exact).abs()
    normal = z > -50  # σ(1.702 z) a normal float32; below it only an absolute bound means anything
    assert (error[normal] <= 4 * torch.finfo(torch.float32).eps * exact[normal].abs()).all()
    assert (error[~normal] < 1e-30).all()
    special = gelu_sigmoid(torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30]))
    assert special[0].isnan() and special[1] == float("inf") and not special[2].isfinite()
    assert special[3] == 1e30 and special[4] == 0  # saturated both ways, no overflow


def test_compiled_gelu_agrees_with_autograd_forward_and_backward():
    gen = torch.Generator().manual_seed(0)
    for shape in [(300, 512), (7, 10, 3, 4), (5,)]:
        z = torch.randn(*shape, generator=gen) * 3
        weights = torch.randn(*shape, generator=gen)
        ours, reference = z.clone().requires_grad_(), z.clone().requires_grad_()
        out, expected = gelu_sigmoid(ours), gelu_torch(reference)
        (out * weights).sum().backward()
        (expected * weights).sum().backward()
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-5, atol=1e-6)
    # a non-contiguous input takes the same path
    z = (torch.randn(6, 4, generator=gen) * 3).t().requires_grad_()
    gelu_sigmoid(z).sum().backward()
    reference = z.detach().clone().requires_grad_()
    gelu_torch(reference).sum().backward()
    torch.testing.assert_close(z.grad, reference.grad, rtol=1e-5, atol=1e-6)


def _conv_inputs(rows: int, dim: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    old, new = torch.randn(rows, dim, generator=gen), torch.randn(rows, dim, generator=gen)
    product = old * new / old.norm(dim=1, keepdim=True)
    weights = [torch.randn(*shape, generator=gen) * 0.5 for shape in [(10, 3), (10,), (5, 10), (5,)]]
    return [old, new, product, *weights]


def test_compiled_convolutions_agree_with_the_torch_form_forward_and_backward():
    # 77 rows: two full blocks of 32 and a partial one
    old, new, product, *weights = _conv_inputs(77, 16, seed=3)
    grad_out = torch.randn(77, 5 * 16, generator=torch.Generator().manual_seed(4))
    sides = []
    for conv in (transfer_native.conv_section, conv_section_torch):
        leaves = [new.clone().requires_grad_()] + [w.clone().requires_grad_() for w in weights]
        out = conv(old, leaves[0], product, *leaves[1:])
        (out * grad_out).sum().backward()
        sides.append([out] + [leaf.grad for leaf in leaves])
    for ours, reference in zip(*sides, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_compiled_convolutions_give_the_same_bits_on_any_number_of_threads():
    old, new, product, *weights = _conv_inputs(200, 64, seed=5)
    results = []
    for threads in (1, 2):
        before = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        leaves = [w.clone().requires_grad_() for w in weights]
        out = transfer_native.conv_section(old, new, product, *leaves)
        out.pow(2).sum().backward()
        numba.set_num_threads(before)
        results.append([out] + [leaf.grad for leaf in leaves])
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)


def test_compiled_convolutions_refuse_a_gradient_for_the_old_rows():
    old, new, product, *weights = _conv_inputs(4, 8, seed=6)
    out = transfer_native.conv_section(old.requires_grad_(), new, product, *weights)
    with pytest.raises(RuntimeError, match="only its new rows take gradients"):
        out.sum().backward()
