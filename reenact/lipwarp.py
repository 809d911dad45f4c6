"""Residual lip warp: the last few pixels of lip shape that the personalized generator does not draw.

The personalized generator draws the lip shapes its self-scan showed; a driver of another person asks for
others (a rounded "o", a pucker), and the optimizer's lips end about as far from their target as the scan's
own expressions (docs/RESULTS.md, eighth session). This module moves the rendered lips the rest of the way
with a small, smooth 2-D warp of the lip region only:

- `lip_shift(out_points, target_points, gain)`: where the rendered frame's 40 lip points are (`src`, from the
  landmark model run on the rendered frame) and where the warp moves them (`dst`): the target's lip SHAPE
  (its points minus their centroid, scaled by the ratio of the two faces' eye distances) placed at the
  rendered lips' own centroid, reached by the fraction `gain`. Only the shape changes; where the mouth sits
  is the generator's (head pose and identity stay its own).
- `warp_lips(image, src, dst)`: a backward warp whose displacement field is a Gaussian radial-basis
  interpolation of the 40 point displacements (width `WIDTH` x the mouth width, ridge `RIDGE`): smooth, so no
  triangle folds or tears, and it fades to zero a few widths from the lips (eyes, nose and face outline do
  not move).

Both are numpy + OpenCV, so the gateway applies the warp to the frames Triton renders without torch; the
optimizer engine (`OptimizerOptions.lip_warp`) computes `src` and `dst` at the latent it returns.
"""

from __future__ import annotations

import numpy as np

from reenact.evaluation.metrics import LIPS, inter_ocular  # numpy only: the gateway may import it

# MediaPipe indices: outer lip ring (20), then the inner ring (20): the evaluation's lip points.
LIP_POINTS = LIPS
NUM_LIP_POINTS = len(LIP_POINTS)
_MOUTH_CORNERS = (0, 10)  # positions of 61 and 291 in LIP_POINTS
WIDTH = 0.2    # Gaussian width of the displacement field, in mouth widths (about 0.2 eye distances)
RIDGE = 0.05   # ridge of the interpolation: close inner/outer points with opposite moves stay smooth
MAX_GAIN = 1.0


def eye_distance(points: np.ndarray) -> float:
    """2-D distance between the eye centres of one face's points [478, >=2], as the evaluation measures it."""
    return float(inter_ocular(np.asarray(points, np.float64)[None])[0])


def lip_shift(out_points: np.ndarray, target_points: np.ndarray, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst), float32 [40, 2] each: the rendered lips and where `warp_lips` moves them (module doc).

    out_points: the rendered frame's landmarks [478, >=2]; target_points: what the optimizer aimed at
    [478, >=2], in the same pixels."""
    if not (np.isfinite(gain) and 0.0 <= gain <= MAX_GAIN):
        raise ValueError(f"gain must be in [0, {MAX_GAIN:g}], got {gain!r}")
    out = np.asarray(out_points, np.float64)
    tgt = np.asarray(target_points, np.float64)
    src, t = out[list(LIP_POINTS), :2], tgt[list(LIP_POINTS), :2]
    t_eyes = eye_distance(tgt)
    scale = eye_distance(out) / t_eyes if t_eyes > 0 else 1.0
    want = src.mean(0) + (t - t.mean(0)) * scale
    dst = src + gain * (want - src)
    return src.astype(np.float32), dst.astype(np.float32)


def warp_lips(image: np.ndarray, src: np.ndarray, dst: np.ndarray, *, scale: float = 1.0) -> np.ndarray:
    """`image` [H, W, 3] uint8 with the lip points moved from `src` to `dst` ([40, 2] pixels of a frame
    `scale` times smaller than `image`: the points are multiplied by it). A new array; `image` when nothing
    moves."""
    src = np.asarray(src, np.float64) * scale
    dst = np.asarray(dst, np.float64) * scale
    if src.shape != (NUM_LIP_POINTS, 2) or dst.shape != (NUM_LIP_POINTS, 2):
        raise ValueError(f"src and dst must be [{NUM_LIP_POINTS}, 2], got {list(src.shape)} and {list(dst.shape)}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("src and dst must be finite")
    move = dst - src
    if not np.any(move):
        return image
    import cv2

    a, b = _MOUTH_CORNERS
    s = max(WIDTH * float(np.linalg.norm(src[a] - src[b])), 1.0)
    kernel = np.exp(-((dst[:, None] - dst[None]) ** 2).sum(-1) / (2 * s * s))
    # backward field: an output pixel at dst_i samples the image at src_i (= dst_i - move_i)
    coef = np.linalg.solve(kernel + RIDGE * np.eye(len(dst)), -move)
    h, w = image.shape[:2]
    reach = 5.0 * s + float(np.abs(move).max())
    x0, y0 = (max(int(np.floor(v - reach)), 0) for v in dst.min(0))
    x1, y1 = int(min(np.ceil(dst[:, 0].max() + reach), w)), int(min(np.ceil(dst[:, 1].max() + reach), h))
    out = np.array(image, copy=True)
    if x1 <= x0 or y1 <= y0:
        return out
    # the Gaussian is separable: field[y, x] = sum_i gy_i(y) coef_i gx_i(x), two small exps and a matrix product
    xs, ys = np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64)
    gx = np.exp(-((xs[None] + 0.5 - dst[:, :1]) ** 2) / (2 * s * s))   # [40, W']
    gy = np.exp(-((ys[None] + 0.5 - dst[:, 1:]) ** 2) / (2 * s * s))   # [40, H']
    field = np.stack([gy.T @ (coef[:, k:k + 1] * gx) for k in range(2)], axis=-1)  # [H', W', 2]
    xs, ys = np.meshgrid(xs, ys)
    map_x = (xs + field[..., 0]).astype(np.float32)
    map_y = (ys + field[..., 1]).astype(np.float32)
    out[y0:y1, x0:x1] = cv2.remap(np.ascontiguousarray(image), map_x, map_y, cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)
    return out
