"""Edits in P+: semantic directions regressed on the anchors, user W directions, P_beta kept."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from reenact.edit import (
    MAX_STRENGTH,
    SEMANTIC,
    Direction,
    anchor_attributes,
    apply_edits,
    edited_ws,
    load_anchors,
    semantic_directions,
    w_direction,
)
from reenact.errors import InvalidInputError
from reenact.face.attributes import face_attributes
from reenact.models.pplus import BETA, in_pbeta, init_alpha

NUM_WS = 6


def low_rank_codes(n=24, w_dim=32, rank=5, seed=0) -> torch.Tensor:
    """Anchors of one person: codes near a low-dimensional affine subspace (like real projections)."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(w_dim, generator=g)
    basis = torch.linalg.qr(torch.randn(w_dim, rank, generator=g)).Q.T * 2  # orthogonal, spread 2 per axis
    return mean + torch.randn(n, rank, generator=g) @ basis


def linear_attribute(codes: torch.Tensor, seed=1, offset=0.3) -> tuple[torch.Tensor, torch.Tensor]:
    w_true = torch.randn(codes.shape[1], generator=torch.Generator().manual_seed(seed)) * 0.1
    return codes @ w_true + offset, w_true


def anchors_with(codes, **attrs) -> dict:
    d = {"anchor_w": codes.float()}
    d.update({k: torch.as_tensor(v, dtype=torch.float32) for k, v in attrs.items()})
    return d


def inside_point(n, batch=None, seed=3, scale=0.004):
    g = torch.Generator().manual_seed(seed)
    alpha = init_alpha(n, batch_size=batch)
    shape = [NUM_WS, n] if batch is None else [batch, NUM_WS, n]
    delta = torch.randn(shape, generator=g) * scale
    delta = delta - delta.mean(dim=-1, keepdim=True)  # rows keep summing to 1
    alpha = alpha + torch.randn(alpha.shape, generator=g) * scale
    assert in_pbeta(alpha, delta).all()
    return alpha, delta


def assert_violation(exc_info, field):
    err = exc_info.value
    assert isinstance(err, InvalidInputError) and err.kind == "INVALID_ARGUMENT"
    assert [v.field for v in err.violations] == [field]


# ----------------------------------------------------------------------------------------------------
# Semantic directions


@pytest.mark.parametrize(("n", "w_dim", "rank"), [(24, 32, 5), (60, 16, 16)])
def test_exact_linear_attribute_is_recovered(n, w_dim, rank):
    codes = low_rank_codes(n, w_dim, rank)
    y, w_true = linear_attribute(codes)
    dirs = semantic_directions(anchors_with(codes, yaw=y * 30, mouth_open=y))
    assert set(dirs) == set(SEMANTIC)
    for name, scale in (("yaw", 30.0), ("mouth_open", 1.0)):
        d = dirs[name]
        assert isinstance(d, Direction) and d.name == name and d.gamma.shape == (n,)
        assert d.gamma.dtype == torch.float32 and abs(float(d.gamma.sum())) < 1e-5
        assert d.r2 > 0.99
        assert d.unit_change == pytest.approx(float((y * scale).double().std(unbiased=False)), rel=1e-4)
        assert d.units == ("deg" if name == "yaw" else "ratio")
        # moving by one unit changes the (true, linear) attribute by unit_change, on every layer
        alpha, delta = inside_point(n, scale=0.0)
        for strength in (0.2, -0.1):  # small enough to stay inside P_beta (checked below)
            before = edited_ws(alpha, delta, codes, [])
            after = edited_ws(alpha, delta, codes, [(d, strength)])
            moved = apply_edits(alpha, delta, [(d, strength)])
            torch.testing.assert_close(moved, alpha + strength * d.gamma, atol=1e-6, rtol=0)  # no clamp hit
            change = (after - before).double() @ (w_true.double() * scale)
            assert change.shape == (NUM_WS,)
            torch.testing.assert_close(change, torch.full_like(change, strength * d.unit_change), rtol=0.02, atol=0)


def test_unrelated_attribute_gets_a_low_r2():
    codes = low_rank_codes(40, 32, 5)
    noise = torch.randn(40, generator=torch.Generator().manual_seed(7))
    d = semantic_directions(anchors_with(codes, pitch=noise))["pitch"]
    assert d.r2 < 0.3 and d.unit_change > 0
    # a unit step stays the size of the anchors' own spread, however weak the fit
    ac = (codes - codes.mean(0)).double()
    step = ac.T @ d.gamma.double()
    along = ac @ (step / step.norm())
    assert float(step.norm()) == pytest.approx(float(along.square().mean().sqrt()), rel=1e-3)


