"""Reenactment optimizer core: keypoint subsets and normalization, masks, loss terms, options, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reenact.errors import CancelledError, InvalidInputError
from reenact.models.stylegan2 import Generator
from reenact.optimize import OptimizerOptions, PersonModel, ReenactmentOptimizer, Target, get_subset, losses
from reenact.optimize.keypoints import LIPS_INNER, SUBSETS, inter_ocular, part_features

R = 32


@pytest.fixture(scope="module")
def face_points() -> np.ndarray:
    """Exact 478 keypoints of the astronaut fixture, in a 128 px aligned crop (from the fixture's truth)."""
    from reenact.face.align import ffhq_alignment, transform_points
    from reenact.fixtures import load_face, make_schedule, render_selfscan

    _, truth = render_selfscan(load_face("astronaut"), make_schedule(1), size=128)
    gt = np.asarray(truth["frames"][0]["landmarks_3d"], np.float64)
    return transform_points(gt, ffhq_alignment(gt, 128).source_to_crop).astype(np.float32)


@pytest.fixture(scope="module")
def person(face_points) -> PersonModel:
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=R, channel_base=256, channel_max=16, num_mapping_layers=1)
    anchor_w = torch.randn(4, 16)
    pts = torch.from_numpy(face_points * (R / 128)).expand(4, -1, -1).clone()
    pts[1:, :, 0] += torch.arange(1, 4)[:, None].float()  # anchors differ by a shift
    return PersonModel.from_parts("astro", 1, G, anchor_w, pts)


def opts(**kw) -> OptimizerOptions:
    base = dict(first_frame_steps=3, steps=2, window=2, keypoint_sigma=1.0)
    return OptimizerOptions(**{**base, **kw})


def targets(face_points, n, start=0, crop=True):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    return [Target(start + i, face_points + np.float32(0.3 * i), 128, img if crop else None) for i in range(n)]


# ---------------------------------------------------------------------------------------------- subsets


def test_subsets_have_the_documented_sizes():
    assert 60 <= get_subset("default").size <= 70
    for name in SUBSETS:
        s = get_subset(name)
        idx = s.indices
        assert len(set(idx.tolist())) == len(idx) and idx.min() >= 0 and idx.max() < 478
        assert set(s.parts) == {"oval", "nose", "right_brow", "left_brow", "right_eye", "left_eye", "lips"}
    assert get_subset("all").size == 478
    with pytest.raises(ValueError):
        get_subset("nope")


def test_part_features_remove_each_part_centroid(face_points):
    s = get_subset("contours")
    f = part_features(torch.from_numpy(face_points), s)
    part_of = torch.from_numpy(s.part_of)
    for p in range(len(s.parts)):
        assert f.local[part_of == p].mean(0).abs().max() < 1e-4
    assert f.centroids.shape == (len(s.parts), 3) and f.scale > 0


def test_keypoint_loss_zero_for_equal_and_local_terms_translation_invariant(face_points):
    s = get_subset("default")
    pts = torch.from_numpy(face_points)
    assert losses.keypoint_loss(pts, pts, s) < 1e-10
    moved = pts + torch.tensor([5.0, -3.0, 2.0])
    f0, f1 = part_features(pts, s), part_features(moved, s)
    torch.testing.assert_close(f0.local, f1.local)
    torch.testing.assert_close(f0.scale, f1.scale)
    # a translation costs exactly the centroid term; translating both changes nothing
    assert losses.keypoint_loss(moved, pts, s) > 0
    torch.testing.assert_close(losses.keypoint_loss(moved + 1, pts + 1, s), losses.keypoint_loss(moved, pts, s))
    # scale-free: the same relative error at twice the size gives the same loss
    torch.testing.assert_close(losses.keypoint_loss(2 * moved, 2 * pts, s), losses.keypoint_loss(moved, pts, s))


def test_inter_ocular_distance(face_points):
    iod = float(inter_ocular(face_points))
    assert 25 < iod < 45  # an FFHQ crop of 128 px: eyes about 0.27 of the width apart
    torch.testing.assert_close(inter_ocular(torch.from_numpy(face_points)), torch.tensor(iod))


# ------------------------------------------------------------------------------------------------ masks


INNER_LOWER = [95, 88, 178, 87, 14, 317, 402, 318, 324]
INNER_UPPER = [191, 80, 81, 82, 13, 312, 311, 310, 415]  # above INNER_LOWER, same order


def _open_mouth(points: np.ndarray) -> np.ndarray:
    p = points.copy()
    p[INNER_LOWER, 1] += 6.0
    return p


def _closed_mouth(points: np.ndarray) -> np.ndarray:
    p = points.copy()
    p[INNER_LOWER] = p[INNER_UPPER]
    return p


def test_mouth_mask_is_feathered_and_inside_the_inner_lip_ring(face_points):
    pts = _open_mouth(face_points)
    m = losses.mouth_mask(pts, 128, feather=1.5)
    ring = pts[list(LIPS_INNER), :2]
    cx, cy = ring.mean(0)
    assert m[int(cy), int(cx)] > 0.8
    assert m[5, 5] == 0 and m[int(cy) - 25, int(cx)] < 1e-3  # far away: nothing
    assert ((m > 0.05) & (m < 0.95)).sum() > 20  # a soft edge
    assert 0 <= m.min() and m.max() <= 1
    closed = losses.mouth_mask(_closed_mouth(face_points), 128, feather=1.5)
    assert closed.sum() < 0.1 * m.sum()


def test_iris_mask_covers_both_irises(face_points):
    m = losses.iris_mask(face_points, 128, feather=1.0)
    for c in (468, 473):
        x, y = face_points[c, :2]
        assert m[int(y), int(x)] > 0.7
    assert m[64, 64] < 1e-3 and ((m > 0.05) & (m < 0.95)).any()


def test_masked_l2_is_zero_outside_the_mask():
    a = torch.zeros(1, 3, 8, 8)
    b = torch.zeros(1, 3, 8, 8)
    b[..., :4] = 1.0
    mask = torch.zeros(1, 8, 8)
    mask[..., 4:] = 1.0
    assert losses.masked_l2(a, b, mask).item() == pytest.approx(0.0)
    assert losses.masked_l2(a, b, 1 - mask).item() == pytest.approx(1.0, rel=1e-5)


# ------------------------------------------------------------------------------------ terms + gradients


def test_opening_ratios_are_the_retargeting_expression_features_and_the_loss_sees_a_mouth_opening(face_points):
    from reenact.optimize.retarget import expression_features

    pts = torch.from_numpy(face_points).double()
    np.testing.assert_allclose(losses.opening_ratios(pts).numpy(), expression_features(face_points.astype(np.float64)),
                               rtol=1e-6)
    assert float(losses.opening_loss(pts, pts)) == 0.0
    opened = pts.clone()
    opened[14, 1] += 0.05 * float(inter_ocular(pts))  # the lower inner lip drops by 5 % of the eye distance
    opened.requires_grad_(True)
    loss = losses.opening_loss(opened, pts)
    assert float(loss.detach()) == pytest.approx(losses.KP_SCALE * 0.05 ** 2, rel=0.05)
    loss.backward()
    moved = opened.grad.abs().sum(-1).nonzero().flatten().tolist()
    assert {13, 14} <= set(moved) and set(moved) <= {13, 14, 33, 133, 362, 263, 159, 145, 386, 374}
    batch = torch.stack([pts, opened.detach()])
    assert losses.opening_loss(batch, pts.expand(2, -1, -1)).shape == (2,)


def test_opening_weight_adds_the_opening_term_to_the_keypoint_term(person, face_points):
    from reenact.models.pplus import PPlus

    frames = [_frame(t, R) for t in targets(face_points, 2)]
    base = ReenactmentOptimizer(person, opts())
    weighted = ReenactmentOptimizer(person, opts(opening_weight=3.0))
    point = PPlus(person.anchor_w, person.G.num_ws, batch_size=2)
    batch = base._batch(frames)
    with torch.no_grad():
        t0, _ = base._terms(point, batch)
        t1, _ = weighted._terms(point, batch)
        kp = losses.generated_keypoints(base.net, person.G.synthesis(point.ws(), noise_mode="const"), base.affine)
        extra = 3.0 * losses.opening_loss(kp, batch.targets)
    assert (extra > 0).all()
    torch.testing.assert_close(t1["keypoint"], t0["keypoint"] + extra, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(t1["total"] - t0["total"], extra, rtol=1e-3, atol=1e-4)
    with pytest.raises(InvalidInputError, match="opening_weight"):
        OptimizerOptions(opening_weight=-1.0).validate()


def test_every_loss_term_is_finite_with_gradients_to_alpha_and_delta(person, face_points):
    from reenact.models.pplus import PPlus

    opt = ReenactmentOptimizer(person, opts())
    frames = [_frame(t, R) for t in targets(face_points, 2)]
    batch = opt._batch(frames)
    point = PPlus(person.anchor_w, person.G.num_ws, batch_size=2)
    with torch.no_grad():
        point.delta.normal_(0, 0.01)
    terms, err = opt._terms(point, batch)
    assert set(terms) == {"keypoint", "mouth", "eye", "delta", "sum", "entropy", "total"}
    for name, value in terms.items():
        assert value.shape == (2,) and torch.isfinite(value).all(), name
    assert err.shape == (2,) and torch.isfinite(err).all()
    for name in ("keypoint", "mouth", "eye", "delta"):
        point.zero_grad()
        terms, _ = opt._terms(point, batch)
        terms[name].sum().backward()
        grad = point.delta.grad if name == "delta" else point.alpha.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_window_start_is_the_better_of_warm_start_and_nearest_anchor(person, face_points):
    """Each frame of a window starts from whichever of the previous result and its own nearest anchor has
    the lower total loss on that frame's target."""
    from reenact.models.pplus import PPlus, init_alpha

    opt = ReenactmentOptimizer(person, opts(first_frame_steps=2, keypoint_sigma=0.0))
    opt.push(targets(face_points, 1)[0])
    opt.flush()
    shifted = []
    for i, dx in enumerate((0.0, 4.0, 8.0, 12.0)):  # at R: anchors are 0..3 px apart, 128/R = 4 px each
        kp = face_points.copy()
        kp[:, 0] += dx
        shifted.append(Target(1 + i, kp, 128, None))
    frames = [_frame(t, R) for t in shifted]
    batch = opt._batch(frames)
    alpha, delta = opt._window_start(frames, batch)
    assert opt.stats["anchor_starts"] + opt.stats["warm_starts"] == 4

    def totals(a, d):
        point = PPlus(person.anchor_w, person.G.num_ws, batch_size=4)
        point.set_point(a, d)
        with torch.no_grad():
            return opt._terms(point, batch)[0]["total"]

    prev_a, prev_d = opt._previous
    warm = totals(prev_a.expand(4, -1), prev_d.expand(4, -1, -1))
    idx = opt.nearest_anchors(np.stack([f.smoothed for f in frames])).cpu()
    anchor = totals(init_alpha(4, index=idx, batch_size=4), torch.zeros_like(delta))
    chosen = totals(alpha, delta)
    assert torch.allclose(chosen, torch.minimum(warm, anchor), rtol=1e-4, atol=1e-5)
    assert idx.tolist() == [0, 1, 2, 3]


def _frame(t: Target, r: int):
    from reenact.optimize.engine import _Frame

    pts = t.keypoints * (r / t.crop_size)
    return _Frame(t, pts, pts)


# ------------------------------------------------------------------------------------------------ options


def test_options_validate_and_override():
    OptimizerOptions().validate()
    with pytest.raises(InvalidInputError) as ei:
        OptimizerOptions(steps=0, learning_rate=float("nan"), keypoint_subset="x", window=0,
                         delta_lr_scale=-1.0, lr_final=2.0).validate()
    fields = {v.field for v in ei.value.violations}
    assert fields == {"options.steps", "options.learning_rate", "options.keypoint_subset", "options.window",
                      "options.delta_lr_scale", "options.lr_final"}
    o = OptimizerOptions().override(steps=5, window=0, keypoint_subset="", learning_rate=0.0, init="uniform",
                                    lr_final=0.0, delta_lr_scale=0.5)
    assert (o.steps, o.window, o.keypoint_subset, o.learning_rate, o.init) == (5, 8, "default", 5e-3, "uniform")
    assert (o.lr_final, o.delta_lr_scale) == (0.1, 0.5)
    with pytest.raises(InvalidInputError):
        OptimizerOptions().override(nope=1)
    with pytest.raises(InvalidInputError):
        ReenactmentOptimizer.__new__(ReenactmentOptimizer).__init__(None, OptimizerOptions(init="zero"))


# ------------------------------------------------------------------------------------------- streaming


def test_targets_are_validated(person, face_points):
    opt = ReenactmentOptimizer(person, opts())
    t0, t1 = targets(face_points, 2)
    opt.push(t0)
    with pytest.raises(InvalidInputError) as ei:
        opt.push(Target(0, t1.keypoints, 128, None))
    assert ei.value.violations[0].field == "target.index"
    bad = t1.keypoints.copy()
    bad[3, 1] = np.nan
    for kp in (bad, t1.keypoints[:468]):
        with pytest.raises(InvalidInputError) as ei:
            opt.push(Target(5, kp, 128, None))
        assert ei.value.violations[0].field == "target.keypoints"


def test_stream_returns_every_frame_once_in_order_with_latency(person, face_points):
    opt = ReenactmentOptimizer(person, opts(window=2, keypoint_sigma=1.0))
    got = []
    ts = targets(face_points, 6, start=10)
    ts[3] = Target(13, ts[3].keypoints, 128, None, has_face=False)
    for i, t in enumerate(ts):
        out = opt.push(t)
        assert all(r.index <= t.index - 1 for r in out)  # sigma 1: one frame of look-ahead
        got += out
        assert bool(out) == (i in (opt.latency, opt.latency + 2))  # windows of 2 frames
    got += opt.flush()
    assert [r.index for r in got] == [10, 11, 12, 13, 14, 15]
    assert got[0].steps == 3 and got[1].steps == 2  # frame 0 budget, then warm-started windows
    no_face = got[3]
    assert no_face.steps == 0 and np.array_equal(no_face.ws, got[2].ws) and no_face.losses == {}
    r = got[0]
    assert r.ws.shape == (person.G.num_ws, 16) and r.ws.dtype == np.float32
    assert r.alpha.shape == (4,) and r.delta.shape == (person.G.num_ws, 4)
    assert set(r.losses) == {"keypoint", "mouth", "eye", "delta", "sum", "entropy", "total"}
    assert np.isfinite(r.keypoint_error)


def test_first_frame_starts_from_the_nearest_anchor(person, face_points):
    opt = ReenactmentOptimizer(person, opts())
    shifted = face_points * (R / 128)
    shifted[:, 0] += 2.0
    assert opt.nearest_anchor(shifted) == 2


def test_deterministic_under_a_seed(person, face_points):
    def run():
        opt = ReenactmentOptimizer(person, opts(init="random", seed=3))
        out = []
        for t in targets(face_points, 3):
            out += opt.push(t)
        return out + opt.flush()

    a, b = run(), run()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.ws, y.ws)


