"""Evaluation metrics (METHOD.md section 9), pure numpy: every one defined where it is computed.

Landmarks are MediaPipe points [T, 478, 3] (x, y in pixels, z on the x scale, smaller = closer), one
array per sequence, with NaN rows for frames where no face was found. Such frames are never dropped
silently: each metric says how it treats them and the aggregates carry the counts.

- expression_error: per frame and part (lips, right eye, left eye), the mean 2-D distance between the
  driver's and the output's part points after removing each part's centroid and dividing by each face's
  own inter-ocular distance (so faces of different size, place and identity compare); then the mean
  over the three parts ("expression").
- ratio_correlation: Pearson correlation over time of an attribute ratio (mouth_open, eye_open) of the
  driver and the output, on the frames where both have a face (NaN when fewer than 3 such frames or a
  series is constant).
- head_pose: yaw, pitch, roll (degrees, reenact.face.attributes conventions) of the rotation that best
  maps a canonical frontal face onto the 468 mesh points (Kabsch after removing translation and scale);
  pose_error = |driver - output| per angle.
- jitter: mean over frames t (all of t-1, t, t+1 with a face) and points of |k_{t+1} - 2 k_t + k_{t-1}|
  (2-D), in units of the sequence's median inter-ocular distance; jitter_ratio = output / driver.
- keypoint_error: mean 2-D distance over the 70-point default subset / the reference's inter-ocular
  distance (as the optimizer reports it), against ground truth landmarks when the driver has them.
- psnr: reenact.metrics.identity.psnr on uint8 frames.
"""

from __future__ import annotations

import math

import numpy as np

# MediaPipe indices. Eyes: the 16-point contours; lips: outer + inner rings (reenact.optimize.keypoints).
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
        78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
EXPRESSION_PARTS = {"lips": LIPS, "right_eye": RIGHT_EYE, "left_eye": LEFT_EYE}
# Eye centres as in reenact.face.align (six-point contours).
_RIGHT_EYE_CENTRE = (33, 160, 158, 133, 153, 144)
_LEFT_EYE_CENTRE = (362, 385, 387, 263, 373, 380)
DEFAULT_SUBSET = (234, 93, 132, 58, 172, 136, 150, 149, 152, 378, 379, 365, 397, 288, 361, 323, 454,
                  168, 197, 5, 4, 98, 97, 2, 326, 327, 70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
                  33, 160, 158, 133, 153, 144, 468, 362, 385, 387, 263, 373, 380, 473,
                  61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91, 78, 81, 13, 311, 308, 402, 14, 178)


def has_face(points: np.ndarray) -> np.ndarray:
    """[T] bool: frames whose points are all finite."""
    p = np.asarray(points, np.float64)
    return np.isfinite(p.reshape(len(p), -1)).all(axis=1)


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """[T] 2-D distance between the eye centres (NaN without a face)."""
    p = np.asarray(points, np.float64)
    r = p[:, list(_RIGHT_EYE_CENTRE), :2].mean(axis=1)
    left = p[:, list(_LEFT_EYE_CENTRE), :2].mean(axis=1)
    return np.linalg.norm(left - r, axis=1)


