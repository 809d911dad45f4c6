"""Face tracking for a video: MediaPipe mesh per frame, one face followed, FFHQ alignment smoothed over time.

Per pushed frame: all faces are found (MediaPipe, tracking mode); the followed face is the one whose
centre is closest to the face followed in the last frame with a face (the largest face when none was
followed yet); its FFHQ alignment (c, x, y) and its 478 points are smoothed with a temporal Gaussian
(reenact.face.smooth; frames without a face are skipped), and the crop is warped from the frame with
the smoothed alignment. Smoothing needs `radius = ceil(3 sigma)` frames of look-ahead, so `push`
returns the results that became final (in frame order) and `flush` returns the rest at the end.
Only the region of each frame around the face is kept while a frame waits (see `align.cut_region`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from reenact.errors import InvalidInputError
from reenact.face.align import Alignment, Region, cut_region, ffhq_alignment, transform_points, warp_crop
from reenact.face.mesh import NUM_POINTS, FaceMesh, MeshFace
from reenact.face.smooth import StreamingSmoother

MIN_SIDE = 16
MAX_SIDE = 8192
STATUSES = ("ok", "no_face", "multiple_faces")


class InvalidFrameError(InvalidInputError):
    """A frame that cannot be tracked (wrong type/shape/size, or out-of-order index)."""


@dataclass(frozen=True)
class TrackResult:
    """Result for one frame.

    status: 'ok' (one face), 'no_face', or 'multiple_faces' (the followed face is still reported).
    presence: the landmark network's face-presence score of the followed face in [0, 1] (0 without one).
    alignment: smoothed FFHQ alignment (None without a face).
    source_points / crop_points: smoothed float32 [478, 3] in source / crop pixels (z scaled like x, y).
    crop: RGB uint8 [crop_size, crop_size, 3] warped with the smoothed alignment (None when not asked).
    raw_alignment / raw_source_points: the same before temporal smoothing (this frame alone).
    """

    index: int
    status: str
    num_faces: int
    presence: float = 0.0
    alignment: Alignment | None = None
    source_points: np.ndarray | None = None
    crop_points: np.ndarray | None = None
    crop: np.ndarray | None = None
    raw_alignment: Alignment | None = None
    raw_source_points: np.ndarray | None = None


@dataclass(frozen=True)
class _Pending:
    """What a frame leaves behind while it waits for its look-ahead."""

    index: int
    num_faces: int
    face: MeshFace | None
    raw_alignment: Alignment | None
    region: Region | None


def validate_frame(rgb, field: str = "frame.image") -> np.ndarray:
    """RGB uint8 [H, W, 3] with 16 <= H, W <= 8192, else InvalidFrameError naming the field."""
    if not isinstance(rgb, np.ndarray):
        raise InvalidFrameError.for_field(field, f"expected a numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise InvalidFrameError.for_field(field, f"expected uint8 pixels, got {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidFrameError.for_field(field, f"expected RGB of shape [H, W, 3], got {list(rgb.shape)}")
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InvalidFrameError.for_field(field, f"frame {w}x{h} is too small (minimum side {MIN_SIDE})")
    if max(h, w) > MAX_SIDE:
        raise InvalidFrameError.for_field(field, f"frame {w}x{h} is too large (maximum side {MAX_SIDE})")
    return rgb


def select_face(faces: list[MeshFace], previous_center: np.ndarray | None) -> int:
    """Index of the face to follow: nearest to the previous centre, else the largest."""
    if previous_center is None:
        return int(np.argmax([f.size for f in faces]))
    return int(np.argmin([np.hypot(*(f.center - previous_center)) for f in faces]))


class FaceTracker:
    """Track and align one face through a video. Use as a context manager (closes MediaPipe).

    crop_size: side of the aligned crops in pixels. sigma: temporal Gaussian of the alignment in frames
    (0 = none). points_sigma: the same for the 478 points (default: sigma; smaller keeps blinks and
    fast mouth motion sharper). return_crop: warp crops. max_faces: faces MediaPipe looks for.
    detector / detect_every: see FaceMesh. Defaults: the full-range detector (finds faces down to about
    1/10 of the frame, where MediaPipe's short-range default misses a webcam-framed face at 1280x720),
    run on every 5th frame while a face is tracked (on every frame while none is), which makes it
    cheaper than the short-range detector on every frame; a second face is reported within 5 frames.
    mesh: an open FaceMesh in tracking mode to use (not closed by the tracker); made on first use if None.
    """

    def __init__(self, crop_size: int = 256, sigma: float = 2.0, return_crop: bool = True, max_faces: int = 4,
                 *, points_sigma: float | None = None, mesh: FaceMesh | None = None, border: str = "reflect",
                 detector: str = "full", detect_every: int = 5, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5) -> None:
        if crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {crop_size}")
        self.crop_size = int(crop_size)
        self.sigma = float(sigma)
        self.points_sigma = self.sigma if points_sigma is None else float(points_sigma)
        self.return_crop = bool(return_crop)
        self.max_faces = int(max_faces)
        self.border = border
        self._mesh_args = {"max_num_faces": self.max_faces, "min_detection_confidence": min_detection_confidence,
                           "min_tracking_confidence": min_tracking_confidence, "detector": detector,
                           "detect_every": detect_every}
        self._mesh = mesh
        self._owns_mesh = mesh is None
        self._start_sequence()

    def _start_sequence(self) -> None:
        self._align_smoother = StreamingSmoother(self.sigma)
        self._points_smoother = StreamingSmoother(self.points_sigma)
        self._smoothed_alignment: dict[int, tuple[_Pending, np.ndarray | None]] = {}
        self._smoothed_points: dict[int, np.ndarray | None] = {}
        self._pushed = 0
        self._emitted = 0
        self._last_index: int | None = None
        self._previous_center: np.ndarray | None = None

    @property
    def latency(self) -> int:
        """Frames of look-ahead before a result is final."""
        return max(self._align_smoother.radius, self._points_smoother.radius)

    def push(self, index: int, rgb: np.ndarray) -> list[TrackResult]:
        """Add frame `index` (strictly increasing); returns the results that became final."""
        self._check_index(index)
        validate_frame(rgb, field=f"frame[{index}].image")
        faces = self._open_mesh().process(rgb)
        self._last_index = int(index)
        face, raw, region = None, None, None
        if faces:
            face = faces[select_face(faces, self._previous_center)]
            self._previous_center = face.center
            raw = ffhq_alignment(face.points, self.crop_size)
            region = cut_region(rgb, raw) if self.return_crop else None
        pending = _Pending(int(index), len(faces), face, raw, region)
        position = self._pushed
        self._pushed += 1
        alignment_vec = None if raw is None else raw.as_vector()
        for item, value in self._align_smoother.push(alignment_vec, payload=(position, pending)):
            self._smoothed_alignment[item[0]] = (item[1], value)
        points = None if face is None else face.points.astype(np.float64).ravel()
        for pos, value in self._points_smoother.push(points, payload=position):
            self._smoothed_points[pos] = value
        return self._collect()

    def flush(self) -> list[TrackResult]:
        """Finish the video: return every remaining result. The tracker can then start a new video."""
        for item, value in self._align_smoother.flush():
            self._smoothed_alignment[item[0]] = (item[1], value)
        for pos, value in self._points_smoother.flush():
            self._smoothed_points[pos] = value
        out = self._collect()
        if self._mesh is not None and self._owns_mesh:
            self._mesh.reset()
        self._start_sequence()
        return out

    def close(self) -> None:
        if self._mesh is not None and self._owns_mesh:
            self._mesh.close()
        self._mesh = None

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open_mesh(self) -> FaceMesh:
        if self._mesh is None:
            self._mesh = FaceMesh(static_image_mode=False, **self._mesh_args)
            self._owns_mesh = True
        return self._mesh

    def _check_index(self, index) -> None:
        if not isinstance(index, numbers.Integral) or isinstance(index, bool) or index < 0:
            raise InvalidFrameError.for_field("frame.index", f"expected an integer >= 0, got {index!r}")
        if self._last_index is not None and index <= self._last_index:
            raise InvalidFrameError.for_field(
                "frame.index", f"frame indices must increase: {index} after {self._last_index}")

    def _collect(self) -> list[TrackResult]:
        out = []
        while self._emitted in self._smoothed_alignment and self._emitted in self._smoothed_points:
            pending, alignment_vec = self._smoothed_alignment.pop(self._emitted)
            points = self._smoothed_points.pop(self._emitted)
            out.append(self._result(pending, alignment_vec, points))
            self._emitted += 1
        return out

    def _result(self, p: _Pending, alignment_vec: np.ndarray | None, points: np.ndarray | None) -> TrackResult:
        if p.face is None or alignment_vec is None or points is None:
            return TrackResult(p.index, "no_face", p.num_faces)
        alignment = Alignment.from_vector(alignment_vec, self.crop_size)
        source_points = points.reshape(NUM_POINTS, 3).astype(np.float32)
        crop = None
        if p.region is not None:
            crop = warp_crop(p.region.pixels, alignment, source_to_image=p.region.source_to_region,
                             border=self.border)
        return TrackResult(
            index=p.index, status="ok" if p.num_faces == 1 else "multiple_faces", num_faces=p.num_faces,
            presence=p.face.presence, alignment=alignment, source_points=source_points,
            crop_points=transform_points(source_points, alignment.source_to_crop), crop=crop,
            raw_alignment=p.raw_alignment, raw_source_points=p.face.points)


def detect_image(rgb: np.ndarray, crop_size: int = 256, *, return_crop: bool = True, max_faces: int = 4,
                 mesh: FaceMesh | None = None, border: str = "reflect", detector: str = "full") -> TrackResult:
    """One still image: all faces found, the largest one aligned (no temporal smoothing).

    mesh: an open FaceMesh in static mode to reuse; by default one is made (with `detector`) and closed.
    """
    validate_frame(rgb, field="image")
    if mesh is None:
        with FaceMesh(static_image_mode=True, max_num_faces=max_faces, detector=detector) as own:
            faces = own.process(rgb)
    else:
        faces = mesh.process(rgb)
    if not faces:
        return TrackResult(0, "no_face", 0)
    face = faces[select_face(faces, None)]
    alignment = ffhq_alignment(face.points, crop_size)
    crop = warp_crop(rgb, alignment, border=border) if return_crop else None
    return TrackResult(
        index=0, status="ok" if len(faces) == 1 else "multiple_faces", num_faces=len(faces),
        presence=face.presence, alignment=alignment, source_points=face.points,
        crop_points=transform_points(face.points, alignment.source_to_crop), crop=crop,
        raw_alignment=alignment, raw_source_points=face.points)
