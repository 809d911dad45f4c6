"""Live mode's static step (issue 7): reenact.optimize.graphed.StaticStep against the eager engine.

On the CPU the static step runs eagerly (the same code that is captured as a CUDA graph on a GPU); the
last test compares graph replay with the eager static step and runs only where CUDA is present (the GPU
machine; CI has no GPU). Where mediapipe is not installed (the GPU machine), REENACT_LANDMARK_BUNDLE may
name an evaluation bundle whose pickled landmark network is used instead."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from reenact.models.stylegan2 import Generator
from reenact.optimize import OptimizerOptions, PersonModel, Target, engine
from reenact.optimize.amortized import KeypointRegressor, render_samples
from reenact.optimize.graphed import adam_update
from reenact.optimize.live import LiveReenactor, render_results

R = 32


@pytest.fixture(scope="module", autouse=True)
def _landmark_net_source():
    bundle = os.environ.get("REENACT_LANDMARK_BUNDLE")
    if not bundle:
        yield
        return
    from reenact.evaluation.bundle import Bundle
    from reenact.evaluation.methods import bundle_landmark_net

    with bundle_landmark_net(Bundle(bundle)):
        yield


def _person(device="cpu") -> PersonModel:
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=R, channel_base=256, channel_max=16, num_mapping_layers=1)
    anchor_w = torch.randn(6, 16)
    pts = render_samples(G.eval().requires_grad_(False), engine.landmark_net("cpu"), anchor_w, torch.eye(6))
    person = PersonModel.from_parts("astro", 1, G, anchor_w, pts, device)
    person.initializer = KeypointRegressor(6, R, hidden=32).to(device).eval().requires_grad_(False)
    return person


@pytest.fixture(scope="module")
def person() -> PersonModel:
    return _person()


def _targets(person, n, *, crops=True, start=0) -> list[Target]:
    """n driving frames: the anchors' own keypoints, moved a little, with crops rendered from the anchors."""
    pts = person.anchor_points.cpu().numpy()
    imgs = render_results(person, [_Ws(w) for w in person.anchor_w[:, None].expand(-1, person.G.num_ws, -1)],
                          person.anchor_w.device)
    out = []
    for i in range(n):
        k = i % len(pts)
        kp = (pts[k] + np.float32(0.3 * np.sin(i))).astype(np.float32)
        out.append(Target(start + i, kp, R, imgs[k] if crops else None))
    return out


class _Ws:
    def __init__(self, ws):
        self.ws = ws.cpu().numpy()


def test_adam_update_matches_torch_adam():
    torch.manual_seed(1)
    p0 = torch.randn(3, 5)
    ref = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.1)
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for step in range(1, 5):
        grad = torch.randn(3, 5)
        lr = 0.1 * (1 - 0.2 * step)
        opt.param_groups[0]["lr"] = lr
        ref.grad = grad.clone()
        opt.step()
        p, m, v = adam_update(p, grad, m, v, lr, step)
        assert torch.allclose(p, ref.detach(), atol=1e-6), step


@pytest.mark.parametrize("steps", [1, 3])
def test_first_batch_equals_the_engine(person, steps):
    """Before any warm start both chains start at the initializer's prediction: the static step visits the
    engine's points, so its results are the engine's (latents, loss terms, keypoint error)."""
    opts = OptimizerOptions(steps=steps, init="regressor")
    targets = _targets(person, 3)
    eng = LiveReenactor(person, opts, max_batch=4, step="engine").process(targets)
    sta = LiveReenactor(person, opts, max_batch=4, step="static").process(targets)
    for (a, _), (b, _) in zip(eng, sta, strict=True):
        assert a.index == b.index and a.steps == b.steps == steps
        np.testing.assert_allclose(b.ws, a.ws, atol=2e-5)
        np.testing.assert_allclose(b.alpha, a.alpha, atol=2e-5)
        for k in a.losses:
            assert b.losses[k] == pytest.approx(a.losses[k], rel=1e-4, abs=1e-5), k
        assert b.keypoint_error == pytest.approx(a.keypoint_error, rel=1e-4)


