"""Relative-motion retargeting (reenact.optimize.retarget) and the engine's motion option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reenact.errors import InvalidInputError
from reenact.models.stylegan2 import Generator
from reenact.optimize import OptimizerOptions, PersonModel, ReenactmentOptimizer, Target
from reenact.optimize.keypoints import LIPS_INNER, LIPS_OUTER
from reenact.optimize.retarget import (
    LOWER_MOUTH,
    RIGID,
    Retargeter,
    apply,
    expression_features,
    set_mouth_ratio,
    similarity,
    soft_range,
)

LOWER_LIP = (14, 87, 178, 88, 95, 317, 402, 318, 324, 17, 84, 181, 91, 146, 314, 405, 321, 375)
LIPS = sorted(set(LIPS_OUTER + LIPS_INNER))


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """Exact 478 keypoints of the astronaut fixture in a 128 px aligned crop (float64)."""
    from reenact.face.align import ffhq_alignment, transform_points
    from reenact.fixtures import load_face, make_schedule, render_selfscan

    _, truth = render_selfscan(load_face("astronaut"), make_schedule(1), size=128)
    gt = np.asarray(truth["frames"][0]["landmarks_3d"], np.float64)
    return transform_points(gt, ffhq_alignment(gt, 128).source_to_crop).astype(np.float64)


def open_mouth(points: np.ndarray, px: float) -> np.ndarray:
    out = points.copy()
    out[list(LOWER_LIP), 1] += px
    return out


def rotate_yaw(points: np.ndarray, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    c = points.mean(0)
    return (points - c) @ rot.T + c


def other_person(face: np.ndarray) -> np.ndarray:
    """Another face shape: lips 1.3x wider, the whole face 1.2x larger and shifted."""
    p = face.copy()
    lips = p[LIPS]
    c = lips.mean(0)
    p[LIPS, 0] = c[0] + 1.3 * (lips[:, 0] - c[0])
    return 1.2 * (p - face.mean(0)) + face.mean(0) + np.array([4.0, -3.0, 0.0])


def test_identical_driver_and_person_gives_the_driver(face):
    anchors = np.stack([open_mouth(face, 6), face, rotate_yaw(face, 15)])
    rt = Retargeter(anchors)
    frames = [face, open_mouth(face, 4), rotate_yaw(open_mouth(face, 2), 8) * 1.05 + 3.0, face + [0, 2.0, 0]]
    for d in frames:
        np.testing.assert_allclose(rt(d), d, atol=1e-6)
    assert rt.reference_anchor == 1


def test_mouth_opening_moves_only_the_lips_scaled_to_the_persons_mouth(face):
    person = other_person(face)
    rt = Retargeter(person[None])
    first = rt(face)  # the first frame: the person's reference on the driver's head
    np.testing.assert_allclose(first, apply(similarity(person[list(RIGID)], face[list(RIGID)]), person), atol=1e-6)
    s = 1.0 / 1.2  # the person's face is 1.2x the driver's: on the driver's head it is scaled back
    v = 5.0
    target = rt(open_mouth(face, v))
    moved = target - first
    ratio = np.linalg.norm(person[61, :2] - person[291, :2]) / np.linalg.norm(face[61, :2] - face[291, :2])
    assert ratio == pytest.approx(1.56, rel=1e-3)  # 1.2 (face) x 1.3 (lips, in x)
    others = np.setdiff1d(np.arange(478), LOWER_LIP)
    np.testing.assert_allclose(moved[others], 0.0, atol=1e-6)
    # the lips move by the person/driver mouth ratio, measured at the size the person is drawn (x s)
    np.testing.assert_allclose(moved[list(LOWER_LIP)], np.tile([0.0, s * ratio * v, 0.0], (len(LOWER_LIP), 1)),
                               atol=1e-6)
    relative = Retargeter(person[None], pose="relative")
    np.testing.assert_allclose(relative(face), person, atol=1e-6)
    np.testing.assert_allclose(relative(open_mouth(face, v)) - person, moved / s, atol=1e-6)


def test_head_translation_scale_and_rotation_move_the_person_the_same_way(face):
    offset = np.array([6.0, -4.0, 0.0])
    person = face + offset
    person[LIPS, 0] = person[LIPS, 0].mean() + 1.3 * (person[LIPS, 0] - person[LIPS, 0].mean())  # same size, other lips
    c, v = face.mean(0), np.array([3.0, 2.0, 0.0])
    for pose in ("driver", "relative"):
        rt = Retargeter(person[None], pose=pose)
        first = rt(face)
        # "driver": the person's face on the driver's head (its place); "relative": the person's own place
        np.testing.assert_allclose(first, person - offset if pose == "driver" else person, atol=1e-6)
        target = rt(1.1 * (face - c) + c + v)
        centre = c if pose == "driver" else c + offset
        np.testing.assert_allclose(target, 1.1 * (first - centre) + centre + v, atol=1e-6)
        # a yaw of the driver's head: the same rotation of the person's face
        turned = rt(rotate_yaw(face, 12))
        sim = similarity(first[list(RIGID)], turned[list(RIGID)])
        np.testing.assert_allclose(apply(sim, first), turned, atol=1e-6)
        assert sim[0] == pytest.approx(1.0, abs=1e-9)
        assert np.degrees(np.arccos((np.trace(sim[1]) - 1) / 2)) == pytest.approx(12.0, abs=1e-6)


def test_first_face_frame_sets_the_references_and_reset_forgets_them(face):
    person = other_person(face)
    anchors = np.stack([person, open_mouth(person, 10), rotate_yaw(person, 20)])
    rt = Retargeter(anchors)
    assert rt(None) is None and rt.driver_reference is None  # no face yet: no reference
    rt(open_mouth(face, 8))  # a driver starting with an open mouth: the person's open-mouth anchor
    assert rt.reference_anchor == 1
    np.testing.assert_allclose(rt.person_reference, anchors[1])
    np.testing.assert_allclose(rt.driver_reference, open_mouth(face, 8))
    rt(rotate_yaw(face, 20))  # later frames never change the references
    assert rt.reference_anchor == 1
    assert rt(None) is None
    rt.reset()
    assert rt.driver_reference is None
    rt(rotate_yaw(face, 20))
    assert rt.reference_anchor == 2
    rt.reset()
    rt(face)
    assert rt.reference_anchor == 0
    assert Retargeter(anchors, reference="neutral").reference == "neutral"
    with pytest.raises(ValueError):
        Retargeter(anchors, reference="nope")
    with pytest.raises(ValueError):
        Retargeter(anchors[:, :10])
    with pytest.raises(ValueError):
        rt(face[:10])


def test_soft_range_is_monotone_inside_the_scan_range_with_slope_one_over_k():
    f0, lo, hi = 0.2, 0.15, 0.4
    f = np.linspace(-0.5, 2.0, 2001)
    for k in (0.5, 1.0, 2.0, 5.0):
        g = soft_range(f, f0, lo, hi, k)
        assert np.all(np.diff(g) >= 0) and np.all(np.diff(g)[(f[1:] > lo) & (f[1:] < hi)] > 0)
        assert g.min() > lo - 1e-12 and g.max() < hi + 1e-12
        assert soft_range(f0, f0, lo, hi, k) == pytest.approx(f0)
        eps = 1e-6
        assert (soft_range(f0 + eps, f0, lo, hi, k) - f0) / eps == pytest.approx(1.0 / k, rel=1e-4)
        assert (f0 - soft_range(f0 - eps, f0, lo, hi, k)) / eps == pytest.approx(1.0 / k, rel=1e-4)
    # a larger k compresses more: the same opening above f0 maps lower
    assert soft_range(0.3, f0, lo, hi, 3.0) < soft_range(0.3, f0, lo, hi, 1.0) < 0.3
    # the reference at the bottom of the range: nothing below it
    assert soft_range(0.0, lo, lo, hi, 2.0) == pytest.approx(lo)


def test_set_mouth_ratio_moves_only_the_lower_mouth_along_the_gap(face):
    before = expression_features(face)[0]
    for ratio in (0.05, before, 0.3):
        out = set_mouth_ratio(face, ratio)
        assert expression_features(out)[0] == pytest.approx(ratio, abs=1e-9)
        moved = np.abs(out - face).max(-1) > 1e-9
        assert set(np.flatnonzero(moved)) <= set(LOWER_MOUTH)
        # one shift for all of them, along 13 -> 14, x and y only
        shift = out[list(LOWER_MOUTH)] - face[list(LOWER_MOUTH)]
        np.testing.assert_allclose(shift, np.tile(shift[0], (len(LOWER_MOUTH), 1)), atol=1e-9)
        assert shift[0, 2] == 0.0
        gap = face[14, :2] - face[13, :2]
        assert abs(shift[0, 0] * gap[1] - shift[0, 1] * gap[0]) < 1e-9


def test_opening_range_keeps_the_targets_mouth_inside_the_persons_scan_range(face):
    person = other_person(face)
    anchors = np.stack([person, open_mouth(person, 4.0)])  # the person's scan: closed .. slightly open
    lo, hi = (float(v) for v in expression_features(anchors)[:, 0][[0, 1]])
    free, ranged = Retargeter(anchors), Retargeter(anchors, opening_range=2.0)
    assert ranged.mouth_range == pytest.approx((lo, hi))
    openings = [0.0, 2.0, 6.0, 12.0, 25.0, 6.0, 0.0]
    got_free = np.array([expression_features(free(open_mouth(face, v)))[0] for v in openings])
    got = np.array([expression_features(ranged(open_mouth(face, v)))[0] for v in openings])
    assert got[0] == pytest.approx(got_free[0], abs=1e-9) == pytest.approx(lo, abs=1e-9)
    assert got_free.max() > 2 * hi        # the free transfer asks for far more than the scan shows
    assert got.max() < hi and got[4] > got[3] > got[2] > got[1] > got[0]  # kept in range and in order
    assert got[5] == pytest.approx(got[2]) and got[6] == pytest.approx(got[0], abs=1e-9)
    # a mouth that opens while the face smiles: the corners keep the driver's motion
    smile = open_mouth(face, 20.0)
    smile[[61, 291], 0] += [-3.0, 3.0]
    a, b = free(smile), ranged(smile)
    np.testing.assert_allclose(b[[61, 291, 13, 0]], a[[61, 291, 13, 0]], atol=1e-9)
    with pytest.raises(ValueError):
        Retargeter(anchors, opening_range=-1.0)
    with pytest.raises(ValueError):
        Retargeter(anchors, opening_range=float("nan"))


# ------------------------------------------------------------------------------------------------ engine

R = 32


def test_engine_validates_and_applies_motion(face):
    with pytest.raises(InvalidInputError) as err:
        OptimizerOptions(motion="sideways").validate()
    assert "options.motion" in str(err.value.violations)
    assert OptimizerOptions().motion == "absolute"
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=R, channel_base=256, channel_max=16, num_mapping_layers=1)
    pts = torch.from_numpy(face * (R / 128)).float().expand(3, -1, -1).clone()
    pts[1] = torch.from_numpy(open_mouth(face, 10) * (R / 128)).float()
    pts[2, :, 0] += 2.0
    person = PersonModel.from_parts("p", 1, G, torch.randn(3, 16), pts)
    driver = other_person(face)  # another face; frame 1 opens its mouth
    frames = [driver, open_mouth(driver, 3.0)]
    seen = {}
    for motion in ("absolute", "relative"):
        opt = ReenactmentOptimizer(person, OptimizerOptions(motion=motion, first_frame_steps=1, steps=1, window=2,
                                                            keypoint_sigma=0.0, init="anchor"))
        assert (opt.retargeter is not None) == (motion == "relative")
        batch = opt._batch
        got = []
        opt._batch = lambda fs, _b=batch, _g=got: (_g.extend(f.smoothed for f in fs), _b(fs))[1]
        out = []
        for i, d in enumerate(frames):
            out += opt.push(Target(i, d.astype(np.float32), 128, None))
        out += opt.push(Target(2, np.zeros((478, 3), np.float32), 128, None, has_face=False)) + opt.flush()
        assert [r.index for r in out] == [0, 1, 2] and out[2].steps == 0
        seen[motion] = np.stack(got)
    np.testing.assert_allclose(seen["absolute"], np.stack(frames).astype(np.float32) * (R / 128), atol=1e-4)
    rel = seen["relative"]
    ref = pts[0].numpy().astype(np.float64)  # the person's own reference anchor, on the driver's head
    drv = driver * (R / 128)
    on_head = apply(similarity(ref[list(RIGID)], drv[list(RIGID)]), ref)
    np.testing.assert_allclose(rel[0], on_head, atol=1e-4)
    assert np.abs(rel[0] - seen["absolute"][0]).max() > 0.1  # not the driver's own shape
    moved = rel[1] - rel[0]
    assert np.abs(np.delete(moved, list(LOWER_LIP), axis=0)).max() < 1e-4
    assert moved[14, 1] > 0.5 * 3.0 * R / 128


def test_engine_opening_range_needs_relative_motion_and_reaches_the_retargeter(face):
    with pytest.raises(InvalidInputError) as err:
        OptimizerOptions(opening_range=2.0).validate()
    assert "options.opening_range" in str(err.value.violations) and "relative" in str(err.value.violations)
    with pytest.raises(InvalidInputError) as err:
        OptimizerOptions(motion="relative", opening_range=11.0).validate()
    assert "options.opening_range" in str(err.value.violations)
    OptimizerOptions(motion="relative", opening_range=2.0).validate()
    assert OptimizerOptions().opening_range == 0.0
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=R, channel_base=256, channel_max=16, num_mapping_layers=1)
    pts = torch.from_numpy(np.stack([face, open_mouth(face, 4.0)]) * (R / 128)).float()
    person = PersonModel.from_parts("p", 1, G, torch.randn(2, 16), pts)
    hi = float(expression_features(pts.double().numpy())[1, 0])
    driver = other_person(face)
    for k, inside in ((0.0, False), (2.0, True)):
        opt = ReenactmentOptimizer(person, OptimizerOptions(motion="relative", opening_range=k, first_frame_steps=1,
                                                            steps=1, window=2, keypoint_sigma=0.0, init="anchor"))
        assert opt.retargeter.opening_range == k
        _, goal = opt.accept(Target(0, driver.astype(np.float32), 128, None))
        _, goal = opt.accept(Target(1, open_mouth(driver, 30.0).astype(np.float32), 128, None))
        assert (expression_features(goal)[0] < hi) == inside


def test_optimizer_service_maps_the_motion_option():
    from reenact.api.optimizer.v1 import optimizer_pb2 as pb
    from services.optimizer.servicer import options_from_proto

    assert options_from_proto(pb.OptimizerOptions()).motion == "absolute"
    assert options_from_proto(pb.OptimizerOptions(motion="relative")).motion == "relative"
    with pytest.raises(InvalidInputError) as err:
        options_from_proto(pb.OptimizerOptions(motion="sideways"))
    assert "config.options.motion" in str(err.value)


def test_opening_ceiling_benchmark_reports_the_targets_range_and_correlations(face, tmp_path, capsys):
    """benchmarks/opening_ceiling.py on a synthetic bundle: without opening_range a wide-open driver's target
    leaves the scan's range and clipping costs correlation; with it the target stays inside."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "opening_ceiling.py"
    spec = importlib.util.spec_from_file_location("opening_ceiling", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    person = other_person(face)
    scan = np.stack([person, open_mouth(person, 2.0), open_mouth(person, 5.0)])
    openings = [0.0, 1.0, 3.0, 8.0, 16.0, 24.0, 10.0, 2.0, 0.0, 5.0]
    driver = np.stack([open_mouth(face, v) for v in openings])
    np.savez(tmp_path / "b.npz", scan_points=scan, scan_has_face=np.ones(3, bool), drv_keypoints=driver,
             drv_raw_points=driver, drv_has_face=np.ones(len(openings), bool))
    off, on = mod.ceiling(str(tmp_path / "b.npz"), [0.0, 3.0])
    assert off["outside"] > 0.2 and off["target"][1] > off["scan"][1]
    assert off["r_target"] > 0.99 and off["r_in_range"] < off["r_target"] - 0.02
    assert on["outside"] == 0.0 and on["r_in_range"] > off["r_in_range"]
    assert mod.main([str(tmp_path / "b.npz"), "--k", "0", "2"]) == 0
    assert "| 2 |" in capsys.readouterr().out


def test_expression_floor_benchmark_separates_the_targets_floor_from_the_scans(face, tmp_path, capsys):
    """benchmarks/expression_floor.py on a synthetic bundle. A driver that IS the person (its frames are
    scan frames) has a perfect target and a perfect best scan frame (error 0). Another person's driver
    keeps an error above 0 in both rows: lip shape counts as error."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "expression_floor.py"
    spec = importlib.util.spec_from_file_location("expression_floor", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    scan = np.stack([face, open_mouth(face, 2.0), open_mouth(face, 5.0), open_mouth(face, 9.0)])
    for name, drv in (("self", scan[[0, 2, 1, 3, 0]]), ("other", np.stack([open_mouth(other_person(face), v)
                                                                           for v in (0.0, 3.0, 6.0, 1.0, 0.0)]))):
        np.savez(tmp_path / f"{name}.npz", scan_points=scan, scan_has_face=np.ones(4, bool), drv_keypoints=drv,
                 drv_raw_points=drv, drv_has_face=np.ones(5, bool))
    same = mod.floors(str(tmp_path / "self.npz"), [0.0])
    assert same["target"][0]["expression"] < 1e-9 and same["best_scan"]["expression"] < 1e-9
    assert same["best_scan_vs_target"]["lips"] < 1e-9
    other = mod.floors(str(tmp_path / "other.npz"), [0.0, 2.0])
    assert [(r["reference"], r["k"]) for r in other["target"]] == [("matched", 0.0), ("matched", 2.0),
                                                                   ("neutral", 0.0), ("neutral", 2.0)]
    assert other["best_scan"]["lips"] > 0.01 and other["target"][0]["lips"] > 0.01
    assert mod.main([str(tmp_path / "other.npz"), "--k", "0"]) == 0
    assert "best scan frame per driving frame" in capsys.readouterr().out
    np.savez(tmp_path / "slim.npz", drv_keypoints=scan, drv_raw_points=scan, drv_has_face=np.ones(4, bool))
    with pytest.raises(SystemExit, match="no self-scan"):
        mod.main([str(tmp_path / "slim.npz")])
