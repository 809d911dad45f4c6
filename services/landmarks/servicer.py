"""gRPC adapter of the landmarks core: proto <-> domain types, nothing else."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np

from reenact.api.common.v1 import types_pb2
from reenact.api.landmarks.v1 import landmarks_pb2, landmarks_pb2_grpc
from reenact.errors import InvalidInputError
from reenact.face.tracker import FaceTracker, TrackResult, detect_image
from reenact.wire import affine_to_proto, image_from_proto, image_to_proto, tensor_to_proto
from services.landmarks.config import LandmarksConfig

log = logging.getLogger("reenact.landmarks")

_STATUS = {
    "ok": landmarks_pb2.FACE_STATUS_OK,
    "no_face": landmarks_pb2.FACE_STATUS_NO_FACE,
    "multiple_faces": landmarks_pb2.FACE_STATUS_MULTIPLE_FACES,
}


def result_to_proto(r: TrackResult, encoding: int) -> landmarks_pb2.FaceResult:
    out = landmarks_pb2.FaceResult(status=_STATUS[r.status], num_faces=r.num_faces)
    if r.alignment is None:
        return out
    a = r.alignment
    out.alignment.CopyFrom(types_pb2.Alignment(
        quad=np.asarray(a.quad, np.float64).ravel().tolist(),
        center=np.asarray(a.center, np.float64).tolist(),
        x_axis=np.asarray(a.x, np.float64).tolist(),
        y_axis=np.asarray(a.y, np.float64).tolist(),
        source_to_crop=affine_to_proto(a.source_to_crop),
        crop_to_source=affine_to_proto(a.crop_to_source),
        crop_size=a.crop_size,
    ))
    out.landmarks.CopyFrom(types_pb2.FaceLandmarks(
        source_points=tensor_to_proto(r.source_points, np.float32),
        crop_points=tensor_to_proto(r.crop_points, np.float32),
        presence=float(r.presence),
    ))
    if r.crop is not None:
        out.crop.CopyFrom(image_to_proto(r.crop, encoding))
    return out


MAX_SIGMA = 30.0  # frames of temporal smoothing; the tracker buffers ceil(3 sigma) frames of look-ahead


def _crop_size(value: int, default: int, field: str) -> int:
    size = value or default
    if not (16 <= size <= 1024):
        raise InvalidInputError.for_field(field, f"crop size {size} outside 16..1024")
    return size


class LandmarksServicer(landmarks_pb2_grpc.LandmarksServiceServicer):
    def __init__(self, config: LandmarksConfig, tracker_factory: Callable[..., FaceTracker] = FaceTracker):
        self.config = config
        self.tracker_factory = tracker_factory

    def _open_tracker(self, first: landmarks_pb2.TrackFramesRequest) -> tuple[FaceTracker, int]:
        if first.WhichOneof("kind") != "config":
            raise InvalidInputError.for_field("config", "the first message of a stream must carry the config")
        cfg = first.config
        size = _crop_size(cfg.crop_size, self.config.default_crop_size, "config.crop_size")
        sigma = self.config.default_sigma if cfg.smoothing_sigma == 0 else max(cfg.smoothing_sigma, 0.0)
        if not (0.0 <= sigma <= MAX_SIGMA):  # also NaN; the look-ahead buffer is 3 sigma frames
            raise InvalidInputError.for_field("config.smoothing_sigma",
                                              f"{cfg.smoothing_sigma} outside 0..{MAX_SIGMA:g} frames (negative = off)")
        encoding = cfg.crop_encoding or types_pb2.IMAGE_ENCODING_RGB8
        if encoding not in (types_pb2.IMAGE_ENCODING_RGB8, types_pb2.IMAGE_ENCODING_PNG,
                            types_pb2.IMAGE_ENCODING_JPEG):
            raise InvalidInputError.for_field("config.crop_encoding", "unknown encoding")
        tracker = self.tracker_factory(crop_size=size, sigma=sigma, return_crop=cfg.return_crop,
                                       max_faces=self.config.max_faces)
        return tracker, encoding

    def warm_up(self) -> None:
        """Load MediaPipe's graphs once (readiness: the service is SERVING only after this worked)."""
        gray = np.full((128, 128, 3), 128, np.uint8)
        detect_image(gray, crop_size=64, return_crop=False, max_faces=1)

    def TrackFrames(self, request_iterator, context) -> Iterator[landmarks_pb2.TrackFramesResponse]:
        first = next(request_iterator, None)
        if first is None:
            return
        tracker, encoding = self._open_tracker(first)
        with tracker:
            count = 0
            for req in request_iterator:
                if req.WhichOneof("kind") != "frame":
                    raise InvalidInputError.for_field("frame", "only frames may follow the config message")
                count += 1
                if count > self.config.max_stream_frames:
                    raise InvalidInputError.for_field("frame", f"more than {self.config.max_stream_frames} frames")
                rgb = image_from_proto(req.frame.image, field=f"frame[{req.frame.index}].image")
                for r in tracker.push(req.frame.index, rgb):
                    yield landmarks_pb2.TrackFramesResponse(index=r.index, result=result_to_proto(r, encoding))
            for r in tracker.flush():
                yield landmarks_pb2.TrackFramesResponse(index=r.index, result=result_to_proto(r, encoding))

    def DetectImage(self, request, context) -> landmarks_pb2.DetectImageResponse:
        size = _crop_size(request.crop_size, self.config.default_crop_size, "crop_size")
        rgb = image_from_proto(request.image, field="image")
        r = detect_image(rgb, crop_size=size, return_crop=request.return_crop, max_faces=self.config.max_faces)
        return landmarks_pb2.DetectImageResponse(result=result_to_proto(r, types_pb2.IMAGE_ENCODING_RGB8))
