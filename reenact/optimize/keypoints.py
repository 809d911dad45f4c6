"""Keypoint subsets of MediaPipe's 478 face-mesh points, per-part normalization, temporal smoothing.

A subset is a set of named facial parts, each a tuple of MediaPipe indices (subject's right eye = the
eye on the image left, indices 33..133; irises 468..472 right, 473..477 left). `part_features` splits
points into what the keypoint loss compares (METHOD.md section 7):

    local     each part minus its own centroid            (shape of lips, eyes, brows, ...)
    centroids the part centroids                          (pose, and where the parts sit)
    scale     RMS distance of the part centroids from their mean (size / distance to the camera)

Subsets: "default" (70 points, a dlib-68-like layout plus the two iris centres, as the paper's 66),
"contours" (MediaPipe's contour sets: lips 40, eyes 16 + 16, brows 10 + 10, oval 36, irises 5 + 5),
"all" (the 478 points, the mesh points grouped by their nearest contour part).
The iris points belong to their eye's part, so the eye part carries gaze.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from reenact.face.smooth import StreamingSmoother, kernel_radius

NUM_POINTS = 478
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (362, 263)

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_BROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
RIGHT_IRIS = (468, 469, 470, 471, 472)  # centre, then four edge points
LEFT_IRIS = (473, 474, 475, 476, 477)
NOSE = (1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197, 220, 275, 278, 294, 326, 327, 344, 440)

# "default": a dlib-68-like layout (jaw 17, brows 5 + 5, nose 9, eyes 6 + 6, lips 12 + 8) + iris centres.
DEFAULT_JAW = (234, 93, 132, 58, 172, 136, 150, 149, 152, 378, 379, 365, 397, 288, 361, 323, 454)
DEFAULT_NOSE = (168, 197, 5, 4, 98, 97, 2, 326, 327)
DEFAULT_RIGHT_BROW = (70, 63, 105, 66, 107)
DEFAULT_LEFT_BROW = (336, 296, 334, 293, 300)
DEFAULT_RIGHT_EYE = (33, 160, 158, 133, 153, 144, 468)
DEFAULT_LEFT_EYE = (362, 385, 387, 263, 373, 380, 473)
DEFAULT_LIPS = (61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91, 78, 81, 13, 311, 308, 402, 14, 178)

PART_NAMES = ("oval", "nose", "right_brow", "left_brow", "right_eye", "left_eye", "lips")


@dataclass(frozen=True)
class KeypointSubset:
    """Named parts (MediaPipe indices). `indices` [K] concatenates them; `part_of` [K] maps to parts."""

    name: str
    parts: Mapping[str, tuple[int, ...]]

    @property
    def indices(self) -> np.ndarray:
        return np.concatenate([np.asarray(p, np.int64) for p in self.parts.values()])

    @property
    def part_of(self) -> np.ndarray:
        return np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(self.parts.values())])

    @property
    def size(self) -> int:
        return int(sum(len(p) for p in self.parts.values()))


def _all_points_parts() -> dict[str, tuple[int, ...]]:
    """Every point in a part: contour points keep theirs, the other mesh points join the contour part
    reached first by breadth-first growth over MediaPipe's tesselation edges (ties: lower index first)."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION  # lazy: heavy

    owner = {i: name for name, idx in contour_parts().items() for i in idx}
    adjacency: dict[int, set[int]] = {}
    for u, v in FACEMESH_TESSELATION:
        adjacency.setdefault(int(u), set()).add(int(v))
        adjacency.setdefault(int(v), set()).add(int(u))
    frontier = dict(sorted(owner.items()))
    while True:  # breadth-first growth from the contours over the mesh
        grown = {}
        for i, name in frontier.items():
            for j in sorted(adjacency.get(i, ())):
                if j not in owner and j not in grown:
                    grown[j] = name
        if not grown:
            break
        owner.update(grown)
        frontier = grown
    for i in range(NUM_POINTS):
        owner.setdefault(i, "nose")
    return {name: tuple(sorted(i for i, n in owner.items() if n == name)) for name in PART_NAMES}


def contour_parts() -> dict[str, tuple[int, ...]]:
    return {"oval": FACE_OVAL, "nose": NOSE, "right_brow": RIGHT_BROW, "left_brow": LEFT_BROW,
            "right_eye": RIGHT_EYE + RIGHT_IRIS, "left_eye": LEFT_EYE + LEFT_IRIS,
            "lips": LIPS_OUTER + LIPS_INNER}


