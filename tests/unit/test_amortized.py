"""Amortized initialization (issue 7): the per-person keypoints -> P+ regressor and its use by the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reenact.errors import PreconditionError
from reenact.models.pplus import PPlus, init_alpha
from reenact.models.stylegan2 import Generator
from reenact.optimize import OptimizerOptions, PersonModel, ReenactmentOptimizer, Target, landmark_net
from reenact.optimize.amortized import KeypointRegressor, nearest_alpha, render_samples, train_regressor

R = 32


@pytest.fixture(scope="module")
def face_points() -> np.ndarray:
    from reenact.face.align import ffhq_alignment, transform_points
    from reenact.fixtures import load_face, make_schedule, render_selfscan

    _, truth = render_selfscan(load_face("astronaut"), make_schedule(1), size=128)
    gt = np.asarray(truth["frames"][0]["landmarks_3d"], np.float64)
    return transform_points(gt, ffhq_alignment(gt, 128).source_to_crop).astype(np.float32)


@pytest.fixture(scope="module")
def person() -> PersonModel:
    """A tiny random generator whose anchors' keypoints are what the landmark net measures on them."""
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=R, channel_base=256, channel_max=16, num_mapping_layers=1)
    anchor_w = torch.randn(6, 16)
    pts = render_samples(G.eval().requires_grad_(False), landmark_net("cpu"), anchor_w, torch.eye(6))
    return PersonModel.from_parts("astro", 1, G, anchor_w, pts)


@pytest.fixture(scope="module")
def trained(person):
    return train_regressor(person.G, landmark_net("cpu"), person.anchor_w, person.anchor_points, samples=120,
                           steps=250, batch=64, hidden=64)


def test_regressor_outputs_convex_mixes_and_round_trips(trained, person):
    model, _ = trained
    alpha = model(person.anchor_points)
    assert alpha.shape == (6, 6)
    assert torch.all(alpha >= 0) and torch.allclose(alpha.sum(-1), torch.ones(6), atol=1e-5)
    again = KeypointRegressor.from_bytes(model.to_bytes({"x": 1.0}))
    assert torch.allclose(again(person.anchor_points), alpha)
    with pytest.raises(ValueError, match="reenact.amortized"):
        KeypointRegressor.from_bytes(_torch_bytes({"format": "other"}))


def _torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_regressor_beats_the_nearest_anchor_on_held_out_samples(trained):
    """Held-out rendered mixes (never trained on): the predicted latent is closer in W than the nearest
    anchor's, by a clear margin."""
    _, stats = trained
    assert stats.heldout_w_error < 0.7 * stats.nearest_w_error, stats
    assert stats.samples == 120 and stats.steps == 250


def test_nearest_alpha_is_one_hot_at_the_closest_anchor(person):
    alpha = nearest_alpha(person.anchor_points[[3, 1]], person.anchor_points)
    assert alpha.argmax(-1).tolist() == [3, 1] and torch.all(alpha.sum(-1) == 1)


def test_init_modes(person, trained):
    assert ReenactmentOptimizer(person, OptimizerOptions()).init == "anchor"  # auto, no initializer
    with pytest.raises(PreconditionError, match="no amortized initializer"):
        ReenactmentOptimizer(person, OptimizerOptions(init="regressor"))
    with_init = PersonModel(**{**person.__dict__, "initializer": trained[0]})
    assert ReenactmentOptimizer(with_init, OptimizerOptions()).init == "regressor"
    assert ReenactmentOptimizer(with_init, OptimizerOptions(init="anchor")).init == "anchor"
    assert ReenactmentOptimizer(with_init, OptimizerOptions(init="mixed")).init == "mixed"
    with pytest.raises(PreconditionError, match="no amortized initializer.*'mixed'"):
        ReenactmentOptimizer(person, OptimizerOptions(init="mixed"))
    with pytest.raises(Exception, match="init"):
        OptimizerOptions(init="nope").validate()


def _window_start_of_anchor_frames(opt, person, kp, indices):
    """The engine's chosen starts (alpha, delta) for a window of anchor keypoint frames, totals(a, d): the
    total loss of any start on those frames, and their batch."""
    from reenact.optimize.engine import _Frame

    frames = [_Frame(Target(10 + i, kp[i], 128, None), kp[i] * R / 128, kp[i] * R / 128) for i in indices]
    batch = opt._batch(frames)
    alpha, delta = opt._window_start(frames, batch)

    def totals(a, d):
        point = PPlus(person.anchor_w, person.G.num_ws, batch_size=len(indices))
        point.set_point(a, d)
        with torch.no_grad():
            return opt._terms(point, batch)[0]["total"]

    return alpha, delta, totals, batch


