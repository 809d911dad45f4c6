"""MediaPipe face mesh (478 points with irises) on RGB frames, in source pixels, with a presence score.

Runs the face-mesh graph that ships in mediapipe 0.10.21 (`face_landmark_front_cpu`, the graph behind
`mp.solutions.face_mesh.FaceMesh(refine_landmarks=True)`); detection, ROI tracking and the landmark
model are MediaPipe's. Changes, made on the expanded graph config:

- presence: the face-presence score of the LANDMARK network itself (the sigmoid of its face-flag
  output, the value MediaPipe thresholds with `min_tracking_confidence` to drop a lost face) is
  collected per face and returned beside the points. It is the landmark model's confidence that the
  crop it looked at holds a face, not the face detector's score.
- detector: optionally the full-range face detector (shipped in the same wheel) instead of the
  short-range one, and optionally run only on every n-th frame while a face is tracked (FaceMesh doc).
- duplicates are dropped: in tracking mode MediaPipe sometimes follows one face with two ROIs (seen on
  the carphone clip, frames 84-90); faces whose point bounding boxes overlap with IoU > 0.5 are one
  face, and the one with the higher presence (the first on a tie) is kept.

Coordinates: MediaPipe normalizes x by the image width and y by the height over the image extent, so
`x * W`, `y * H` are continuous pixel coordinates with the origin at the top-left CORNER of the
top-left pixel (pixel (i, j) spans [i, i+1) x [j, j+1), its centre is at +0.5). Checked: mirroring
an image moves the mesh's mean x to W - x (not W - 1 - x): offset -0.17 px averaged over 12 runs
(single runs scatter by +-0.9 px: MediaPipe is not exactly mirror-equivariant). z is MediaPipe's normalized
depth times W (the scale of x), relative to the face centre, smaller = closer to the camera.

Tracking mode (`static_image_mode=False`) feeds the previous frame's landmarks as the next ROI.
Nothing is loaded at import time; the graph lives from `FaceMesh(...)` to `close()`. A FaceMesh is
not thread-safe: one per video stream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

NUM_POINTS = 478  # 468 mesh vertices + 5 iris points per eye (468..472: subject's right, 473..477: left)

_GRAPH = "mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb"
_FULL_RANGE_GRAPH = "mediapipe/modules/face_detection/face_detection_full_range_cpu.binarypb"
_LANDMARK_THRESHOLD = "facelandmarkcpu__ThresholdingCalculator"
_SHORT_PREFIX = "facedetectionshortrangecpu__"
_DETECTION_THRESHOLD = {
    "short": f"{_SHORT_PREFIX}facedetectionshortrange__facedetection__TensorsToDetectionsCalculator",
    "full": "facedetectionfullrange__facedetection__TensorsToDetectionsCalculator",
}
_FLAG_STREAM = "facelandmarkcpu__face_flag_tensor"  # raw face-flag logit of the landmark model
_FLAG_GATE = "facelandmarkcpu__face_presence"  # the thresholded flag that gates the landmarks
_LOOP_END = "landmarks_loop_end_timestamp"
_DETECTOR_IMAGE = "gated_image"  # the frames the face detector sees (gated by "enough faces tracked")
_DETECT_NOW = "detect_now"  # our per-frame bool input: may the detector run on this frame
_PRESENCE_OUT = "multi_face_presence"
_LANDMARKS_OUT = "multi_face_landmarks"


@dataclass(frozen=True)
class MeshFace:
    """One face: points float32 [478, 3] in source pixels (see module doc); presence in [0, 1]."""

    points: np.ndarray
    presence: float

    @property
    def center(self) -> np.ndarray:
        """Centre of the face (mean of the x, y of the 468 mesh vertices), source pixels."""
        return self.points[:468, :2].mean(axis=0)

    @property
    def box(self) -> np.ndarray:
        """Bounding box [x0, y0, x1, y1] of the 468 mesh vertices, source pixels."""
        xy = self.points[:468, :2]
        return np.concatenate([xy.min(axis=0), xy.max(axis=0)])

    @property
    def size(self) -> float:
        """Diagonal of the bounding box of the mesh vertices in pixels (a scale to compare faces)."""
        span = self.points[:468, :2].max(axis=0) - self.points[:468, :2].min(axis=0)
        return float(np.hypot(span[0], span[1]))


def _mediapipe_root() -> str:
    import mediapipe

    return os.path.dirname(os.path.dirname(os.path.abspath(mediapipe.__file__)))


def _expanded(graph: str):
    from mediapipe.framework import calculator_pb2
    from mediapipe.python._framework_bindings import resource_util, validated_graph_config

    root = _mediapipe_root()
    resource_util.set_resource_dir(root)
    validated = validated_graph_config.ValidatedGraphConfig()
    validated.initialize(binary_graph_path=os.path.join(root, graph))
    config = calculator_pb2.CalculatorGraphConfig()
    config.ParseFromString(validated.binary_config)
    return config


def _use_full_range_detector(config) -> None:
    """Swap the short-range face detector (128x128 input, faces filling much of the frame) for the
    full-range one that ships beside it (192x192, sparse; finds faces down to ~1/10 of the frame)."""
    nodes = [n for n in config.node if not n.name.startswith(_SHORT_PREFIX)]
    full = _expanded(_FULL_RANGE_GRAPH)
    rename = {"IMAGE:image": "IMAGE:gated_image", "DETECTIONS:detections": "DETECTIONS:all_face_detections"}
    for node in full.node:
        for field in (node.input_stream, node.output_stream):
            renamed = [rename.get(s, s) for s in field]
            del field[:]
            field.extend(renamed)
    del config.node[:]
    config.node.extend(nodes + list(full.node))


def _gate_detector(config) -> None:
    """Add a second gate in front of the detector, driven by the `detect_now` input stream."""
    for node in config.node:
        for field in (node.input_stream, node.output_stream):
            renamed = [f"{s.rsplit(':', 1)[0]}:detector_candidate_image" if s.endswith(f":{_DETECTOR_IMAGE}")
                       else "detector_candidate_image" if s == _DETECTOR_IMAGE else s for s in field]
            del field[:]
            field.extend(renamed)
    producer = [n for n in config.node if "detector_candidate_image" in n.output_stream]
    consumers = [n for n in config.node if n not in producer]
    for node in consumers:  # everything but the original gate reads the doubly gated image
        renamed = [s.replace("detector_candidate_image", _DETECTOR_IMAGE) for s in node.input_stream]
        del node.input_stream[:]
        node.input_stream.extend(renamed)
    config.node.add(calculator="GateCalculator", input_stream=["detector_candidate_image", f"ALLOW:{_DETECT_NOW}"],
                    output_stream=[_DETECTOR_IMAGE])
    config.input_stream.append(f"DETECT_NOW:{_DETECT_NOW}")


def _graph_config(detector: str = "short"):
    """The expanded face-mesh graph with our additions (module doc)."""
    config = _expanded(_GRAPH)
    if detector == "full":
        _use_full_range_detector(config)
    streams = {s.split(":")[-1] for n in config.node for s in n.output_stream}
    missing = {_FLAG_STREAM, _FLAG_GATE, _LOOP_END, _DETECTOR_IMAGE} - streams
    if missing:
        raise RuntimeError(f"unexpected mediapipe face-mesh graph (missing {sorted(missing)}); "
                           "reenact needs mediapipe==0.10.21")
    gate = config.node.add(calculator="GateCalculator", output_stream=["presence_flag_tensor"])
    gate.input_stream.extend([_FLAG_STREAM, f"ALLOW:{_FLAG_GATE}"])
    # One class, no threshold: the classification score is the raw logit (sigmoid applied below).
    config.node.add(calculator="TensorsToClassificationCalculator", input_stream=["TENSORS:presence_flag_tensor"],
                    output_stream=["CLASSIFICATIONS:presence_logit"])
    config.node.add(calculator="EndLoopClassificationListCalculator",
                    input_stream=["ITEM:presence_logit", f"BATCH_END:{_LOOP_END}"],
                    output_stream=[f"ITERABLE:{_PRESENCE_OUT}"])
    config.output_stream.append(f"PRESENCE:{_PRESENCE_OUT}")
    _gate_detector(config)
    return config


def _set_option(config, node_name: str, options_cls, field: str, value) -> None:
    """Set one field of a node's calculator options (stored either as node_options or extension)."""
    node = next((n for n in config.node if n.name == node_name), None)
    if node is None:
        raise RuntimeError(f"unexpected mediapipe face-mesh graph: no node {node_name}")
    for packed in node.node_options:
        if packed.Is(options_cls.DESCRIPTOR):
            opts = options_cls()
            packed.Unpack(opts)
            setattr(opts, field, value)
            packed.Pack(opts)
            return
    setattr(node.options.Extensions[options_cls.ext], field, value)


