"""Relative-motion retargeting of driving keypoints onto the person's face (the optimizer's motion="relative").

The optimizer matches the driving keypoints. Taken as they are ("absolute"), another person's face shape
(lip thickness, mouth width, eye shape, face proportions) is matched as if it were expression. Relative
motion (the FOMM-style transfer, here per facial part) moves the PERSON's own keypoints by the driver's
MOTION instead:

    target_t = person_reference  moved by  (driver_t relative to driver_reference)

References: on the first frame with a face the driver's keypoints become `driver_reference` D0 and the
person's anchor most similar to it in head pose and expression (`reference="matched"`: mouth and eye
opening ratios, rotation between the two faces; identity-invariant features) becomes `person_reference`
P0; `reference="neutral"` takes the person's most neutral anchor instead (most frontal, mouth closed).
"matched" is the default: on the cpu-quick evaluation person, cross protocol, it gave expression error
0.026 and mouth-opening correlation 0.65 against 0.034 and 0.36 for "neutral" (the driver's first frame
need not be neutral; a matched reference keeps its expression as the zero of the motion).

Per frame, all in aligned-crop pixels at the generator resolution R, 3-D (MediaPipe's x, y, z):
1. Head motion: a similarity T_t (scale, rotation, translation; Umeyama) fitted on rigid points of the
   upper face (forehead/temple contour, nose, eye corners) maps D0 to driver_t.
2. Local deformation: delta = T_t^-1(driver_t) - D0, the driver's non-rigid motion in its reference pose
   (mouth opening, blinks, brows, jaw).
3. Transfer: A, the similarity D0 -> P0 (same rigid points), rotates delta into the person's frame; each
   part's delta is scaled by the part-size ratio person / driver (lips: mouth width; eyes: eye width;
   brows: brow length; every other point: A's global scale): Q = P0 + k_part * R_A delta.
4. Head pose, pose="driver" (the default): the person's face is placed on the driver's head,
   target_t = (T_t A^-1)(Q): the person's reference pose, position and size are replaced by the driver's
   reference ones (the similarity fit on the rigid points), then moved by the driver's head motion, so
   the head pose follows the driver's absolute pose and a driver translation v / scale s moves the target
   by v / scales it by s. pose="relative" (FOMM's choice) keeps the person reference's own pose and
   conjugates the driver's head motion into the person's frame: target_t = (A T_t A^-1)(Q), a driver
   translation v moves the person by s_A R_A v ("adapt movement scale").
   Measured on the cpu-quick evaluation person (16 anchors, docs/RESULTS.md): "relative" inherits the
   pose offset between the driver's first frame and the nearest of few anchors (self protocol: pose error
   7.7/8.9/1.8 deg vs 5.9/5.6/1.5 with "driver"); both transfer expression alike (cross protocol).

An identical driver and person (D0 one of the anchors) gives target_t = driver_t exactly.

Opening range (`opening_range` k > 0; 0 = off): the transfer asks for the driver's mouth opening moved onto
the person's reference, and a wide-open driver (or one that closes below its first frame) asks for an
opening the person's generator never produced: on the fixture person of docs/RESULTS.md the scan's mouth
ratio spans [0.16, 0.41] while a carphone yawn asks for 0.78. A hard cut there (what the generator does)
caps the peak at the level of mere talking, and a target's correlation with the driver drops from 0.96
to 0.83. With k > 0, step 3's mouth ratio f (|13-14| / inter-ocular of Q) is mapped softly into the
person's scan range [lo, hi] (the anchors' smallest and largest mouth ratio) around the reference's f0:

    f' = f0 + (hi - f0) tanh((f - f0) / (k (hi - f0)))    above f0,
    f' = f0 - (f0 - lo) tanh((f0 - f) / (k (f0 - lo)))    below,

monotone (the order of openings is kept), slope 1/k at f0, never past the scan's range. The lower lip and
the chin (LOWER_MOUTH) then move along the 13 -> 14 direction so that Q's ratio is f'; the corners and
the upper lip keep their motion (a smile stays a smile). On that target, clipped to the scan's range, k = 2
keeps a correlation of 0.94 with the driver, k = 1 0.86 (benchmarks/opening_ceiling.py). Measured on an H100
(docs/RESULTS.md, "fifth session"): k = 2 lifted the outputs' mouth correlation 0.34 -> 0.55, k = 3 lowered it
to 0.14 (a compressed target pulls less); the optimizer's mouth_starts did more. Only the points of the
"default" and "contours" subsets are moved.
Numpy only (runs where the engine runs; no mediapipe).
"""

from __future__ import annotations

import numpy as np

from .keypoints import (
    FACE_OVAL,
    LEFT_BROW,
    LEFT_EYE,
    LEFT_EYE_CORNERS,
    LEFT_IRIS,
    LIPS_INNER,
    LIPS_OUTER,
    NOSE,
    NUM_POINTS,
    RIGHT_BROW,
    RIGHT_EYE,
    RIGHT_EYE_CORNERS,
    RIGHT_IRIS,
)