def test_should_stop_raises_cancelled(person, face_points):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 2

    opt = ReenactmentOptimizer(person, opts(first_frame_steps=50), should_stop=stop)
    with pytest.raises(CancelledError):
        for t in targets(face_points, 3):
            opt.push(t)
        opt.flush()
    assert calls["n"] == 3  # stopped at once, not after the step budget


def test_opening_weight_travels_in_the_optimizer_proto():
    from reenact.api.optimizer.v1 import optimizer_pb2 as pb
    from services.optimizer.servicer import options_from_proto

    assert options_from_proto(pb.OptimizerOptions()).opening_weight == OptimizerOptions().opening_weight
    assert options_from_proto(pb.OptimizerOptions(opening_weight=2.5)).opening_weight == 2.5
    with pytest.raises(InvalidInputError, match="config.options.opening_weight"):
        options_from_proto(pb.OptimizerOptions(opening_weight=-1.0))


def test_latent_sigma_smooths_the_returned_latents_over_the_face_frames(person, face_points):
    from reenact.face.smooth import smooth_offline

    frames = targets(face_points, 9)
    frames[4] = Target(4, face_points, 128, None, has_face=False)

    def run(sigma):
        opt = ReenactmentOptimizer(person, opts(latent_sigma=sigma))
        out, late = [], []
        for i, t in enumerate(frames):
            out += opt.push(t)
            late.append(i - len(out))  # frames pushed but not returned yet
        return opt, out + opt.flush(), max(late)

    plain_opt, plain, _ = run(0.0)
    opt, smoothed, late = run(1.0)
    assert opt.latency == plain_opt.latency + 3 and late <= opt.latency
    assert [r.index for r in smoothed] == list(range(9))
    face = np.array([bool(r.losses) for r in plain])
    assert face.tolist() == [i != 4 for i in range(9)]
    n = person.anchor_w.shape[0]
    raw = np.stack([np.concatenate([r.alpha.ravel(), r.delta.ravel()]) for r in plain])
    want = smooth_offline(raw, face, sigma=1.0)
    for i, (p, s) in enumerate(zip(plain, smoothed, strict=True)):
        assert s.losses == p.losses and s.steps == p.steps  # the optimized point's own numbers
        if not face[i]:  # a frame without a face repeats the previous returned (smoothed) latent
            assert not s.losses and np.isnan(s.keypoint_error)
            for k in ("ws", "alpha", "delta"):
                np.testing.assert_array_equal(getattr(s, k), getattr(smoothed[i - 1], k))
            continue
        np.testing.assert_allclose(s.alpha, want[i, :n], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s.delta.ravel(), want[i, n:], rtol=1e-5, atol=1e-6)
        ws = opt._ws(torch.from_numpy(s.alpha), torch.from_numpy(s.delta))
        np.testing.assert_allclose(s.ws, ws, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.stack([s.alpha for s in smoothed]), np.stack([p.alpha for p in plain]))
    for bad in (-1.0, 11.0):
        with pytest.raises(InvalidInputError, match="latent_sigma"):
            OptimizerOptions(latent_sigma=bad).validate()