def expression_error(driver: np.ndarray, output: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame [T] error of each part and their mean ("expression"); NaN where either has no face."""
    d, o = np.asarray(driver, np.float64), np.asarray(output, np.float64)
    return _part_errors(d, o, EXPRESSION_PARTS, inter_ocular(d), inter_ocular(o))


def _part_errors(d: np.ndarray, o: np.ndarray, parts: dict, iod_d: np.ndarray, iod_o: np.ndarray) -> dict:
    """Per part: mean 2-D distance between the driver's and the output's part points [T, K, >= 2], each
    centred on its part and divided by its face's inter-ocular distance; "expression": the parts' mean."""
    out = {}
    for name, idx in parts.items():
        pd = d[:, list(idx), :2]
        po = o[:, list(idx), :2]
        pd = (pd - pd.mean(axis=1, keepdims=True)) / iod_d[:, None, None]
        po = (po - po.mean(axis=1, keepdims=True)) / iod_o[:, None, None]
        out[name] = np.linalg.norm(pd - po, axis=2).mean(axis=1)
    out["expression"] = np.mean([out[k] for k in parts], axis=0)
    return out


# dlib's 68-point layout (iBUG 300-W, 0-based): the second-opinion landmarks (reenact.metrics.identity.Landmarks68)
LIPS_68 = tuple(range(48, 68))
RIGHT_EYE_68 = tuple(range(36, 42))   # subject's right eye (image left), like MediaPipe's RIGHT_EYE
LEFT_EYE_68 = tuple(range(42, 48))
EXPRESSION_PARTS_68 = {"lips": LIPS_68, "right_eye": RIGHT_EYE_68, "left_eye": LEFT_EYE_68}


def _iod_68(p: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p[:, list(LEFT_EYE_68)].mean(axis=1) - p[:, list(RIGHT_EYE_68)].mean(axis=1), axis=1)


def expression_error_68(driver: np.ndarray, output: np.ndarray) -> dict[str, np.ndarray]:
    """expression_error on dlib 68-point landmarks [T, 68, 2] (lips 20 points, eyes 6 + 6), each face's
    parts centred and divided by its own inter-ocular distance; NaN where either has no face."""
    d, o = np.asarray(driver, np.float64), np.asarray(output, np.float64)
    return _part_errors(d, o, EXPRESSION_PARTS_68, _iod_68(d), _iod_68(o))


def ratio_series_68(points: np.ndarray) -> dict[str, np.ndarray]:
    """[T] mouth_open (inner-lip gap 62-66 / inter-ocular) and eye_open (eye aspect ratio
    (|37-41| + |38-40|) / (2 |36-39|), mean of both eyes) on dlib 68-point landmarks [T, 68, 2]."""
    p = np.asarray(points, np.float64)

    def dist(a, b):
        return np.linalg.norm(p[:, a] - p[:, b], axis=1)

    mouth = dist(62, 66) / _iod_68(p)
    right = (dist(37, 41) + dist(38, 40)) / (2 * dist(36, 39))
    left = (dist(43, 47) + dist(44, 46)) / (2 * dist(42, 45))
    return {"mouth_open": mouth, "eye_open": 0.5 * (right + left)}


def ratio_series(points: np.ndarray) -> dict[str, np.ndarray]:
    """[T] mouth_open and eye_open (mean of both eyes) ratios (reenact.face.attributes), NaN without a face."""
    p = np.asarray(points, np.float64)

    def dist(a, b):
        return np.linalg.norm(p[:, a] - p[:, b], axis=1)

    r_c = p[:, list(_RIGHT_EYE_CENTRE)].mean(axis=1)
    l_c = p[:, list(_LEFT_EYE_CENTRE)].mean(axis=1)
    iod = np.linalg.norm(l_c - r_c, axis=1)
    mouth = dist(13, 14) / iod
    eye = 0.5 * (dist(159, 145) / dist(33, 133) + dist(386, 374) / dist(362, 263))
    return {"mouth_open": mouth, "eye_open": eye}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the frames where both are finite (NaN: < 3 frames or a constant series)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / den) if den > 1e-12 else float("nan")


# ---------------------------------------------------------------------------------------------- pose

def _camera(points: np.ndarray) -> np.ndarray:
    """Image axes (x right, y down, z away) -> camera axes (x right, y up, z towards the viewer)."""
    return np.asarray(points, np.float64)[..., :468, :] * np.array([1.0, -1.0, -1.0])


def canonical_face(points: np.ndarray) -> np.ndarray:
    """A frontal, left-right symmetric canonical face [468, 3] in camera axes, unit RMS size, centred,
    from one face's points (image axes): rotated by the inverse of its head rotation
    (reenact.face.attributes.head_rotation) and averaged with its own mirror image (MESH_MIRROR)."""
    from reenact.face.attributes import MESH_MIRROR, head_rotation

    r = head_rotation(points)
    p = _camera(points)
    p = (p - p.mean(axis=0)) @ r  # coordinates along the head's own axes
    mirrored = p[list(MESH_MIRROR)] * np.array([-1.0, 1.0, 1.0])
    p = 0.5 * (p + mirrored)
    p -= p.mean(axis=0)
    return p / np.sqrt((p**2).sum(axis=1).mean())


def kabsch(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation R [3, 3] (det +1) minimizing sum |R s_i - t_i|^2 over centred, scale-normalized sets."""
    s = source - source.mean(axis=0)
    t = target - target.mean(axis=0)
    u, _, vt = np.linalg.svd(t.T @ s)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def head_pose(points: np.ndarray, canonical: np.ndarray) -> np.ndarray:
    """[T, 3] (yaw, pitch, roll) in degrees of each frame's rigid fit to `canonical`; NaN without a face."""
    from reenact.face.attributes import rotation_to_angles

    p = np.asarray(points, np.float64)
    out = np.full((len(p), 3), np.nan)
    for i, ok in enumerate(has_face(p)):
        if ok:
            out[i] = rotation_to_angles(kabsch(canonical, _camera(p[i])))
    return out


def pose_error(driver_pose: np.ndarray, output_pose: np.ndarray) -> np.ndarray:
    """[T, 3] absolute angle differences in degrees (wrapped to [0, 180])."""
    d = np.abs(np.asarray(driver_pose) - np.asarray(output_pose)) % 360.0
    return np.minimum(d, 360.0 - d)


# ------------------------------------------------------------------------------------------- temporal

def jitter(points: np.ndarray) -> float:
    """Mean |k_{t+1} - 2 k_t + k_{t-1}| (2-D) over points and complete triples, / median inter-ocular
    distance; NaN with no complete triple."""
    p = np.asarray(points, np.float64)[:, :, :2]
    face = has_face(points)
    ok = face[:-2] & face[1:-1] & face[2:]
    if len(p) < 3 or not ok.any():
        return float("nan")
    second = p[2:] - 2 * p[1:-1] + p[:-2]
    value = np.linalg.norm(second[ok], axis=2).mean()
    return float(value / np.nanmedian(inter_ocular(points)[face]))


def jitter_ratio(driver: np.ndarray, output: np.ndarray) -> float:
    d = jitter(driver)
    o = jitter(output)
    return float(o / d) if d > 0 else float("nan")


def keypoint_error(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """[T] mean 2-D distance over DEFAULT_SUBSET / the reference's inter-ocular distance (same pixels)."""
    p, r = np.asarray(points, np.float64), np.asarray(reference, np.float64)
    idx = list(DEFAULT_SUBSET)
    return np.linalg.norm(p[:, idx, :2] - r[:, idx, :2], axis=2).mean(axis=1) / inter_ocular(r)


def psnr_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from reenact.metrics.identity import psnr

    return np.array([psnr(x, y) for x, y in zip(a, b, strict=True)])


# ------------------------------------------------------------------------------------------ aggregate

def summary(values: np.ndarray) -> dict[str, float | int]:
    """mean / median / p95 over the finite values, and how many were finite of how many."""
    v = np.asarray(values, np.float64).ravel()
    f = v[np.isfinite(v)]
    if not len(f):
        return {"mean": float("nan"), "median": float("nan"), "p95": float("nan"), "count": 0, "of": int(len(v))}
    return {"mean": float(f.mean()), "median": float(np.median(f)), "p95": float(np.percentile(f, 95)),
            "count": int(len(f)), "of": int(len(v))}


def nan_to_none(obj):
    """JSON-safe copy: NaN / inf -> None, numpy scalars and arrays -> Python values."""
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [nan_to_none(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return nan_to_none(obj.tolist())
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj
