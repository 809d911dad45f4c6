"""Reenactment loss terms (METHOD.md section 7), every one per frame ([B] tensors).

    L = keypoint_weight * (L_kp + opening_weight * L_open) + mouth_weight * L_mouth + eye_weight * L_eye
        + L_delta + L_sum

L_kp compares per-part features (keypoints.part_features) of the MediaPipe points of the generated frame
with the driving keypoints, all in aligned-crop pixels at the generator resolution R, normalized by the
driving inter-ocular distance and scaled by KP_SCALE (a 5% error of every point gives about 0.25+,
the size of a perceptual loss, so it meets the P+ regularizers on MyStyle's terms). z counts Z_WEIGHT.
L_mouth / L_eye: mean squared pixel difference ([-1, 1] values) between the generated frame and the
driving crop inside feathered masks built from the DRIVING keypoints (inner lip ring; iris circles).
L_delta, L_sum: PPlus regularizers with METHOD.md section 6 weights.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from reenact.mpdiff import crop as mpcrop

from .keypoints import LEFT_IRIS, LIPS_INNER, RIGHT_IRIS, KeypointSubset, inter_ocular, part_features

KP_SCALE = 100.0
CENTROID_WEIGHT = 1.0
SCALE_WEIGHT = 1.0
Z_WEIGHT = 0.25
IRIS_RADIUS_GROW = 1.2  # the iris mask circle: this times the mean centre-to-edge distance
SUPERSAMPLE = 4  # masks are rasterized at 4x and area-averaged (anti-aliased edges)


# ----------------------------------------------------------------------------------------------------
# Differentiable landmarks of generated frames


def face_affine(resolution: int, device=None) -> torch.Tensor:
    """The fixed face-mesh ROI of an aligned frame at `resolution` as an affine [1, 2, 3]."""
    return mpcrop.rect_to_affine(mpcrop.aligned_face_rect(resolution)).to(device)


def generated_keypoints(net, images: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """MediaPipe points [B, 478, 3] in frame pixels of generated frames [B, 3, R, R] in [-1, 1]."""
    x = mpcrop.crop_frame(images, affine)
    points, _ = net(x)
    return mpcrop.points_to_frame(points, affine.expand(images.shape[0], 2, 3))


# ----------------------------------------------------------------------------------------------------
# Keypoint loss


def keypoint_loss(points: torch.Tensor, target: torch.Tensor, subset: KeypointSubset) -> torch.Tensor:
    """Per-part normalized keypoint loss [...] between points [..., 478, 3] and target [..., 478, 3]."""
    ref = inter_ocular(target).clamp_min(1e-6)
    fp, ft = part_features(points, subset), part_features(target, subset)
    local = _weighted_sq(fp.local - ft.local).mean(-1)
    cent = _weighted_sq(fp.centroids - ft.centroids).mean(-1)
    scale = (fp.scale - ft.scale).square()
    return KP_SCALE * (local + CENTROID_WEIGHT * cent + SCALE_WEIGHT * scale) / ref.square()


def opening_ratios(points: torch.Tensor) -> torch.Tensor:
    """[..., 478, 3] -> [..., 3]: mouth opening (|13 - 14| / inter-ocular distance) and the right and left eye
    openings (lid gap 159-145 / 386-374 over eye width 33-133 / 362-263), x, y only: the ratios the
    evaluation correlates between driver and output (reenact.evaluation.metrics). Integer indexing only."""
    def dist(i: int, j: int) -> torch.Tensor:
        d = points[..., i, :2] - points[..., j, :2]
        return d.square().sum(-1).clamp_min(1e-12).sqrt()

    mouth = dist(13, 14) / inter_ocular(points).clamp_min(1e-6)
    right = dist(159, 145) / dist(33, 133).clamp_min(1e-6)
    left = dist(386, 374) / dist(362, 263).clamp_min(1e-6)
    return torch.stack([mouth, right, left], -1)


def opening_loss(points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_open [...]: KP_SCALE x the squared differences of the three opening ratios (opening_ratios) of
    points and target. The per-part keypoint loss sees a mouth opening only as two of its 70 points moving;
    this term weighs the opening itself (what "the expression follows the driver" means to a viewer)."""
    return KP_SCALE * (opening_ratios(points) - opening_ratios(target)).square().sum(-1)


def _weighted_sq(d: torch.Tensor) -> torch.Tensor:
    """Squared length of [..., 3] differences with z counted Z_WEIGHT (no constant copied from the host)."""
    return d[..., :2].square().sum(-1) + (d[..., 2] * Z_WEIGHT).square()


# ----------------------------------------------------------------------------------------------------
# Masks (from the driving keypoints, no gradient)


def _feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return mask
    return cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)


def _rasterize(draw, resolution: int) -> np.ndarray:
    """Draw at SUPERSAMPLE x with `draw(canvas, scale)`, area-average to [R, R] float32 in [0, 1]."""
    big = np.zeros((resolution * SUPERSAMPLE, resolution * SUPERSAMPLE), np.float32)
    draw(big, SUPERSAMPLE)
    return cv2.resize(big, (resolution, resolution), interpolation=cv2.INTER_AREA)


def mouth_mask(points: np.ndarray, resolution: int, feather: float) -> np.ndarray:
    """Feathered mask [R, R] of the inner lip ring polygon (the mouth cavity) of points [478, 3]."""
    ring = np.asarray(points, np.float64)[list(LIPS_INNER), :2]

    def draw(canvas, s):
        cv2.fillPoly(canvas, [np.round(ring * s).astype(np.int32)], 1.0, cv2.LINE_8)

    return _feather(_rasterize(draw, resolution), feather)


def iris_mask(points: np.ndarray, resolution: int, feather: float) -> np.ndarray:
    """Feathered mask [R, R] of the two iris circles (centre, radius from the four edge points)."""
    p = np.asarray(points, np.float64)[:, :2]

    def draw(canvas, s):
        for iris in (RIGHT_IRIS, LEFT_IRIS):
            centre = p[iris[0]]
            radius = IRIS_RADIUS_GROW * np.linalg.norm(p[list(iris[1:])] - centre, axis=1).mean()
            cv2.circle(canvas, tuple(int(v) for v in np.round(centre * s)), max(int(round(radius * s)), 1),
                       1.0, -1, cv2.LINE_8)

    return _feather(_rasterize(draw, resolution), feather)


def default_feather(resolution: int) -> float:
    return max(0.75, resolution / 128.0)


def region_masks(points: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(mouth, iris) masks [R, R] of one frame's driving keypoints (at R)."""
    f = default_feather(resolution)
    return mouth_mask(points, resolution, f), iris_mask(points, resolution, f)


def crop_to_tensor(crop: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 [S, S, 3] aligned crop -> float [3, R, R] in [-1, 1] (area resampling when shrinking)."""
    if crop.shape[0] != resolution:
        interp = cv2.INTER_AREA if crop.shape[0] > resolution else cv2.INTER_LINEAR
        crop = cv2.resize(np.ascontiguousarray(crop), (resolution, resolution), interpolation=interp)
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() / 127.5 - 1.0


def masked_l2(images: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean squared difference inside soft masks: images/targets [B, 3, R, R], masks [B, R, R] -> [B].
    A frame with an empty mask (closed mouth) gives 0."""
    m = masks.unsqueeze(1).to(images.dtype)
    err = ((images - targets).square() * m).sum((1, 2, 3))
    return err / (3.0 * m.sum((1, 2, 3)) + 1e-6)