def test_latent_sigma_travels_in_the_optimizer_proto():
    from reenact.api.optimizer.v1 import optimizer_pb2 as pb
    from services.optimizer.servicer import options_from_proto

    assert options_from_proto(pb.OptimizerOptions()).latent_sigma == 0.0
    assert options_from_proto(pb.OptimizerOptions(latent_sigma=1.5)).latent_sigma == 1.5
    with pytest.raises(InvalidInputError, match="config.options.latent_sigma"):
        options_from_proto(pb.OptimizerOptions(latent_sigma=-1.0))


# ------------------------------------------------------------------------------ alpha_entropy, anchors_eff


def test_anchor_entropy_counts_the_anchors_a_point_blends():
    from reenact.models.pplus import anchor_entropy, coefficients, effective_anchors, init_alpha

    n, num_ws = 10, 4
    delta = torch.zeros(num_ws, n)
    one = effective_anchors(init_alpha(n, index=3), delta)
    uniform = effective_anchors(init_alpha(n), delta)
    pair = torch.zeros(n)
    pair[[2, 7]] = 0.5
    two = effective_anchors(pair, delta)
    # one anchor is 1 up to the dilation's leak to the others (softplus(beta) - beta each, ~0.5% at N 10)
    assert 1.0 <= float(one) < 1.3
    assert abs(float(two) - 2.0) < 0.3 and abs(float(uniform) - n) < 1e-3
    # per layer, mean over layers: a delta that moves one layer to a single anchor lowers the mean
    moved = torch.zeros(num_ws, n)
    moved[0] = -init_alpha(n) + init_alpha(n, index=0)
    assert float(anchor_entropy(coefficients(init_alpha(n), moved))) < float(anchor_entropy(coefficients(init_alpha(n), delta)))
    batch = effective_anchors(torch.stack([init_alpha(n), pair]), torch.zeros(2, num_ws, n))
    assert batch.shape == (2,) and torch.allclose(batch, torch.stack([uniform, two]))


