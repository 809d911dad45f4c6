"""Stage 'align': decode the self-scan, track and align every frame, measure coverage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reenact.errors import CancelledError, InvalidInputError, PreconditionError

# Coverage a self-scan must show (degrees as MediaPipe's points read them: a real 30 degree turn reads
# about 15-20 degrees, see reenact.face.attributes; landmark ratios).
YAW_NEEDED = 10.0
PITCH_NEEDED = 8.0
MOUTH_OPEN_NEEDED = 0.25
BLINK_NEEDED = 0.6  # eye opening below this fraction of the scan's median


@dataclass
class AlignedScan:
    """Aligned frames of a scan. crops [T, R, R, 3] uint8; points [T, 478, 3] in crop pixels."""

    crops: np.ndarray
    points: np.ndarray
    has_face: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    mouth_open: np.ndarray
    eye_open: np.ndarray
    frames_total: int
    fps: float

    def save(self, path) -> None:
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in vars(self).items()})

    @classmethod
    def load(cls, path) -> AlignedScan:
        with np.load(path) as z:
            kw = {k: z[k] for k in z.files}
        kw["frames_total"], kw["fps"] = int(kw["frames_total"]), float(kw["fps"])
        return cls(**kw)


def align_scan(video_path: str, resolution: int, *, should_stop: Callable[[], bool],
               progress: Callable[[int, int], None], max_frames: int = 3000) -> AlignedScan:
    """Decode, track (MediaPipe, smoothed) and align every frame at `resolution`."""
    from reenact.face.attributes import face_attributes
    from reenact.face.tracker import FaceTracker
    from reenact.video import VideoError, probe_video, read_frames

    try:
        info = probe_video(video_path)
        frames_iter = read_frames(video_path)
    except VideoError as exc:
        raise InvalidInputError.for_field("scan", str(exc)) from exc
    total = min(int(info.get("frames") or 0), max_frames) or max_frames
    results = []
    with FaceTracker(crop_size=resolution, sigma=2.0, return_crop=True, max_faces=2) as tracker:
        try:
            for i, rgb in enumerate(frames_iter):
                if i >= max_frames:
                    break
                if should_stop():
                    raise CancelledError("enrollment cancelled")
                results += tracker.push(i, rgb)
                if i % 10 == 0:
                    progress(i, total)
        except VideoError as exc:
            raise InvalidInputError.for_field("scan", str(exc)) from exc
        results += tracker.flush()
    if not results:
        raise InvalidInputError.for_field("scan", "the video has no frames")
    t = len(results)
    r = resolution
    crops = np.zeros((t, r, r, 3), np.uint8)
    points = np.zeros((t, 478, 3), np.float32)
    has_face = np.zeros(t, bool)
    attrs = {k: np.zeros(t) for k in ("yaw", "pitch", "mouth_open", "eye_open")}
    for i, res in enumerate(results):
        if res.alignment is None:
            continue
        has_face[i] = True
        crops[i] = res.crop
        points[i] = res.crop_points
        a = face_attributes(res.raw_source_points)  # unsmoothed: a blink lasts a few frames
        attrs["yaw"][i], attrs["pitch"][i] = a["yaw"], a["pitch"]
        attrs["mouth_open"][i] = a["mouth_open"]
        attrs["eye_open"][i] = 0.5 * (a["eye_open_left"] + a["eye_open_right"])
    return AlignedScan(crops, points, has_face, attrs["yaw"], attrs["pitch"], attrs["mouth_open"],
                       attrs["eye_open"], t, float(info.get("fps") or 30.0))


def coverage_report(scan: AlignedScan, usable: np.ndarray) -> dict:
    """What the scan shows and what it lacks (names of missing poses/expressions)."""
    f = scan.has_face
    rep = {"frames_total": int(scan.frames_total), "frames_with_face": int(f.sum()),
           "frames_usable": int(usable.sum()), "missing": []}
    if not f.any():
        rep["missing"] = ["face"]
        return rep
    yaw, pitch, mouth, eye = scan.yaw[f], scan.pitch[f], scan.mouth_open[f], scan.eye_open[f]
    rep.update(yaw_min_deg=float(yaw.min()), yaw_max_deg=float(yaw.max()), pitch_min_deg=float(pitch.min()),
               pitch_max_deg=float(pitch.max()), mouth_open_max=float(mouth.max()),
               eye_open_min=float(eye.min()))
    checks = [("yaw_left", yaw.max() >= YAW_NEEDED), ("yaw_right", yaw.min() <= -YAW_NEEDED),
              ("pitch_up", pitch.max() >= PITCH_NEEDED), ("pitch_down", pitch.min() <= -PITCH_NEEDED),
              ("mouth_open", mouth.max() >= MOUTH_OPEN_NEEDED),
              ("blink", eye.min() <= BLINK_NEEDED * float(np.median(eye)))]
    rep["missing"] = [name for name, ok in checks if not ok]
    return rep


def check_usable(report: dict, min_frames: int, max_missing: int = 3) -> None:
    """Reject scans that cannot make a person: too short, no face, too little variation."""
    if report["frames_with_face"] == 0:
        raise PreconditionError("no face found in the self-scan", reason="NO_FACE")
    if report["frames_usable"] < min_frames:
        raise PreconditionError(
            f"only {report['frames_usable']} usable frames (need >= {min_frames}): record a longer scan",
            reason="SCAN_TOO_SHORT")
    if len(report["missing"]) > max_missing:
        raise PreconditionError(
            "too little variation in the self-scan; missing: " + ", ".join(report["missing"]),
            reason="SCAN_TOO_LITTLE_VARIATION")