def test_later_batches_are_never_worse_than_the_engine(person):
    """With a warm start the engine optimizes the better of its two starts; the static step optimizes both
    and keeps the best point of either: per frame its total loss is at most the engine's. With one step
    (no update) both return exactly the better start."""
    for steps in (1, 3):
        opts = OptimizerOptions(steps=steps, init="regressor")
        eng = LiveReenactor(person, opts, max_batch=4, step="engine")
        sta = LiveReenactor(person, opts, max_batch=4, step="static")
        targets = _targets(person, 9)
        for chunk in (targets[:2], targets[2:6], targets[6:9]):
            for (a, _), (b, _) in zip(eng.process(chunk), sta.process(chunk), strict=True):
                if steps == 1:
                    assert b.losses["total"] == pytest.approx(a.losses["total"], rel=1e-4, abs=1e-5)
                else:
                    assert b.losses["total"] <= a.losses["total"] * (1 + 1e-4) + 1e-6
        assert sta.engine.stats["warm_starts"] + sta.engine.stats["regressor_starts"] == 9


def test_images_are_the_results_rendered(person):
    out = LiveReenactor(person, OptimizerOptions(steps=2, init="regressor"), max_batch=4, step="static").process(
        _targets(person, 3))
    rendered = render_results(person, [r for r, _ in out], "cpu")
    for (_, img), ref in zip(out, rendered, strict=True):
        assert img.dtype == np.uint8 and img.shape == (R, R, 3)
        assert np.abs(img.astype(int) - ref.astype(int)).max() <= 1


def test_padding_does_not_change_results(person):
    """3 frames run in a batch of 4 (one padded copy) give what a batch of exactly 3 gives."""
    opts = OptimizerOptions(steps=2, init="regressor")
    targets = _targets(person, 3)
    padded = LiveReenactor(person, opts, max_batch=4, step="static")
    exact = LiveReenactor(person, opts, max_batch=3, step="static")
    assert padded.batch_size_for(3) == 4 and exact.batch_size_for(3) == 3
    for (a, ia), (b, ib) in zip(padded.process(targets), exact.process(targets), strict=True):
        np.testing.assert_allclose(a.ws, b.ws, atol=1e-5)
        assert np.abs(ia.astype(int) - ib.astype(int)).max() <= 1


def test_frames_without_a_face_repeat_the_previous_result(person):
    rt = LiveReenactor(person, OptimizerOptions(steps=1, init="regressor"), max_batch=4, step="static")
    t = _targets(person, 3)
    t[1] = Target(1, t[1].keypoints, R, None, has_face=False)
    out = rt.process(t)
    assert [r.index for r, _ in out] == [0, 1, 2]
    assert out[1][0].steps == 0 and np.isnan(out[1][0].keypoint_error)
    np.testing.assert_array_equal(out[1][0].ws, out[0][0].ws)
    np.testing.assert_array_equal(out[1][1], out[0][1])
    first = LiveReenactor(person, OptimizerOptions(steps=1, init="regressor"), max_batch=2, step="static")
    (r, img), = first.process([Target(0, t[0].keypoints, R, None, has_face=False)])
    assert r.steps == 0 and img.shape == (R, R, 3)  # no result before: the P+ centre, rendered


def test_without_crops_and_with_anchor_init(person):
    opts = OptimizerOptions(steps=2, init="anchor", mouth_weight=0.0, eye_weight=0.0)
    out = LiveReenactor(person, opts, max_batch=2, step="static").process(_targets(person, 2, crops=False))
    assert all(np.isfinite(r.losses["total"]) and r.losses["mouth"] == 0 for r, _ in out)
    # the nearest anchor of an anchor's own keypoints is that anchor: one-hot start
    first = LiveReenactor(person, OptimizerOptions(steps=1, init="anchor"), max_batch=1, step="static")
    (r, _), = first.process([Target(0, person.anchor_points[4].numpy(), R, None)])
    assert int(np.argmax(r.alpha)) == 4


def test_bad_settings_are_refused(person):
    with pytest.raises(ValueError, match="step must be one of"):
        LiveReenactor(person, max_batch=2, step="fast")
    with pytest.raises(ValueError, match="init 'regressor' or 'anchor'"):
        LiveReenactor(person, OptimizerOptions(init="uniform"), max_batch=2, step="static").process(
            _targets(person, 1))
    with pytest.raises(ValueError, match="exclude each other"):
        LiveReenactor(person, max_batch=2, step="static", compile=True)
    rt = LiveReenactor(person, max_batch=2, step="static")
    with pytest.raises(ValueError, match="1..2 targets"):
        rt.process(_targets(person, 3))
    assert LiveReenactor(person, max_batch=2).step == "engine"  # auto on the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none; run on the GPU machine)")
