"""The residual lip warp (reenact.lipwarp), the engine's lip_warp option and the evaluation applying it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reenact import lipwarp
from reenact.errors import InvalidInputError
from reenact.models.stylegan2 import Generator
from reenact.optimize import OptimizerOptions, PersonModel, ReenactmentOptimizer, Target

LOWER_INNER = (14, 87, 178, 88, 95, 317, 402, 318, 324)


@pytest.fixture(scope="module")
def scene():
    """A real face frame (the astronaut fixture, 128 px) and its exact 478 points."""
    from reenact.fixtures import load_face, make_schedule, render_selfscan

    frames, truth = render_selfscan(load_face("astronaut"), make_schedule(1), size=128)
    return frames[0], np.asarray(truth["frames"][0]["landmarks_3d"], np.float64)


def open_mouth(points: np.ndarray, px: float) -> np.ndarray:
    out = points.copy()
    out[list(LOWER_INNER), 1] += px
    return out


def test_lip_points_and_eye_distance_are_the_evaluations():
    from reenact.evaluation.metrics import LIPS, inter_ocular

    assert lipwarp.LIP_POINTS == LIPS and lipwarp.NUM_LIP_POINTS == 40
    pts = np.random.default_rng(0).normal(size=(478, 3)) * 30
    assert lipwarp.eye_distance(pts) == pytest.approx(float(inter_ocular(pts[None])[0]))
    idx = list(lipwarp.LIP_POINTS)
    a, b = lipwarp._MOUTH_CORNERS
    assert (idx[a], idx[b]) == (61, 291)


def test_lip_shift_moves_only_the_shape(scene):
    _, pts = scene
    # the target: the same lips opened by 6 px, on a face 1.5x larger and elsewhere in the frame
    target = 1.5 * (open_mouth(pts, 4.0) - pts.mean(0)) + pts.mean(0) + [10.0, -7.0, 0.0]
    src, dst = lipwarp.lip_shift(pts, target, 1.0)
    assert src.dtype == np.float32 and src.shape == dst.shape == (40, 2)
    np.testing.assert_allclose(src, pts[list(lipwarp.LIP_POINTS), :2], atol=1e-4)
    move = dst - src
    np.testing.assert_allclose(move.mean(0), 0.0, atol=1e-4)          # the lips stay where they are
    lower = [lipwarp.LIP_POINTS.index(i) for i in LOWER_INNER]
    upper = [k for k in range(40) if k not in lower]
    # 4 px at the target's scale = 4 / 1.5 at the rendered face's; minus the centroid's share
    assert np.all(move[lower, 1] > 1.5) and np.all(move[upper, 1] < 0)
    np.testing.assert_allclose(move[lower, 1] - move[upper, 1].mean(), 4.0, atol=1e-3)
    half_src, half_dst = lipwarp.lip_shift(pts, target, 0.5)
    np.testing.assert_allclose(half_dst - half_src, 0.5 * move, atol=1e-4)
    same_src, same_dst = lipwarp.lip_shift(pts, 2.0 * pts + 5.0, 1.0)   # the same shape, scaled: no move
    np.testing.assert_allclose(same_dst, same_src, atol=1e-3)
    for bad in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="gain"):
            lipwarp.lip_shift(pts, target, bad)


def test_warp_lips_moves_the_lips_and_nothing_far_away(scene):
    image, pts = scene
    src = pts[list(lipwarp.LIP_POINTS), :2].astype(np.float32)
    assert lipwarp.warp_lips(image, src, src) is image                    # nothing moves: the same frame
    k = lipwarp.LIP_POINTS.index(14)                                      # the lower inner lip's middle
    marked = image.copy()
    x, y = np.round(src[k]).astype(int)
    marked[y - 1:y + 1, x - 1:x + 1] = (255, 0, 255)
    dst = src + np.float32([0.0, 3.0])                                    # the whole mouth 3 px down
    out = lipwarp.warp_lips(marked, src, dst)
    assert out is not marked and out.shape == marked.shape and out.dtype == np.uint8
    assert not np.array_equal(out, marked)

    def magenta_centre(img):
        m = (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] > 200)
        ys, xs = np.nonzero(m)
        return np.array([xs.mean(), ys.mean()])

    np.testing.assert_allclose(magenta_centre(out) - magenta_centre(marked), [0.0, 3.0], atol=1.0)
    eyes_row = int(pts[[33, 263], 1].mean())                             # the eyes' band does not move
    np.testing.assert_array_equal(out[: eyes_row + 3], marked[: eyes_row + 3])
    # the same warp on a frame twice as large, with the points given at the smaller size
    big = np.repeat(np.repeat(marked, 2, axis=0), 2, axis=1)
    out2 = lipwarp.warp_lips(big, src, dst, scale=2.0)
    np.testing.assert_allclose(magenta_centre(out2) / 2 - magenta_centre(marked), [0.0, 3.0], atol=1.0)
    with pytest.raises(ValueError, match=r"\[40, 2\]"):
        lipwarp.warp_lips(image, src[:39], dst[:39])
    with pytest.raises(ValueError, match="finite"):
        lipwarp.warp_lips(image, src, np.full_like(dst, np.nan))


R = 32


def _person(scene):
    _, pts = scene
    from reenact.face.align import ffhq_alignment, transform_points

    face = transform_points(pts, ffhq_alignment(pts, 128).source_to_crop)
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=R, channel_base=256, channel_max=16, num_mapping_layers=1)
    anchors = torch.from_numpy(np.stack([face, open_mouth(face, 6.0)]) * (R / 128)).float()
    return PersonModel.from_parts("p", 1, G, torch.randn(2, 16), anchors), face


def test_engine_lip_warp_option_is_validated():
    OptimizerOptions(lip_warp=1.0).validate()
    assert OptimizerOptions().lip_warp == 0.0
    for bad in (-0.5, 1.5, float("inf")):
        with pytest.raises(InvalidInputError) as err:
            OptimizerOptions(lip_warp=bad).validate()
        assert "options.lip_warp" in str(err.value.violations)


def test_engine_returns_the_lip_warp_at_the_returned_latent(scene):
    from reenact.evaluation.methods import apply_lip_warps, render
    from reenact.optimize import losses
    from reenact.optimize.engine import _render_measure

    person, face = _person(scene)
    driver = [face, open_mouth(face, 5.0), face]
    runs = {}
    for gain in (0.0, 1.0):
        opt = ReenactmentOptimizer(person, OptimizerOptions(motion="relative", first_frame_steps=2, steps=2, window=2,
                                                            keypoint_sigma=0.0, latent_sigma=1.0, init="anchor",
                                                            lip_warp=gain))
        goals = {}
        accept = opt.accept
        opt.accept = lambda t, _a=accept, _g=goals: (lambda rg: (_g.__setitem__(t.index, rg[1]), rg)[1])(_a(t))
        out = []
        for i, d in enumerate(driver):
            out += opt.push(Target(i, d.astype(np.float32), 128, None))
        out += opt.push(Target(3, np.zeros((478, 3), np.float32), 128, None, has_face=False)) + opt.flush()
        assert [r.index for r in out] == [0, 1, 2, 3]
        runs[gain] = (opt, out, goals)
    assert all(r.lip_src is None and r.lip_dst is None for r in runs[0.0][1])
    opt, out, goals = runs[1.0]
    ws = torch.from_numpy(np.stack([r.ws for r in out[:3]]))
    with torch.no_grad():
        _, kp = _render_measure(person.G, opt.net, losses.face_affine(R), ws, False)
    for r, points in zip(out[:3], kp.numpy(), strict=True):
        src, dst = lipwarp.lip_shift(points, goals[r.index], 1.0)
        np.testing.assert_allclose(r.lip_src, src, atol=1e-3)
        np.testing.assert_allclose(r.lip_dst, dst, atol=1e-3)
    # the frame without a face repeats the previous latent, and with it the previous warp
    np.testing.assert_array_equal(out[3].lip_src, out[2].lip_src)
    np.testing.assert_array_equal(out[3].lip_dst, out[2].lip_dst)
    assert opt._goals == {}
    # the evaluation applies the warps to the rendered frames, and only where a frame has one
    frames = render(person.G, np.stack([r.ws for r in out]), "cpu")
    warped = apply_lip_warps(frames.copy(), out)
    assert any(not np.array_equal(a, b) for a, b in zip(warped, frames, strict=True))
    np.testing.assert_array_equal(apply_lip_warps(frames.copy(), runs[0.0][1]), frames)


# ------------------------------------------------------------------------------ the services' side (no grpc)


def test_optimizer_service_maps_lip_warp_and_returns_the_warp():
    from reenact.api.optimizer.v1 import optimizer_pb2 as pb
    from reenact.optimize.engine import FrameResult
    from reenact.wire import tensor_from_proto
    from services.optimizer.servicer import options_from_proto, result_to_proto

    assert options_from_proto(pb.OptimizerOptions()).lip_warp == 0.0
    assert options_from_proto(pb.OptimizerOptions(lip_warp=0.5)).lip_warp == 0.5
    for bad in (-0.1, 1.01, float("nan")):
        with pytest.raises(InvalidInputError) as err:
            options_from_proto(pb.OptimizerOptions(lip_warp=bad))
        assert [v.field for v in err.value.violations] == ["config.options.lip_warp"]
    base = {"index": 3, "ws": np.zeros((4, 8), np.float32), "alpha": np.zeros(2, np.float32),
            "delta": np.zeros((4, 2), np.float32), "losses": {}, "steps": 1, "keypoint_error": 0.1}
    assert not result_to_proto(FrameResult(**base)).HasField("lip_src")
    src = np.arange(80, dtype=np.float32).reshape(40, 2)
    msg = result_to_proto(FrameResult(**base, lip_src=src, lip_dst=src + 1))
    np.testing.assert_array_equal(tensor_from_proto(msg.lip_src, field="lip_src", shape=(40, 2)), src)
    np.testing.assert_array_equal(tensor_from_proto(msg.lip_dst, field="lip_dst", shape=(40, 2)), src + 1)


def test_gateway_pipeline_sends_lip_warp_and_reads_the_warp_back():
    from reenact.api.gateway.v1 import gateway_pb2
    from reenact.api.optimizer.v1 import optimizer_pb2 as pb
    from reenact.wire import tensor_to_proto
    from services.gateway.pipeline import ReenactPipeline, StreamSpec

    spec = StreamSpec(reenactment_id="re-1", person_id="amy", version=1, anchors=None, edits=[],
                      output=gateway_pb2.OUTPUT_KIND_FRAMES, encoding=0, paste_back=False, steps=2, window=2,
                      fps=25.0, resolution=32, num_ws=4, w_dim=16, crop_size=64, lip_warp=0.5)
    pipe = ReenactPipeline(peers=None, spec=spec, source=iter(()), writer=None, queue_frames=2, max_in_flight=4,
                           render_batch=1)
    assert next(pipe._optimizer_requests()).config.options.lip_warp == 0.5
    assert ReenactPipeline._lips(pb.OptimizeResponse(index=0)) is None
    src = np.ones((40, 2), np.float32)
    got = ReenactPipeline._lips(pb.OptimizeResponse(index=0, lip_src=tensor_to_proto(src, np.float32),
                                                    lip_dst=tensor_to_proto(src * 2, np.float32)))
    np.testing.assert_array_equal(got[0], src)
    np.testing.assert_array_equal(got[1], src * 2)
    with pytest.raises(InvalidInputError, match="lip_src"):  # a malformed warp from the optimizer is refused
        ReenactPipeline._lips(pb.OptimizeResponse(index=0, lip_src=tensor_to_proto(src[:39], np.float32),
                                                  lip_dst=tensor_to_proto(src, np.float32)))


def test_lip_warped_applies_a_stored_row_and_passes_a_missing_one(scene):
    from services.gateway.compose import lip_warped

    image, pts = scene
    src = pts[list(lipwarp.LIP_POINTS), :2].astype(np.float32) / 2  # stored at a generator resolution of 64
    dst = src + np.float32([0.0, 1.5])
    np.testing.assert_array_equal(lip_warped(image, src, dst, 64), lipwarp.warp_lips(image, src, dst, scale=2.0))
    nan = np.full((40, 2), np.nan, np.float32)
    assert lip_warped(image, None, None, 64) is image and lip_warped(image, nan, nan, 64) is image


def test_stored_reenactment_keeps_the_lip_warp_and_older_ones_have_none(tmp_path):
    from reenact.store import LocalStore
    from services.gateway.reenactments import ReenactmentWriter, open_reenactment

    store = LocalStore(tmp_path / "store")
    row = {"alpha": np.zeros(2, np.float32), "delta": np.zeros((4, 2), np.float32), "ws": np.zeros((4, 8), np.float32)}
    src = np.arange(80, dtype=np.float32).reshape(40, 2)
    ids = {}
    for lips in (True, False):
        rid = "re-" + ("a" if lips else "b") * 32
        w = ReenactmentWriter(store, "amy", rid, num_anchors=2, num_ws=4, w_dim=8, lips=lips)
        w.add(index=0, affine=np.eye(2, 3), has_face=True, lips=(src, src + 1), **row)
        w.add(index=1, affine=None, has_face=False, lips=None, **row)
        meta = w.commit({"fps": 25.0})
        assert ("lip_src.npy" in meta["files"]) == lips
        ids[lips] = rid
    with open_reenactment(store, "amy", ids[True]) as rec:
        np.testing.assert_array_equal(rec.lip_src[0], src)
        np.testing.assert_array_equal(rec.lip_dst[0], src + 1)
        assert np.isnan(rec.lip_src[1]).all() and np.isnan(rec.lip_dst[1]).all()
    with open_reenactment(store, "amy", ids[False]) as rec:
        assert rec.lip_src is None and rec.lip_dst is None and rec.ws.shape == (2, 4, 8)


def test_the_static_step_returns_the_lip_warp_too(scene):
    """The live path (reenact.optimize.graphed's static step; eager on the CPU) computes the warp the same way."""
    person, face = _person(scene)
    opt = ReenactmentOptimizer(person, OptimizerOptions(motion="relative", steps=2, window=1, keypoint_sigma=0.0,
                                                        init="anchor", lip_warp=1.0), static=True)
    out = []
    for i, d in enumerate([face, open_mouth(face, 5.0)]):
        out += opt.push(Target(i, d.astype(np.float32), 128, None))
    out += opt.flush()
    assert [r.index for r in out] == [0, 1]
    assert all(r.lip_src is not None and r.lip_src.shape == (40, 2) and np.isfinite(r.lip_dst).all() for r in out)


def test_the_live_reenactor_refuses_lip_warp_instead_of_dropping_it(scene):
    from reenact.optimize.live import LiveReenactor

    person, _ = _person(scene)
    with pytest.raises(ValueError, match="lip warp"):
        LiveReenactor(person, OptimizerOptions(lip_warp=1.0), max_batch=2)
    LiveReenactor(person, OptimizerOptions(), max_batch=2)  # off: fine


def test_the_offline_benchmark_warps_a_produce_folder(scene, tmp_path):
    """benchmarks/lip_warp_offline.py on a synthetic bundle and produce folder (fixture frames as the
    outputs): gain 0 leaves every frame as it was, gain 1 changes some and records itself in produce.json;
    a bundle of another length is refused."""
    import importlib.util
    import json
    import pathlib

    from reenact.evaluation import frames as frames_io

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "lip_warp_offline.py"
    spec = importlib.util.spec_from_file_location("lip_warp_offline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    image, pts = scene
    frames = np.stack([image] * 3)
    drv = np.stack([pts, open_mouth(pts, 8.0), open_mouth(pts, 3.0)]).astype(np.float32)
    for name, n in (("b3", 3), ("b2", 2)):
        np.savez(tmp_path / f"{name}.npz", drv_keypoints=drv[:n], drv_raw_points=drv[:n],
                 drv_has_face=np.ones(n, bool), drv_crops=frames[:n], scan_points=drv[:1],
                 scan_has_face=np.ones(1, bool), meta=json.dumps({"crop_size": 128}))
    src = tmp_path / "produced"
    src.mkdir()
    frames_io.save(src / "ours-relative.npz", frames, "npz", steps=np.arange(3))
    (src / "produce.json").write_text(json.dumps({"methods": {"ours-relative": {"options": {"keypoint_sigma": 0.0}}}}))
    still = mod.warp_folder(str(tmp_path / "b3.npz"), str(src), str(tmp_path / "g0"), 0.0)
    assert still["warped"] == 3 and still["mean_move_px"] == 0.0
    np.testing.assert_array_equal(frames_io.load(tmp_path / "g0" / "ours-relative.npz"), frames)
    moved = mod.warp_folder(str(tmp_path / "b3.npz"), str(src), str(tmp_path / "g1"), 1.0)
    assert moved["mean_move_px"] > 0.5
    out = frames_io.load(tmp_path / "g1" / "ours-relative.npz")
    assert out.shape == frames.shape and not np.array_equal(out, frames)
    with np.load(tmp_path / "g1" / "ours-relative.npz") as z:
        np.testing.assert_array_equal(z["steps"], np.arange(3))  # the per-frame arrays stay
    meta = json.loads((tmp_path / "g1" / "produce.json").read_text())
    assert meta["methods"]["ours-relative"]["lip_warp_offline"]["gain"] == 1.0
    with pytest.raises(SystemExit, match="3 frames"):
        mod.warp_folder(str(tmp_path / "b2.npz"), str(src), str(tmp_path / "g2"), 1.0)