def test_constant_missing_nan_and_too_few_anchors():
    codes = low_rank_codes(20, 16, 4)
    y, _ = linear_attribute(codes)
    y_nan = y.clone()
    y_nan[[2, 5, 11]] = float("nan")
    dirs = semantic_directions(anchors_with(codes, eye_open=torch.full([20], 0.3), mouth_open=y_nan))
    for name in ("eye_open", "smile", "yaw", "pitch"):  # constant, and absent from the dict
        assert dirs[name].r2 == 0 and dirs[name].unit_change == 0 and dirs[name].is_zero
        assert dirs[name].gamma.shape == (20,)
    mouth = dirs["mouth_open"]  # NaN anchors are left out of the fit and get no weight
    assert mouth.r2 > 0.99 and not mouth.is_zero and mouth.gamma[[2, 5, 11]].abs().max() == 0
    valid = torch.isfinite(y_nan)
    assert mouth.unit_change == pytest.approx(float(y[valid].double().std(unbiased=False)), rel=1e-4)
    tiny = semantic_directions(anchors_with(codes[:2], yaw=torch.tensor([1.0, 5.0])))
    assert all(d.is_zero and d.r2 == 0 for d in tiny.values())
    same = semantic_directions(anchors_with(codes[:1].expand(5, -1), yaw=torch.arange(5.0)))
    assert same["yaw"].is_zero


def test_smile_is_measured_from_the_anchor_points():
    rng = np.random.default_rng(0)
    n = 16
    base = rng.normal(size=(478, 3)) * 40 + 128
    widths = np.linspace(0.8, 1.6, n)
    points = np.repeat(base[None], n, axis=0)
    centre = (base[61] + base[291]) / 2
    half = (base[291] - base[61]) / 2
    points[:, 61] = centre - half * widths[:, None]
    points[:, 291] = centre + half * widths[:, None]
    smile = np.array([face_attributes(p)["smile"] for p in points])
    assert np.ptp(smile) > 0.1
    codes = low_rank_codes(n, 16, 4).double()
    codes[:, 0] = torch.from_numpy(smile)  # the attribute is exactly linear in the codes
    anchors = anchors_with(codes, yaw=torch.zeros(n))
    anchors["anchor_points"] = torch.from_numpy(points.astype(np.float32))
    np.testing.assert_allclose(anchor_attributes(anchors)["smile"], smile, rtol=1e-5)
    d = semantic_directions(anchors)["smile"]
    assert d.r2 > 0.99 and d.unit_change == pytest.approx(smile.std(), rel=1e-3)


def test_load_anchors_as_written_by_enrollment():
    n = 12
    codes = low_rank_codes(n, 16, 4)
    y, _ = linear_attribute(codes)
    buf = io.BytesIO()
    torch.save({"anchor_w": codes.float(), "anchor_points": torch.zeros(n, 478, 3),
                "anchor_frames": torch.arange(n), "yaw": (y * 20).double(),
                "pitch": torch.from_numpy(np.zeros(n)), "mouth_open": y.double(),
                "eye_open": torch.full([n], 0.3, dtype=torch.float64)}, buf)
    anchors = load_anchors(buf.getvalue())
    dirs = semantic_directions(anchors)
    assert dirs["yaw"].r2 > 0.99 and dirs["mouth_open"].r2 > 0.99
    assert dirs["smile"].is_zero  # all-zero points: no face measured
    with pytest.raises(InvalidInputError) as err:
        semantic_directions({"yaw": y})
    assert_violation(err, "anchors.anchor_w")
    with pytest.raises(InvalidInputError) as err:
        semantic_directions(anchors_with(codes, yaw=y[:5]))
    assert_violation(err, "anchors.yaw")


# ----------------------------------------------------------------------------------------------------
# User W directions


def test_w_direction_inside_the_span_is_exact():
    codes = low_rank_codes(20, 32, 5)
    d = (codes[3] - codes[7]) * 0.5 + (codes[1] - codes[0]) * 0.25  # in the anchors' affine span
    direction = w_direction(codes, d, name="mine")
    assert direction.name == "mine" and direction.units == "w"
    assert direction.r2 == pytest.approx(1.0, abs=1e-6)
    assert direction.unit_change == pytest.approx(float(d.norm()), rel=1e-5)
    assert abs(float(direction.gamma.sum())) < 1e-5
    alpha, delta = inside_point(20, scale=0.0)
    moved = (edited_ws(alpha, delta, codes, [(direction, 0.5)]) - edited_ws(alpha, delta, codes, []))
    torch.testing.assert_close(moved, (0.5 * d).expand(NUM_WS, -1), atol=0.02 * float(d.norm()), rtol=0)