def test_alpha_entropy_option_is_validated_and_off_by_default():
    assert OptimizerOptions().alpha_entropy == 0.0
    for bad in (-0.1, float("nan"), 1e9):
        with pytest.raises(InvalidInputError) as ei:
            OptimizerOptions(alpha_entropy=bad).validate()
        assert ei.value.violations[0].field == "options.alpha_entropy"
    OptimizerOptions(alpha_entropy=0.5).validate()


def test_alpha_entropy_term_pulls_toward_fewer_anchors(person, face_points):
    from reenact.models.pplus import PPlus, effective_anchors

    frames = [_frame(t, R) for t in targets(face_points, 2)]
    off = ReenactmentOptimizer(person, opts())
    on = ReenactmentOptimizer(person, opts(alpha_entropy=2.0))
    batch = on._batch(frames)
    point = PPlus(person.anchor_w, person.G.num_ws, batch_size=2)   # uniform: the widest blend
    terms_off, _ = off._terms(point, batch)
    assert torch.equal(terms_off["entropy"], torch.zeros(2))
    terms, _ = on._terms(point, batch)
    assert torch.allclose(terms["entropy"], 2.0 * torch.log(torch.tensor(4.0)).expand(2), atol=1e-3)
    assert torch.allclose(terms["total"], terms_off["total"] + terms["entropy"])
    # the entropy term alone, followed downhill, concentrates the mix
    with torch.no_grad():
        point.alpha.add_(torch.tensor([0.02, 0.0, 0.0, -0.02]))
    before = effective_anchors(point.alpha, point.delta)
    sgd = torch.optim.SGD(point.parameters(), lr=0.01)
    for _ in range(20):
        sgd.zero_grad()
        on._terms(point, batch)[0]["entropy"].sum().backward()
        sgd.step()
    after = effective_anchors(point.alpha, point.delta)
    assert (after < before - 0.1).all(), (before, after)


def test_results_report_how_many_anchors_they_blend(person, face_points):
    """FrameResult.anchors_eff is exp(entropy) of the returned point's mix, also after latent smoothing and
    on frames without a face (the repeated latent's)."""
    from reenact.models.pplus import effective_anchors

    for extra in ({}, {"latent_sigma": 1.0}):
        opt = ReenactmentOptimizer(person, opts(**extra))
        ts = targets(face_points, 4)
        ts[2] = Target(2, ts[2].keypoints, 128, None, has_face=False)
        got = []
        for t in ts:
            got += opt.push(t)
        got += opt.flush()
        assert [r.index for r in got] == [0, 1, 2, 3]
        for r in got:
            want = float(effective_anchors(torch.from_numpy(r.alpha), torch.from_numpy(r.delta)))
            assert 1.0 <= r.anchors_eff <= 4.0 and abs(r.anchors_eff - want) < 1e-4, (extra, r.index)
        assert got[2].anchors_eff == got[1].anchors_eff