REFERENCES = ("matched", "neutral")
POSES = ("relative", "driver")
# Upper-face contour (forehead to the ears, no jaw: the jaw moves with the mouth), nose, eye corners.
RIGID = tuple(sorted(set(FACE_OVAL[:9] + FACE_OVAL[-8:] + NOSE + RIGHT_EYE_CORNERS + LEFT_EYE_CORNERS)))
# Part: (its points, the two points whose distance is its size). Other points use the global scale.
PARTS = {
    "lips": (LIPS_OUTER + LIPS_INNER, (61, 291)),
    "right_eye": (RIGHT_EYE + RIGHT_IRIS, RIGHT_EYE_CORNERS),
    "left_eye": (LEFT_EYE + LEFT_IRIS, LEFT_EYE_CORNERS),
    "right_brow": (RIGHT_BROW, (46, 107)),
    "left_brow": (LEFT_BROW, (276, 336)),
}
# The lower lip (inner, outer) and the chin part of the face oval: what moves when the jaw opens.
LOWER_MOUTH = (14, 87, 178, 88, 95, 317, 402, 318, 324, 17, 84, 181, 91, 146, 314, 405, 321, 375,
               152, 148, 176, 149, 150, 136, 172, 377, 400, 378, 379, 365, 397)
MAX_OPENING_RANGE = 10.0
PART_RATIO_CLAMP = (0.5, 2.0)  # a part's ratio relative to the global scale ratio is kept inside this


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama) mapping source [K, 3] onto target [K, 3]: (s, R [3, 3], t [3]),
    target ~ s R source + t, R a proper rotation."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    cov = b.T @ a / len(a)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = (u * sign) @ vt
    var = (a * a).sum() / len(a)
    s = float((d * sign).sum() / var) if var > 0 else 1.0
    return s, rot, mu_t - s * rot @ mu_s


def apply(sim: tuple[float, np.ndarray, np.ndarray], points: np.ndarray) -> np.ndarray:
    s, rot, t = sim
    return s * points @ rot.T + t


def invert(sim: tuple[float, np.ndarray, np.ndarray]) -> tuple[float, np.ndarray, np.ndarray]:
    s, rot, t = sim
    return 1.0 / s, rot.T, -(rot.T @ t) / s


def rotation_degrees(rot: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0))))


def _dist(points: np.ndarray, i: int, j: int) -> np.ndarray:
    return np.linalg.norm(points[..., i, :2] - points[..., j, :2], axis=-1)


def expression_features(points: np.ndarray) -> np.ndarray:
    """[..., 478, 3] -> [..., 3]: mouth opening (|13-14| / inter-ocular) and the two eye openings (lid gap /
    eye width): ratios, so mostly free of face size and shape."""
    right = points[..., list(RIGHT_EYE_CORNERS), :2].mean(-2)
    left = points[..., list(LEFT_EYE_CORNERS), :2].mean(-2)
    iod = np.maximum(np.linalg.norm(right - left, axis=-1), 1e-6)
    mouth = _dist(points, 13, 14) / iod
    eye_r = _dist(points, 159, 145) / np.maximum(_dist(points, 33, 133), 1e-6)
    eye_l = _dist(points, 386, 374) / np.maximum(_dist(points, 362, 263), 1e-6)
    return np.stack([mouth, eye_r, eye_l], -1)


# Scales of the reference choice's distance: 5 degrees of rotation ~ 0.05 mouth opening ~ 0.05 eye opening.
POSE_SCALE_DEG, MOUTH_SCALE, EYE_SCALE = 5.0, 0.05, 0.05


def soft_range(f, f0: float, lo: float, hi: float, k: float):
    """The opening-range map (module docstring) of ratios f around f0 into [lo, hi], slope 1/k at f0."""
    f = np.asarray(f, np.float64)
    up, down = max(hi - f0, 0.0), max(f0 - lo, 0.0)
    above = f0 + (up * np.tanh((f - f0) / (k * up)) if up > 0 else 0.0 * f)
    below = f0 - (down * np.tanh((f0 - f) / (k * down)) if down > 0 else 0.0 * f)
    return np.where(f >= f0, above, below)


def set_mouth_ratio(points: np.ndarray, ratio: float) -> np.ndarray:
    """points [478, 3] with LOWER_MOUTH moved along the 13 -> 14 direction (x, y) so that the mouth ratio
    |13-14| / inter-ocular becomes `ratio` (>= 0)."""
    out = np.array(points, np.float64)
    gap = out[14, :2] - out[13, :2]
    length = float(np.linalg.norm(gap))
    if length < 1e-9:
        return out
    iod = max(float(np.linalg.norm(out[list(RIGHT_EYE_CORNERS), :2].mean(0) - out[list(LEFT_EYE_CORNERS), :2].mean(0))),
              1e-6)
    shift = (max(ratio, 0.0) * iod - length) * gap / length
    out[list(LOWER_MOUTH), :2] += shift
    return out