def test_w_direction_keeps_only_the_part_in_the_span():
    codes = low_rank_codes(20, 32, 5)
    ac = (codes - codes.mean(0)).double()
    basis = torch.linalg.svd(ac, full_matrices=False).Vh[:5]  # the span's orthonormal basis
    inside = (basis.T @ torch.tensor([1.0, -2.0, 0.5, 0.0, 1.0], dtype=torch.float64))
    outside = torch.randn(32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    outside = outside - basis.T @ (basis @ outside)
    outside = outside / outside.norm() * inside.norm()
    direction = w_direction(codes, (inside + outside).float())
    assert direction.r2 == pytest.approx(0.5, abs=1e-3)
    step = ac.T @ direction.gamma.double()
    torch.testing.assert_close(step, inside, atol=1e-4, rtol=0)
    assert w_direction(codes, outside.float()).r2 < 1e-6


@pytest.mark.parametrize(("bad", "why"), [
    (torch.zeros(32), "zero"), (torch.ones(31), "shape"), (torch.ones(2, 32), "shape"),
    (torch.full([32], float("nan")), "NaN"), ("north", "tensor"),
])
def test_w_direction_rejects_bad_vectors(bad, why):
    with pytest.raises(InvalidInputError, match=why) as err:
        w_direction(low_rank_codes(8, 32, 3), bad)
    assert_violation(err, "direction")


# ----------------------------------------------------------------------------------------------------
# Applying edits inside P_beta


def big_direction(n=16, seed=0) -> Direction:
    codes = low_rank_codes(n, 24, 6, seed=seed)
    return w_direction(codes, (codes[0] - codes[1]) * 20)  # a huge step: leaves P_beta at once


@pytest.mark.parametrize("on_exit", ["project", "stop"])
def test_large_strengths_stay_inside_pbeta(on_exit):
    direction = big_direction()
    alpha, delta = inside_point(16, batch=5)
    for strength in (MAX_STRENGTH, -MAX_STRENGTH, 1.0):
        unconstrained = alpha + strength * direction.gamma
        assert not in_pbeta(unconstrained, delta).all()
        edited = apply_edits(alpha, delta, [(direction, strength)], on_exit=on_exit)
        assert edited.shape == alpha.shape
        assert in_pbeta(edited, delta).all()
        torch.testing.assert_close(edited.sum(-1), alpha.sum(-1))  # row sums (s_l) do not move
        raw = (edited.unsqueeze(-2) + delta).double()
        ratios = raw / raw.sum(-1, keepdim=True)
        assert float(ratios.min()) >= -BETA - 1e-6
        assert float(ratios.min()) < -BETA + 1e-4  # it went as far as the boundary
        moved = (edited - alpha).double()
        step = strength * direction.gamma.double()
        along = moved @ step / step.square().sum()  # fraction of the step, measured along it
        if on_exit == "stop":  # the same direction, a fraction of the step
            assert torch.all((along > 0) & (along < 1))
            torch.testing.assert_close(moved, along[:, None] * step, atol=1e-6, rtol=0)
        else:  # the projection goes at least as far along the step as stopping (a property of it)
            stop = apply_edits(alpha, delta, [(direction, strength)], on_exit="stop")
            assert torch.all(along >= (stop - alpha).double() @ step / step.square().sum() - 1e-6)


def test_projection_is_the_nearest_feasible_point():
    direction = big_direction(n=8, seed=2)
    alpha, delta = inside_point(8, scale=0.01)
    target = alpha.double() + 2.0 * (direction.gamma.double() - direction.gamma.double().mean())
    edited = apply_edits(alpha, delta, [(direction, 2.0)]).double()
    assert in_pbeta(edited.float(), delta)
    # KKT of min |x - target|^2 s.t. sum x = sum alpha, x >= lo: x = max(target - tau, lo), one tau >= 0
    lo = (-BETA * (alpha.unsqueeze(-2) + delta).sum(-1, keepdim=True) - delta).amax(-2).double()
    at_bound = (edited - lo).abs() < 1e-6
    tau = (target - edited)[~at_bound]
    assert at_bound.any() and (~at_bound).any()
    assert float(tau.max() - tau.min()) < 1e-5 and float(tau.min()) >= -1e-7
    assert torch.all((target - lo)[at_bound] <= tau.mean() + 1e-6)
    rng = torch.Generator().manual_seed(0)
    for _ in range(300):  # no feasible point with the same sum is nearer to the target
        probe = edited + torch.randn(8, generator=rng, dtype=torch.float64) * 1e-3
        probe = probe - (probe.sum() - edited.sum()) / 8
        if in_pbeta(probe.float(), delta, atol=0):
            assert (probe - target).norm() >= (edited - target).norm() - 1e-9


def test_a_point_already_outside_is_never_pushed_further_out():
    direction = big_direction()
    alpha, delta = inside_point(16)
    alpha = alpha.clone()
    alpha[0] -= 0.12  # below -beta on every layer
    alpha[1] += 0.12
    assert not in_pbeta(alpha, delta)
    raw0 = alpha.unsqueeze(-2) + delta
    for strength in (-3.0, 3.0):
        edited = apply_edits(alpha, delta, [(direction, strength)])
        raw = edited.unsqueeze(-2) + delta
        worst_before = (raw0 / raw0.sum(-1, keepdim=True)).amin(-2)
        after = (raw / raw.sum(-1, keepdim=True)).amin(-2)
        assert torch.all(after >= torch.minimum(worst_before, torch.tensor(-BETA)) - 1e-6)
        assert float((edited - alpha).abs().max()) > 1e-3  # the rest of the edit still applies


def test_batch_equals_frame_by_frame_and_shapes():
    direction = big_direction()
    small = w_direction(low_rank_codes(16, 24, 6), torch.randn(24, generator=torch.Generator().manual_seed(1)))
    edits = [(direction, 1.5), (small, -0.7)]
    alpha, delta = inside_point(16, batch=6, seed=9, scale=0.01)
    batched = apply_edits(alpha, delta, edits)
    single = torch.stack([apply_edits(alpha[i], delta[i], edits) for i in range(6)])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)
    shared = apply_edits(alpha[0], delta, edits)  # one alpha, per-frame deltas: broadcast
    assert shared.shape == (6, 16)
    codes = low_rank_codes(16, 24, 6)
    ws = edited_ws(alpha, delta, codes, edits)
    assert ws.shape == (6, NUM_WS, 24)
    torch.testing.assert_close(ws[2], edited_ws(alpha[2], delta[2], codes, edits), atol=1e-5, rtol=0)
    torch.testing.assert_close(apply_edits(alpha, delta, []), alpha)  # no edits: unchanged


