"""Frame quality filtering and diverse frame selection (METHOD.md section 3)."""

from __future__ import annotations

import cv2
import numpy as np


def sharpness(crops: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of each grey crop [T, H, W, 3] uint8 -> [T] (higher = sharper)."""
    out = np.empty(len(crops))
    for i, c in enumerate(crops):
        grey = cv2.cvtColor(c, cv2.COLOR_RGB2GRAY)
        out[i] = cv2.Laplacian(grey, cv2.CV_64F).var()
    return out


def quality_mask(crops: np.ndarray, has_face: np.ndarray, blur_ratio: float = 0.25) -> np.ndarray:
    """Frames with a face whose sharpness is at least `blur_ratio` x the median of the face frames."""
    keep = has_face.astype(bool).copy()
    if keep.sum() == 0:
        return keep
    s = sharpness(crops)
    median = float(np.median(s[keep]))
    keep &= s >= blur_ratio * median
    return keep


def farthest_point_order(dist: np.ndarray, start: int, count: int, min_dist: float = 0.0) -> list[int]:
    """Greedy farthest-point sampling on a distance matrix [T, T], from `start`.

    Stops after `count` picks, or earlier when the farthest remaining frame is closer than `min_dist`
    to the picked set (near duplicates).
    """
    t = dist.shape[0]
    if not (0 <= start < t):
        raise ValueError("start outside the matrix")
    picked = [start]
    nearest = dist[start].astype(np.float64).copy()
    nearest[start] = -np.inf
    while len(picked) < min(count, t):
        j = int(np.argmax(nearest))
        if nearest[j] == -np.inf or nearest[j] < min_dist:
            break
        picked.append(j)
        nearest = np.minimum(nearest, dist[j])
        nearest[picked] = -np.inf
    return picked


def most_neutral_frame(yaw: np.ndarray, pitch: np.ndarray, mouth_open: np.ndarray) -> int:
    """The most frontal, closed-mouth frame (the first anchor)."""
    score = np.abs(yaw) / 30.0 + np.abs(pitch) / 20.0 + mouth_open / max(float(mouth_open.max()), 1e-6)
    return int(np.argmin(score))


def split_anchors_heldout(dist: np.ndarray, start: int, num_anchors: int, num_heldout: int,
                          seed: int = 0) -> tuple[list[int], list[int]]:
    """Anchors by farthest-point sampling; held-out frames drawn from the rest, spread over time.

    Held-out frames are chosen first among frames that are not near-identical to any other frame's
    neighbour in time, so evaluation does not see a training frame's duplicate.
    """
    t = dist.shape[0]
    rng = np.random.default_rng(seed)
    heldout: list[int] = []
    if num_heldout > 0 and t > num_anchors + num_heldout:
        # spread over time: one per equal slice, avoiding the first (neutral) frame
        slices = np.array_split(np.setdiff1d(np.arange(t), [start]), num_heldout)
        heldout = [int(rng.choice(s)) for s in slices if len(s)]
    mask = np.ones(t, bool)
    mask[heldout] = False
    idx = np.flatnonzero(mask)
    sub = dist[np.ix_(idx, idx)]
    local_start = int(np.flatnonzero(idx == start)[0]) if start in idx else 0
    anchors = [int(idx[i]) for i in farthest_point_order(sub, local_start, num_anchors)]
    return anchors, heldout