@pytest.mark.parametrize("init", ["auto", "mixed"])
def test_initializer_stream_has_no_long_first_frame_and_starts_from_the_best_candidate(person, trained, init):
    """init 'auto' (-> 'regressor') and 'mixed': the first frame gets `steps` (not first_frame_steps); every
    frame's start is the lowest-loss one of the warm start and the prediction, and with 'mixed' also of the
    frame's own nearest anchor (a frame whose keypoints are an anchor's takes that anchor at least once)."""

    with_init = PersonModel(**{**person.__dict__, "initializer": trained[0]})
    opt = ReenactmentOptimizer(with_init, OptimizerOptions(init=init, first_frame_steps=50, steps=3, window=2,
                                                           keypoint_sigma=0.0, tolerance=0.0))
    kp = person.anchor_points.numpy() * (128 / R)
    results = [r for i in range(4) for r in opt.push(Target(i, kp[i], 128, None))] + opt.flush()
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert [r.steps for r in results] == [3, 3, 3, 3]
    assert sum(opt.stats.values()) == 4
    assert (opt.stats["anchor_starts"] >= 1) if init == "mixed" else (opt.stats["anchor_starts"] == 0)

    alpha, delta, totals, batch = _window_start_of_anchor_frames(opt, person, kp, (4, 5))

    prev_a, prev_d = opt._previous
    best = torch.minimum(totals(prev_a.expand(2, -1), prev_d.expand(2, -1, -1)),
                         totals(trained[0](batch.targets), torch.zeros_like(delta)))
    if init == "mixed":
        near = init_alpha(person.anchor_w.shape[0], index=torch.tensor([4, 5]), batch_size=2)
        best = torch.minimum(best, totals(near, torch.zeros_like(delta)))
    assert torch.allclose(totals(alpha, delta), best, rtol=1e-4, atol=1e-5)


def test_mouth_starts_add_the_warm_start_moved_along_the_mouth_direction(person):
    """mouth_starts s > 0: the warm start moved by -2s, -s, +s, +2s along the person's mouth-opening direction
    competes with the other starts; each frame starts from the lowest-loss candidate."""
    from reenact.edit.directions import apply_edits
    from reenact.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="mouth_starts"):
        OptimizerOptions(mouth_starts=2.0).validate()
    with pytest.raises(InvalidInputError, match="mouth_starts"):
        ReenactmentOptimizer(person, OptimizerOptions(init="anchor", mouth_starts=1.0), static=True)
    assert ReenactmentOptimizer(person, OptimizerOptions()).mouth_direction is None  # off by default
    opt = ReenactmentOptimizer(person, OptimizerOptions(init="anchor", mouth_starts=1.0, first_frame_steps=3,
                                                        steps=3, window=2, keypoint_sigma=0.0, tolerance=0.0))
    direction = opt.mouth_direction
    assert direction is not None and direction.name == "mouth_open"
    assert abs(float(direction.gamma.sum())) < 1e-6  # an alpha step that keeps the layer sums
    kp = person.anchor_points.numpy() * (128 / R)
    results = [r for i in range(4) for r in opt.push(Target(i, kp[i], 128, None))] + opt.flush()
    assert [r.index for r in results] == [0, 1, 2, 3]
    # frame 0 is the long first frame; frames 1-3 pick one start each
    assert opt.stats["warm_starts"] + opt.stats["anchor_starts"] + opt.stats["mouth_starts"] == 3

    alpha, delta, totals, batch = _window_start_of_anchor_frames(opt, person, kp, (4, 5))

    prev_a, prev_d = opt._previous
    pd = prev_d.expand(2, -1, -1)
    candidates = [totals(prev_a.expand(2, -1), pd),
                  totals(init_alpha(person.anchor_w.shape[0], index=torch.tensor([4, 5]), batch_size=2),
                         torch.zeros_like(delta))]
    for theta in (-2.0, -1.0, 1.0, 2.0):
        moved = apply_edits(prev_a, prev_d, [(direction, theta)])
        assert not torch.allclose(moved, prev_a)
        candidates.append(totals(moved.expand(2, -1), pd))
    best = torch.stack(candidates).amin(0)
    assert torch.allclose(totals(alpha, delta), best, rtol=1e-4, atol=1e-5)