def test_cuda_graph_replay_equals_the_eager_static_step():
    """One step (no update): replay and eager compute the same points. Three steps: CUDA's atomics
    (grid_sample's backward) change the last bits of gradients, and Adam's first steps are about
    lr * sign(gradient), so near-zero coordinates may step apart: the losses must agree closely."""
    person = _person("cuda")
    targets = _targets(person, 10)
    for steps, rtol in ((1, 1e-5), (3, 0.05)):
        opts = OptimizerOptions(steps=steps, init="regressor")
        graph = LiveReenactor(person, opts, max_batch=4, device="cuda")
        eager = LiveReenactor(person, opts, max_batch=4, device="cuda", step="static", graph=False)
        assert graph.step == "static"
        for chunk in (targets[:1], targets[1:4], targets[4:5], targets[5:9], targets[9:]):
            for (a, ia), (b, ib) in zip(graph.process(chunk), eager.process(chunk), strict=True):
                assert a.losses["total"] == pytest.approx(b.losses["total"], rel=rtol, abs=1e-5)
                if steps == 1:
                    np.testing.assert_allclose(a.ws, b.ws, atol=1e-4)
                    assert np.abs(ia.astype(int) - ib.astype(int)).max() <= 2
        assert sorted(graph._static) == [1, 4] and all(s._graph is not None for s in graph._static.values())
    # a second stream captures while the first one's graphs are retired (dropped, then destroyed under the lock)
    from reenact.optimize import ReenactmentOptimizer, graphed

    del graph, eager
    opts = OptimizerOptions(steps=3, init="regressor", window=2, keypoint_sigma=0.0)
    first = ReenactmentOptimizer(person, opts, static=True, device="cuda")
    out = [r for t in targets[:4] for r in first.push(t)]
    del first
    import gc

    gc.collect()  # the first stream's graph is retired now and destroyed by the second stream's capture
    assert graphed._RETIRED
    second = ReenactmentOptimizer(person, opts, static=True, device="cuda")
    out2 = [r for t in targets[:4] for r in second.push(t)] + second.flush()
    assert len(out) == 4 and len(out2) == 4 and not graphed._RETIRED
    second.close()


def test_engine_static_windows_stream_in_order(person):
    """ReenactmentOptimizer(static=True) (the optimizer service's path): every window runs the static step,
    padded to `window`; results come back once, in order, with fixed steps; the first window equals the
    eager engine's; a frame without a face repeats the latent before it."""
    from reenact.optimize import ReenactmentOptimizer

    opts = OptimizerOptions(steps=2, init="regressor", window=3, keypoint_sigma=0.0)
    targets = _targets(person, 7)
    targets[4] = Target(4, targets[4].keypoints, R, None, has_face=False)
    static = ReenactmentOptimizer(person, opts, static=True)
    out = [r for t in targets for r in static.push(t)] + static.flush()
    assert [r.index for r in out] == list(range(7))
    assert [r.steps for r in out] == [2, 2, 2, 2, 0, 2, 2]
    np.testing.assert_array_equal(out[4].ws, out[3].ws)
    eager = ReenactmentOptimizer(person, opts)
    first = [r for t in targets[:3] for r in eager.push(t)]
    for a, b in zip(first, out[:3], strict=True):
        np.testing.assert_allclose(b.ws, a.ws, atol=2e-5)
    assert static._static_step.batch == 3


def test_engine_static_checks_and_cancel(person):
    from reenact.errors import CancelledError, InvalidInputError
    from reenact.optimize import ReenactmentOptimizer

    with pytest.raises(InvalidInputError, match="static step needs init"):
        ReenactmentOptimizer(person, OptimizerOptions(init="uniform"), static=True)
    with pytest.raises(ValueError, match="exclude each other"):
        ReenactmentOptimizer(person, OptimizerOptions(init="regressor"), static=True, compile=True)
    stop = ReenactmentOptimizer(person, OptimizerOptions(steps=1, window=1, keypoint_sigma=0.0), static=True,
                                should_stop=lambda: True)
    with pytest.raises(CancelledError):
        stop.push(_targets(person, 1)[0])