def choose_reference(anchor_points: np.ndarray, driver: np.ndarray, mode: str = "matched") -> int:
    """Index of the person's anchor [N, 478, 3] used as person_reference for the driver's reference frame.

    matched: the smallest (rotation of the similarity anchor -> driver on the rigid points / 5 deg)^2 +
    (mouth-opening difference / 0.05)^2 + (eye-opening differences / 0.05)^2.
    neutral: the anchor of the smallest rotation from the mean anchor pose plus mouth opening (the anchor
    nearest to frontal with a closed mouth), ignoring the driver."""
    if mode not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {mode!r}")
    anchors = np.asarray(anchor_points, np.float64)
    rigid = list(RIGID)
    feats = expression_features(anchors)
    if mode == "matched":
        goal = driver
        weights = np.array([1.0 / MOUTH_SCALE, 1.0 / EYE_SCALE, 1.0 / EYE_SCALE])
        expr = (((feats - expression_features(driver)) * weights) ** 2).sum(-1)
    else:
        goal = anchors.mean(0)
        expr = (feats[:, 0] / MOUTH_SCALE) ** 2
    angles = np.array([rotation_degrees(similarity(a[rigid], goal[rigid])[1]) for a in anchors])
    return int(np.argmin((angles / POSE_SCALE_DEG) ** 2 + expr))


class Retargeter:
    """Streaming relative-motion retargeting (module docstring) of driving keypoints [478, 3] at R onto the
    person whose anchor keypoints are `anchor_points` [N, 478, 3] at R.

    `__call__(points)` returns the target [478, 3] (float64) or None for a frame without a face (points
    None). The first face frame sets the references; `reset()` forgets them (a new stream)."""

    def __init__(self, anchor_points, reference: str = "matched", pose: str = "driver",
                 opening_range: float = 0.0) -> None:
        pts = np.asarray(anchor_points.detach().cpu() if hasattr(anchor_points, "detach") else anchor_points,
                         np.float64)
        if pts.ndim != 3 or pts.shape[1:] != (NUM_POINTS, 3) or len(pts) == 0:
            raise ValueError(f"anchor_points must be [N, {NUM_POINTS}, 3], got {list(pts.shape)}")
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
        if pose not in POSES:
            raise ValueError(f"pose must be one of {POSES}, got {pose!r}")
        if not (np.isfinite(opening_range) and 0.0 <= opening_range <= MAX_OPENING_RANGE):
            raise ValueError(f"opening_range must be in [0, {MAX_OPENING_RANGE:g}], got {opening_range!r}")
        self.anchor_points, self.reference, self.pose = pts, reference, pose
        self.opening_range = float(opening_range)
        mouth = expression_features(pts)[:, 0]
        self.mouth_range = (float(mouth.min()), float(mouth.max()))  # the scan's mouth ratios [lo, hi]
        self.reset()

    def reset(self) -> None:
        self.driver_reference: np.ndarray | None = None
        self.person_reference: np.ndarray | None = None
        self.reference_anchor: int | None = None
        self._to_person = None                 # A: similarity driver_reference -> person_reference
        self._gain: np.ndarray | None = None   # [478] per-point scale of the local deformation (k_part)

    def __call__(self, points: np.ndarray | None) -> np.ndarray | None:
        if points is None:
            return None
        d = np.asarray(points, np.float64)
        if d.shape != (NUM_POINTS, 3):
            raise ValueError(f"points must be [{NUM_POINTS}, 3], got {list(d.shape)}")
        if self.driver_reference is None:
            self._set_references(d)
        rigid = list(RIGID)
        d0, p0 = self.driver_reference, self.person_reference
        head = similarity(d0[rigid], d[rigid])                       # T_t: D0 -> driver_t
        delta = apply(invert(head), d) - d0                          # non-rigid motion in the reference pose
        s_a, rot_a, _ = self._to_person
        moved = p0 + self._gain[:, None] * (delta @ rot_a.T)         # Q = P0 + k R_A delta
        if self.opening_range > 0:
            f = float(expression_features(moved)[0])
            f0 = float(expression_features(p0)[0])
            moved = set_mouth_ratio(moved, float(soft_range(f, f0, *self.mouth_range, self.opening_range)))
        if self.pose == "relative":
            motion = _compose(self._to_person, _compose(head, invert(self._to_person)))  # A T_t A^-1
        else:
            motion = _compose(head, invert(self._to_person))  # T_t A^-1: onto the driver's head pose
        return apply(motion, moved)

    def _set_references(self, d: np.ndarray) -> None:
        k = choose_reference(self.anchor_points, d, self.reference)
        p0 = self.anchor_points[k]
        self.driver_reference, self.person_reference, self.reference_anchor = d.copy(), p0.copy(), k
        rigid = list(RIGID)
        self._to_person = similarity(d[rigid], p0[rigid])
        s_a = self._to_person[0]
        gain = np.full(NUM_POINTS, s_a)
        lo, hi = PART_RATIO_CLAMP
        for idx, (i, j) in PARTS.values():
            ratio = float(_dist(p0, i, j) / max(float(_dist(d, i, j)), 1e-6))
            gain[list(idx)] = s_a * float(np.clip(ratio / s_a, lo, hi))
        self._gain = gain


def _compose(f, g):
    """The similarity f o g (g first)."""
    s1, r1, t1 = f
    s2, r2, t2 = g
    return s1 * s2, r1 @ r2, s1 * r1 @ t2 + t1