def test_edits_add_up_while_inside():
    codes = low_rank_codes(16, 24, 6)
    y, _ = linear_attribute(codes)
    dirs = semantic_directions(anchors_with(codes, yaw=y * 10, mouth_open=y * 0.1 + torch.arange(16.0) * 0.01))
    alpha, delta = inside_point(16, scale=0.002)
    both = apply_edits(alpha, delta, [(dirs["yaw"], 0.3), (dirs["mouth_open"], -0.2)])
    expected = alpha + 0.3 * dirs["yaw"].gamma - 0.2 * dirs["mouth_open"].gamma
    torch.testing.assert_close(both, expected, atol=1e-6, rtol=0)


def test_apply_edits_rejects_bad_input():
    direction = big_direction()
    alpha, delta = inside_point(16)
    for strength, field in ((3.5, "edits[0].strength"), (float("nan"), "edits[0].strength"),
                            (-3.01, "edits[0].strength")):
        with pytest.raises(InvalidInputError) as err:
            apply_edits(alpha, delta, [(direction, strength)])
        assert_violation(err, field)
    other = big_direction(n=9)
    with pytest.raises(InvalidInputError, match="another person") as err:
        apply_edits(alpha, delta, [(direction, 1.0), (other, 1.0)])
    assert_violation(err, "edits[1].direction")
    with pytest.raises(InvalidInputError) as err:
        apply_edits(alpha, delta, [("yaw", 1.0)])
    assert_violation(err, "edits[0].direction")
    with pytest.raises(InvalidInputError) as err:
        apply_edits(alpha, delta[:, :15], [(direction, 1.0)])
    assert_violation(err, "alpha")
    with pytest.raises(InvalidInputError) as err:
        apply_edits(alpha.expand(3, -1), delta.expand(4, -1, -1), [(direction, 1.0)])
    assert_violation(err, "delta")
    with pytest.raises(ValueError):
        apply_edits(alpha, delta, [(direction, 1.0)], on_exit="continue")
    with pytest.raises(InvalidInputError) as err:
        edited_ws(alpha, delta, low_rank_codes(15, 24, 4), [(direction, 1.0)])
    assert_violation(err, "anchor_w")