def test_a_dropped_steps_graph_is_retired_not_destroyed_until_the_capture_lock_is_free(person):
    """A finished stream's engine and its static step form a reference cycle; Python's GC may free it in the
    thread of another stream's CUDA graph capture, and destroying a graph there invalidates that capture
    (seen in the optimizer service on an H100). A dropped step's graph (here a stand-in object: CPU) is
    handed to graphed._RETIRED and destroyed only by release_graphs() / the next capture, under the lock;
    engine.close() (called by the service when a stream ends) releases it at once."""
    import gc
    import weakref

    from reenact.optimize import ReenactmentOptimizer, graphed

    class Graph:  # stands in for a torch.cuda.CUDAGraph
        pass

    opts = OptimizerOptions(steps=1, init="regressor", window=2, keypoint_sigma=0.0)
    engine = ReenactmentOptimizer(person, opts, static=True)
    for t in _targets(person, 2):
        engine.push(t)
    step = engine._static_step
    assert step is not None and step._graph is None  # CPU: no capture
    g = Graph()
    alive = weakref.ref(g)
    step._holder[:] = [g, {}]
    del g, step, engine
    gc.collect()  # the cycle engine <-> step is freed: the graph is retired, still alive
    assert alive() is not None and any(alive() in h for h in graphed._RETIRED)
    graphed.release_graphs()
    assert alive() is None and graphed._RETIRED == []

    engine = ReenactmentOptimizer(person, opts, static=True)
    for t in _targets(person, 2):
        engine.push(t)
    g = Graph()
    alive = weakref.ref(g)
    engine._static_step._holder[:] = [g]
    del g
    engine.close()
    assert alive() is None and engine._static_step is None and graphed._RETIRED == []
    engine.close()  # idempotent


def test_packed_outputs_unpack_to_the_step_outputs_and_results_own_their_arrays(person):
    """The static step returns every per-frame number through one packed row per frame (one device-to-host
    copy) and reuses its host buffers: unpacking gives back each output, and a batch's results keep their
    values after later batches."""
    from reenact.optimize import ReenactmentOptimizer
    from reenact.optimize.engine import LOSS_NAMES, _Frame
    from reenact.optimize.graphed import StaticStep, WarmStart

    opts = OptimizerOptions(steps=2, init="regressor", window=3, keypoint_sigma=0.0)
    eng = ReenactmentOptimizer(person, opts)
    step = StaticStep(eng, 3, WarmStart.zeros(eng.anchors.shape[0], eng.num_ws, eng.device))

    def frames(ts):
        return [_Frame(t, *([eng.accept(t)[1]] * 2)) for t in ts]

    ts = _targets(person, 5)
    first = step.run(frames(ts[:2]))
    out = step._out if step._out is not None else step._forward()  # eager on the CPU: recompute the last batch
    fields, pics = step._unpack(out, 2, True)
    for k in ("alpha", "delta", "ws", "error"):
        np.testing.assert_allclose(fields[k], out[k][:2].float().numpy(), rtol=0, atol=0)
    np.testing.assert_array_equal(fields["terms"], out["terms"][:2].numpy())
    np.testing.assert_array_equal(fields["pick"].astype(np.int64), out["pick"][:2].numpy())
    np.testing.assert_array_equal(pics, out["image"][:2].numpy())
    assert fields["delta"].shape == (2, eng.num_ws, eng.anchors.shape[0]) and len(LOSS_NAMES) == fields["terms"].shape[1]
    from reenact.models.pplus import effective_anchors

    for r, _img in first:   # how many anchors each returned point blends, as the eager engine reports it
        want = float(effective_anchors(torch.from_numpy(r.alpha), torch.from_numpy(r.delta), beta=opts.beta))
        assert 1.0 <= r.anchors_eff <= eng.anchors.shape[0] and abs(r.anchors_eff - want) < 1e-4
    kept = [(r.ws.copy(), r.alpha.copy(), img.copy()) for r, img in first]
    step.run(frames(ts[2:5]))
    for (r, img), (ws, alpha, pic) in zip(first, kept, strict=True):
        np.testing.assert_array_equal(r.ws, ws)
        np.testing.assert_array_equal(r.alpha, alpha)
        np.testing.assert_array_equal(img, pic)
