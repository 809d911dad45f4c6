"""P+ (METHOD.md section 6): coefficients, dilation, regularizers, batching, edits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reenact.models.pplus import (
    BETA,
    PPlus,
    coefficients,
    edit_alpha,
    edit_direction,
    in_pbeta,
    init_alpha,
    l_delta,
    l_sum,
    project_rows,
)

N, NUM_WS, W_DIM = 5, 14, 16


@pytest.fixture
def anchors() -> torch.Tensor:
    return torch.randn(N, W_DIM, generator=torch.Generator().manual_seed(0))


def test_init_alpha_variants():
    torch.testing.assert_close(init_alpha(4), torch.full([4], 0.25))
    torch.testing.assert_close(init_alpha(4, index=2), torch.tensor([0.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(init_alpha(4, index=0, smoothing=0.2), torch.tensor([0.85, 0.05, 0.05, 0.05]))
    assert init_alpha(4, batch_size=3).shape == (3, 4)
    batched = init_alpha(4, index=[1, 3])
    assert batched.shape == (2, 4) and batched.argmax(-1).tolist() == [1, 3]
    with pytest.raises(ValueError):
        init_alpha(4, index=4)


def test_rows_sum_to_one_and_entries_above_minus_beta(anchors):
    p = PPlus(anchors, NUM_WS)
    with torch.no_grad():
        p.alpha.copy_(torch.tensor([2.0, -1.0, 0.5, -0.3, -0.2]))  # sums to 1
        p.delta.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    a_hat = p.coefficients()
    assert a_hat.shape == (NUM_WS, N)
    torch.testing.assert_close(a_hat.sum(-1), torch.ones(NUM_WS))
    dil_sum = (F.softplus(p.raw() + BETA, beta=100.0) - BETA).sum(-1, keepdim=True)
    assert (a_hat >= -BETA / dil_sum - 1e-7).all()  # the general floor
    rows_ok = p.raw().sum(-1) >= 1  # dilation never lowers a row sum: floor -beta where raw sums >= 1
    assert rows_ok.any() and (a_hat[rows_ok] >= -BETA).all()
    assert p.ws().shape == (NUM_WS, W_DIM)


def test_uniform_init_gives_the_anchor_mean(anchors):
    p = PPlus(anchors, NUM_WS)
    torch.testing.assert_close(p.ws(), anchors.mean(0).expand(NUM_WS, -1), atol=1e-6, rtol=1e-6)


def test_one_hot_gives_the_anchor_up_to_the_dilation_leak(anchors):
    p = PPlus(anchors, NUM_WS, init_index=3)
    leak = F.softplus(torch.tensor(BETA), beta=100.0) - BETA  # coefficient of every other anchor
    a_hat = p.coefficients()
    torch.testing.assert_close(a_hat[:, 0], (leak / (1 + (N - 1) * leak)).expand(NUM_WS))
    assert float(leak) == pytest.approx(4.86e-4, rel=1e-2)
    err = (p.ws() - anchors[3]).norm(dim=-1).max()
    assert err < 4 * float(leak) * float(anchors.norm(dim=-1).max()) * N


def test_gradients_reach_alpha_and_delta(anchors):
    p = PPlus(anchors, NUM_WS, init_index=1, smoothing=0.1)
    target = torch.randn(NUM_WS, W_DIM)
    loss = (p.ws() - target).square().mean() + p.regularization()
    loss.backward()
    for t in (p.alpha.grad, p.delta.grad):
        assert t is not None and torch.isfinite(t).all() and t.abs().sum() > 0
    assert p.anchors.grad is None and not p.anchors.requires_grad


def test_l_delta_hand_computed():
    delta = torch.zeros(14, 3)
    delta[0] = torch.tensor([3.0, 4.0, 0.0])   # norm 5
    delta[11] = torch.tensor([0.0, 1.0, 0.0])  # norm 1, last counted layer
    delta[12] = torch.tensor([100.0, 0.0, 0.0])  # fine layer: not counted
    assert float(l_delta(delta)) == pytest.approx(10 * (5 + 1))
    assert float(l_delta(delta, num_layers=13)) == pytest.approx(10 * 106)


def test_l_delta_gradient_is_finite_at_zero():
    delta = torch.zeros(14, 3, requires_grad=True)
    l_delta(delta).backward()
    assert torch.isfinite(delta.grad).all()


def test_l_sum_hand_computed():
    alpha = torch.tensor([0.5, 0.5])
    delta = torch.zeros(4, 2)
    assert float(l_sum(alpha, delta)) == 0.0
    delta[1] = torch.tensor([0.5, 0.5])  # layer sum 2 -> (2 - 1)^2 = 1
    delta[2] = torch.tensor([-0.25, -0.25])  # layer sum 0.5 -> 0.25
    assert float(l_sum(alpha, delta)) == pytest.approx(10 * (1 + 0.25) / 4)


def test_batch_equals_loop_over_items(anchors):
    gen = torch.Generator().manual_seed(1)
    alphas, deltas = torch.rand(3, N, generator=gen), 0.1 * torch.randn(3, NUM_WS, N, generator=gen)
    batched = PPlus(anchors, NUM_WS, batch_size=3)
    batched.set_point(alphas, deltas)
    ws, reg = batched.ws(), batched.regularization()
    assert ws.shape == (3, NUM_WS, W_DIM) and reg.shape == (3,)
    for i in range(3):
        single = PPlus(anchors, NUM_WS)
        single.set_point(alphas[i], deltas[i])
        torch.testing.assert_close(ws[i], single.ws())
        torch.testing.assert_close(reg[i], single.regularization())


def test_batched_init_from_indices(anchors):
    p = PPlus(anchors, NUM_WS, init_index=[0, 4])
    assert p.batched and p.alpha.shape == (2, N) and p.delta.shape == (2, NUM_WS, N)
    assert p.coefficients()[:, 0].argmax(-1).tolist() == [0, 4]


# ---------------------------------------------------------------------------------------------------
# Edits


def test_edit_direction_solves_the_normal_equations(anchors):
    d = torch.randn(W_DIM, generator=torch.Generator().manual_seed(2))
    gamma = edit_direction(anchors, d)
    a = anchors.double()
    torch.testing.assert_close((a @ a.T) @ gamma.double(), a @ d.double(), atol=1e-8, rtol=1e-6)
    in_span = anchors.T @ torch.tensor([0.2, -0.1, 0.0, 0.3, 0.1])
    torch.testing.assert_close(anchors.T @ edit_direction(anchors, in_span), in_span, atol=1e-5, rtol=1e-5)


def test_edit_moves_ws_along_the_projected_direction(anchors):
    gamma = torch.tensor([0.02, -0.01, 0.0, 0.01, -0.02])  # sums to 0: stays normalized
    alpha, delta = init_alpha(N), torch.zeros(NUM_WS, N)
    res = edit_alpha(alpha, delta, gamma, 1.0, on_exit="none")
    torch.testing.assert_close(res.alpha, alpha + gamma)
    assert bool(res.inside)
    shift = coefficients(res.alpha, delta) @ anchors - coefficients(alpha, delta) @ anchors
    torch.testing.assert_close(shift, (gamma @ anchors).expand(NUM_WS, -1), atol=1e-5, rtol=1e-4)


def test_edit_leaving_pbeta_is_stopped_or_projected():
    alpha, delta = init_alpha(N, index=0), torch.zeros(NUM_WS, N)
    gamma = torch.tensor([0.0, -1.0, 1.0, 0.0, 0.0])
    assert not bool(edit_alpha(alpha, delta, gamma, 1.0, on_exit="none").inside)
    stopped = edit_alpha(alpha, delta, gamma, 1.0, on_exit="stop")
    assert bool(stopped.inside) and float(stopped.scale) == pytest.approx(BETA, abs=1e-4)
    projected = edit_alpha(alpha, delta, gamma, 1.0, on_exit="project")
    assert bool(projected.inside)
    raw = projected.alpha + projected.delta
    torch.testing.assert_close(raw.sum(-1), torch.ones(NUM_WS))
    assert (raw >= -BETA - 1e-6).all()
    with pytest.raises(ValueError):
        edit_alpha(alpha, delta, gamma, 1.0, on_exit="bogus")


def test_edit_batched_applies_the_same_step():
    alpha = init_alpha(N, index=[0, 2])
    delta = torch.zeros(2, NUM_WS, N)
    gamma = torch.tensor([0.05, 0.0, -0.05, 0.0, 0.0])
    res = edit_alpha(alpha, delta, gamma, 0.5, on_exit="project")
    torch.testing.assert_close(res.alpha, alpha + 0.5 * gamma)
    assert res.inside.tolist() == [True, True]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=2, max_size=12), st.floats(0.0, 0.2))
def test_project_rows_lands_in_the_set_and_is_idempotent(values, beta):
    x = torch.tensor(values, dtype=torch.float64)
    p = project_rows(x, beta=beta)
    assert math.isclose(float(p.sum()), 1.0, abs_tol=1e-9)
    assert float(p.min()) >= -beta - 1e-9
    torch.testing.assert_close(project_rows(p, beta=beta), p)
    inside = project_rows(torch.full_like(x, 1.0 / len(values)), beta=beta)
    torch.testing.assert_close(inside, torch.full_like(x, 1.0 / len(values)))


def test_in_pbeta_checks_every_layer():
    alpha = init_alpha(3)
    delta = torch.zeros(4, 3)
    assert bool(in_pbeta(alpha, delta))
    delta[2] = torch.tensor([0.0, -0.5, 0.5])
    assert not bool(in_pbeta(alpha, delta))
