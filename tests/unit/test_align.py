"""FFHQ alignment geometry, affine conventions and the warp (no MediaPipe)."""

from __future__ import annotations

import numpy as np
import pytest

from reenact.face import align
from reenact.face.align import Alignment, ffhq_alignment, transform_points, warp_crop


def synthetic_points(eye_left=(40.0, 50.0), eye_right=(60.0, 50.0), mouth=((42.0, 80.0), (58.0, 80.0))):
    """478 points where only the FFHQ landmarks matter: all eye-contour points on the eye centre."""
    pts = np.zeros((478, 3), np.float32)
    pts[list(align.SUBJECT_RIGHT_EYE), :2] = eye_left  # image left
    pts[list(align.SUBJECT_LEFT_EYE), :2] = eye_right
    pts[align.MOUTH_CORNERS[0], :2] = mouth[0]
    pts[align.MOUTH_CORNERS[1], :2] = mouth[1]
    return pts


def test_hand_computed_case():
    # eye_avg (50, 50); eye_to_eye (20, 0); mouth_avg (50, 80); eye_to_mouth (0, 30)
    # x = (20, 0) - flipud(0, 30) * (-1, 1) = (20, 0) - (-30, 0) = (50, 0) -> unit (1, 0)
    #   * max(2 * 20, 1.8 * 30 = 54) = (54, 0);  y = flipud(54, 0) * (-1, 1) = (0, 54)
    # c = (50, 50) + 0.1 * (0, 30) = (50, 53)
    a = ffhq_alignment(synthetic_points(), crop_size=108)
    np.testing.assert_allclose(a.center, [50, 53])
    np.testing.assert_allclose(a.x, [54, 0])
    np.testing.assert_allclose(a.y, [0, 54])
    np.testing.assert_allclose(a.quad, [[-4, -1], [-4, 107], [104, 107], [104, -1]])
    assert a.scale == pytest.approx(1.0)  # 108 source pixels over 108 crop pixels
    # source -> crop is a pure translation here
    np.testing.assert_allclose(a.source_to_crop, [[1, 0, 4], [0, 1, 1]], atol=1e-12)


def test_wide_mouth_case_uses_eye_to_mouth_length():
    # eye_to_mouth (0, 30) dominates when eyes are close: |x| = 1.8 * 30 = 54 only if 2*|e2e| < 54
    a = ffhq_alignment(synthetic_points(eye_left=(45.0, 50.0), eye_right=(55.0, 50.0)))
    assert np.hypot(*a.x) == pytest.approx(54.0)
    # tilted face: rotating all landmarks rotates x and y with them
    theta = np.radians(30)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = synthetic_points()
    pts[:, :2] = pts[:, :2] @ rot.T
    b = ffhq_alignment(pts)
    ref = ffhq_alignment(synthetic_points())
    np.testing.assert_allclose(b.x, rot @ ref.x, atol=1e-4)
    np.testing.assert_allclose(b.center, rot @ ref.center, atol=1e-4)


def test_quad_corners_map_to_crop_corners_and_round_trip():
    rng = np.random.default_rng(0)
    a = Alignment(np.array([123.4, 87.6]), np.array([40.0, 12.0]), np.array([-12.0, 40.0]), 64)
    corners = transform_points(a.quad, a.source_to_crop)
    np.testing.assert_allclose(corners, [[0, 0], [0, 64], [64, 64], [64, 0]], atol=1e-4)
    pts = rng.uniform(0, 300, (50, 3))
    back = transform_points(transform_points(pts, a.source_to_crop), a.crop_to_source)
    np.testing.assert_allclose(back, pts, atol=1e-3)
    # depth is scaled like x, y
    scale = 64 / (2 * np.hypot(40, 12))
    np.testing.assert_allclose(transform_points(pts, a.source_to_crop)[:, 2], pts[:, 2] * scale, rtol=1e-5)
    np.testing.assert_allclose(align.compose_affine(a.source_to_crop, a.crop_to_source),
                               [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_identity_alignment_reproduces_the_image_exactly():
    """Crop covering exactly the image at its own size: pixel centres must land on pixel centres."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = Alignment(np.array([16.0, 16.0]), np.array([16.0, 0.0]), np.array([0.0, 16.0]), 32)
    np.testing.assert_array_equal(warp_crop(img, a), img)
    # a crop of the 16x16 block starting at (8, 4), at 16 px: an exact copy of that block
    b = Alignment(np.array([16.0, 12.0]), np.array([8.0, 0.0]), np.array([0.0, 8.0]), 16)
    np.testing.assert_array_equal(warp_crop(img, b), img[4:20, 8:24])


def blob_image(u: float, v: float, size=(120, 160), sigma=2.0) -> np.ndarray:
    """A Gaussian dot centred at continuous (u, v) (pixel centres at +0.5)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    g = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * sigma**2))
    return np.repeat((g * 250).round().astype(np.uint8)[..., None], 3, axis=2)