_LANDMARK_TAGS = np.array([0x0A, 0x0F, 0x0D, 0x15, 0x1D], np.uint8)  # list item, length 15, x, y, z
_LANDMARK_FLOATS = np.r_[3:7, 8:12, 13:17]


def landmarks_from_serialized(data: bytes) -> np.ndarray:
    """Serialized NormalizedLandmarkList -> float32 [N, 3] normalized (x, y, z).

    Fast path: MediaPipe writes every landmark as exactly x, y, z (17 bytes: proto2 optional floats,
    always present); anything else (visibility, presence, other layouts) goes through protobuf.
    """
    raw = np.frombuffer(data, np.uint8)
    if raw.size % 17 == 0:
        rows = raw.reshape(-1, 17)
        if (rows[:, [0, 1, 2, 7, 12]] == _LANDMARK_TAGS).all():
            return np.ascontiguousarray(rows[:, _LANDMARK_FLOATS]).view("<f4").astype(np.float32)
    from mediapipe.framework.formats import landmark_pb2

    msg = landmark_pb2.NormalizedLandmarkList.FromString(data)
    return np.array([(lm.x, lm.y, lm.z) for lm in msg.landmark], np.float32).reshape(-1, 3)


def _serialized_list(packet) -> list[bytes]:
    from mediapipe.python import packet_getter
    from mediapipe.python._framework_bindings import _packet_getter

    if packet is None or packet.is_empty():
        return []
    if hasattr(_packet_getter, "_get_serialized_proto_list"):
        return list(_packet_getter._get_serialized_proto_list(packet))
    return [m.SerializeToString() for m in packet_getter.get_proto_list(packet)]