@functools.cache
def get_subset(name: str) -> KeypointSubset:
    """'default' (70 points), 'contours' (161), 'all' (478). ValueError for another name."""
    if name == "default":
        return KeypointSubset(name, {"oval": DEFAULT_JAW, "nose": DEFAULT_NOSE, "right_brow": DEFAULT_RIGHT_BROW,
                                     "left_brow": DEFAULT_LEFT_BROW, "right_eye": DEFAULT_RIGHT_EYE,
                                     "left_eye": DEFAULT_LEFT_EYE, "lips": DEFAULT_LIPS})
    if name == "contours":
        return KeypointSubset(name, contour_parts())
    if name == "all":
        return KeypointSubset(name, _all_points_parts())
    raise ValueError(f"unknown keypoint subset {name!r}; one of {SUBSETS}")


SUBSETS = ("default", "contours", "all")


# ----------------------------------------------------------------------------------------------------
# Normalization


@dataclass
class PartFeatures:
    local: torch.Tensor      # [..., K, 3] each point minus its part's centroid
    centroids: torch.Tensor  # [..., P, 3]
    scale: torch.Tensor      # [...]


_SUBSET_TENSORS: dict[tuple[int, str], tuple] = {}


def _subset_tensors(subset: KeypointSubset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indices [K], part_of [K], one-hot [K, P] float32) of `subset` on `device`, made once per subset
    object and device: the loss functions then copy nothing from the host per call (a CUDA graph can
    capture them, issue 7). Keyed by identity (the parts mapping is not hashable); the entry keeps the
    subset alive, so an id is never reused while cached."""
    key = (id(subset), str(device))
    hit = _SUBSET_TENSORS.get(key)
    if hit is None:
        idx = torch.as_tensor(subset.indices, device=device)
        part_of = torch.as_tensor(subset.part_of, device=device)
        onehot = torch.nn.functional.one_hot(torch.as_tensor(subset.part_of), len(subset.parts)).float().to(device)
        hit = _SUBSET_TENSORS[key] = (subset, (idx, part_of, onehot))
    return hit[1]


def part_features(points: torch.Tensor, subset: KeypointSubset) -> PartFeatures:
    """Split points [..., 478, 3] into per-part local shapes, part centroids and a scale."""
    idx, part_of, onehot = _subset_tensors(subset, points.device)
    pts = points.index_select(-2, idx)
    onehot = onehot.to(points.dtype)  # [K, P]
    centroids = (onehot.T @ pts) / onehot.sum(0)[:, None]  # [..., P, 3]
    local = pts - centroids.index_select(-2, part_of)
    spread = centroids[..., :2] - centroids[..., :2].mean(-2, keepdim=True)
    scale = spread.square().sum(-1).mean(-1).clamp_min(1e-12).sqrt()
    return PartFeatures(local, centroids, scale)


def inter_ocular(points: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Distance between the two eye centres (mean of each eye's corners), x, y only: [...]."""
    lib = torch if isinstance(points, torch.Tensor) else np
    # integer indexing only (a list index would copy an index tensor from the host on every call)
    right = (points[..., RIGHT_EYE_CORNERS[0], :2] + points[..., RIGHT_EYE_CORNERS[1], :2]) / 2
    left = (points[..., LEFT_EYE_CORNERS[0], :2] + points[..., LEFT_EYE_CORNERS[1], :2]) / 2
    diff = right - left
    return lib.sqrt((diff * diff).sum(-1))


def keypoint_error(points: torch.Tensor, target: torch.Tensor, subset: KeypointSubset) -> torch.Tensor:
    """Mean 2-D distance over the subset / inter-ocular distance of `target`: [...]."""
    idx = _subset_tensors(subset, points.device)[0]
    dist = (points[..., :2] - target[..., :2]).index_select(-2, idx).norm(dim=-1).mean(-1)
    return dist / inter_ocular(target).clamp_min(1e-6)


def scale_keypoints(points: np.ndarray, crop_size: int, resolution: int) -> np.ndarray:
    """Aligned-crop pixels of `crop_size` -> of `resolution` (pixel i spans [i, i+1): a pure scale; z too)."""
    return np.asarray(points, np.float64) * (float(resolution) / float(crop_size))


class KeypointSmoother:
    """Streaming Gaussian smoothing (sigma in frames) of the driving keypoints; frames without a face
    pass through with None. Emits (payload, smoothed [478, 3] or None) `delay` frames late."""

    def __init__(self, sigma: float) -> None:
        self._smoother = StreamingSmoother(sigma)
        self.delay = kernel_radius(sigma)

    def push(self, points: np.ndarray | None, payload) -> list[tuple[object, np.ndarray | None]]:
        value = None if points is None else np.asarray(points, np.float64).ravel()
        return [(p, _unravel(v)) for p, v in self._smoother.push(value, payload)]

    def flush(self) -> list[tuple[object, np.ndarray | None]]:
        return [(p, _unravel(v)) for p, v in self._smoother.flush()]


def _unravel(value: np.ndarray | None) -> np.ndarray | None:
    return None if value is None else value.reshape(NUM_POINTS, 3)