def centroid(img: np.ndarray) -> np.ndarray:
    w = img[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]] + 0.5
    return np.array([(xx * w).sum() / w.sum(), (yy * w).sum() / w.sum()])


@pytest.mark.parametrize("angle,half", [(0.0, 20.0), (25.0, 20.0), (-40.0, 35.0), (10.0, 12.5)])
def test_point_mapped_to_crop_lands_where_the_warp_shows_it(angle, half):
    u, v = 81.3, 57.8
    img = blob_image(u, v)
    t = np.radians(angle)
    x = half * np.array([np.cos(t), np.sin(t)])
    y = np.array([-x[1], x[0]])
    a = Alignment(np.array([79.1, 60.4]), x, y, 64)  # scale 0.4..1.1: magnifies and shrinks
    crop = warp_crop(img, a, border="constant")
    expected = transform_points(np.array([[u, v]]), a.source_to_crop)[0]
    np.testing.assert_allclose(centroid(crop), expected, atol=0.05)


def test_region_warp_equals_full_frame_warp():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    a = Alignment(np.array([150.3, 90.7]), np.array([30.0, 8.0]), np.array([-8.0, 30.0]), 48)
    region = align.cut_region(img, a)
    assert region.pixels.shape[0] < 200 and region.pixels.shape[1] < 300
    full = warp_crop(img, a)
    part = warp_crop(region.pixels, a, source_to_image=region.source_to_region)
    assert np.abs(full.astype(int) - part.astype(int)).max() <= 1
    # near the frame edge the region is clipped there, so the reflected border is the same
    b = Alignment(np.array([10.0, 15.0]), np.array([30.0, 0.0]), np.array([0.0, 30.0]), 48)
    rb = align.cut_region(img, b)
    np.testing.assert_array_equal(warp_crop(img, b), warp_crop(rb.pixels, b, source_to_image=rb.source_to_region))


def test_borders():
    img = np.full((40, 40, 3), 200, np.uint8)
    a = Alignment(np.array([5.0, 5.0]), np.array([20.0, 0.0]), np.array([0.0, 20.0]), 40)
    assert warp_crop(img, a, border="reflect").min() == 200
    constant = warp_crop(img, a, border="constant")
    assert constant[0, 0].max() == 0 and constant[-1, -1].min() == 200


def test_antialias_downscales_before_a_strong_shrink():
    assert align.antialias_factor(1.9) == 1 and align.antialias_factor(2.0) == 2 and align.antialias_factor(5.7) == 5
    checker = ((np.indices((400, 400)).sum(0) % 2) * 255).astype(np.uint8)
    img = np.repeat(checker[..., None], 3, axis=2)
    a = Alignment(np.array([200.0, 200.0]), np.array([160.0, 0.0]), np.array([0.0, 160.0]), 50)  # scale 6.4
    smooth = warp_crop(img, a)
    assert abs(smooth.mean() - 127.5) < 3 and smooth.std() < 5
    # the region keeps the frame downscaled too, and gives the same crop
    region = align.cut_region(img, a)
    assert region.pixels.shape[0] <= 400 // 6 + 1
    part = warp_crop(region.pixels, a, source_to_image=region.source_to_region)
    assert abs(part.mean() - 127.5) < 3 and part.std() < 5


def test_affine_to_cv_shifts_by_half_pixels():
    m = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # continuous: scale by 2 about the corner
    cv = align.affine_to_cv(m)
    # index 0 (centre 0.5) -> continuous 1.0 -> index 0.5
    np.testing.assert_allclose(cv @ np.array([0.0, 0.0, 1.0]), [0.5, 0.5])
    np.testing.assert_allclose(align.invert_affine(align.invert_affine(m)), m)