class FaceMesh:
    """MediaPipe face mesh with irises. Use as a context manager or call `close()`.

    static_image_mode: False tracks across calls (frames of one video, in order); True treats each
      image on its own (runs the detector every time).
    max_num_faces: at most this many faces per image (all are returned).
    min_detection_confidence: face-detector score needed to start a face.
    min_tracking_confidence: landmark presence score needed to keep a face (below it the face is
      dropped and, in tracking mode, re-detected on the next frame).
    detect_every: in tracking mode, while at least one face is tracked, look for further faces only
      on every n-th frame (1 = every frame, as MediaPipe does). The detector always runs while no
      face is tracked. A face entering the video is then found within n frames.
    detector: "short" (MediaPipe's default for the face mesh: the short-range BlazeFace, made for
      faces that fill much of the frame, as in a selfie) or "full" (the full-range model that ships
      in the same wheel: finds smaller faces, e.g. a webcam framing at 1280x720; slower).

    The graph is driven directly (as mp.solutions' SolutionBase does, without its per-call overhead):
    one packet per input stream at a simulated 30 fps timestamp, then wait until idle.
    """

    def __init__(self, *, static_image_mode: bool = False, max_num_faces: int = 4,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 detector: str = "short", detect_every: int = 1) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        if max_num_faces < 1:
            raise ValueError(f"max_num_faces must be >= 1, got {max_num_faces}")
        if detector not in _DETECTION_THRESHOLD:
            raise ValueError(f"detector must be one of {sorted(_DETECTION_THRESHOLD)}, got {detector!r}")
        from mediapipe.calculators.tensor import tensors_to_detections_calculator_pb2 as detections_pb2
        from mediapipe.calculators.util import thresholding_calculator_pb2 as thresholding_pb2
        from mediapipe.python import packet_creator
        from mediapipe.python._framework_bindings import calculator_graph

        self.static_image_mode = static_image_mode
        self.max_num_faces = max_num_faces
        self.detector = detector
        self.detect_every = 1 if static_image_mode else int(detect_every)
        self._frames = 0
        self._tracked = 0
        self._timestamp = 0
        config = _graph_config(detector)
        _set_option(config, _DETECTION_THRESHOLD[detector], detections_pb2.TensorsToDetectionsCalculatorOptions,
                    "min_score_thresh", min_detection_confidence)
        _set_option(config, _LANDMARK_THRESHOLD, thresholding_pb2.ThresholdingCalculatorOptions,
                    "threshold", min_tracking_confidence)
        self._outputs: dict = {}
        self._graph = calculator_graph.CalculatorGraph(graph_config=config)
        for stream in (_LANDMARKS_OUT, _PRESENCE_OUT):
            self._graph.observe_output_stream(stream, self._store_output, True)
        self._side_packets = {"num_faces": packet_creator.create_int(max_num_faces),
                              "with_attention": packet_creator.create_bool(True),
                              "use_prev_landmarks": packet_creator.create_bool(not static_image_mode)}
        self._graph.start_run(self._side_packets)

    def _store_output(self, stream: str, packet) -> None:
        self._outputs[stream] = packet

    def process(self, rgb: np.ndarray) -> list[MeshFace]:
        """All distinct faces in an RGB uint8 [H, W, 3] image, in MediaPipe's order."""
        from mediapipe.python import packet_creator
        from mediapipe.python._framework_bindings import image_frame

        if self._graph is None:
            raise RuntimeError("FaceMesh is closed")
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected RGB uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
        detect_now = self._tracked == 0 or self._frames % self.detect_every == 0
        self._timestamp += 33333
        self._outputs.clear()
        image = packet_creator.create_image_frame(data=np.ascontiguousarray(rgb),
                                                  image_format=image_frame.ImageFormat.SRGB, copy=True)
        self._graph.add_packet_to_input_stream(stream="image", packet=image.at(self._timestamp))
        self._graph.add_packet_to_input_stream(stream=_DETECT_NOW,
                                               packet=packet_creator.create_bool(detect_now).at(self._timestamp))
        self._graph.wait_until_idle()
        self._frames += 1
        lists = _serialized_list(self._outputs.get(_LANDMARKS_OUT))
        logits = self._presence_logits(len(lists))
        h, w = rgb.shape[:2]
        scale = np.array([w, h, w], dtype=np.float32)
        faces = [MeshFace(landmarks_from_serialized(data) * scale, _sigmoid(logit))
                 for data, logit in zip(lists, logits, strict=True)]
        self._tracked = len(faces)
        return distinct_faces(faces)

    def _presence_logits(self, count: int) -> list[float]:
        from mediapipe.python import packet_getter

        packet = self._outputs.get(_PRESENCE_OUT)
        lists = [] if packet is None or packet.is_empty() else packet_getter.get_proto_list(packet)
        if len(lists) != count or not all(c.classification for c in lists):
            return [float("nan")] * count  # never seen: the two lists are gated by the same flag
        return [c.classification[0].score for c in lists]

    def reset(self) -> None:
        """Forget the tracked faces (the next frame starts a new video)."""
        if self._graph is not None:
            self._graph.close()
            self._graph.start_run(self._side_packets)
        self._frames = self._tracked = 0
        self._timestamp = 0

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes [x0, y0, x1, y1]."""
    iw = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    ih = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    inter = iw * ih
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def distinct_faces(faces: list[MeshFace], iou_threshold: float = 0.5) -> list[MeshFace]:
    """Drop duplicate detections of one face (box IoU above the threshold), keeping the most present."""
    order = sorted(range(len(faces)), key=lambda i: (-np.nan_to_num(faces[i].presence, nan=-1.0), i))
    kept: list[int] = []
    for i in order:
        if all(box_iou(faces[i].box, faces[k].box) <= iou_threshold for k in kept):
            kept.append(i)
    return [faces[i] for i in sorted(kept)]


def _sigmoid(logit: float) -> float:
    if logit != logit:  # NaN
        return logit
    if logit >= 0:
        return float(1.0 / (1.0 + np.exp(-logit)))
    e = float(np.exp(logit))
    return e / (1.0 + e)
