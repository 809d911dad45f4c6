"""Differentiable crop from an aligned frame to the 192x192 face-mesh input, and back.

Geometry follows MediaPipe's face mesh (``ImageToTensorCalculator`` + ``LandmarkProjectionCalculator``):
a crop is a rotated rectangle ``rect = (cx, cy, w, h, angle)`` in frame **pixels** (pixel centres at
integer coordinates, x right, y down, angle in radians, positive = clockwise on screen, as in
MediaPipe's ``NormalizedRect.rotation``). One affine map ``A`` (2x3) takes crop coordinates (u, v),
u, v in [0, 192], to frame pixel coordinates::

    p = c + R(angle) @ ((u / 192 - 1/2) * w, (v / 192 - 1/2) * h)

Crop pixel (row i, column j) samples the frame at ``A @ (j, i, 1)`` (bilinear; outside the frame the
border is replicated, like MediaPipe's BORDER_REPLICATE), and a network output point (u, v) in
192-crop pixels maps back to the frame by the same ``A``. This is MediaPipe's convention, so points
agree with ``mp.solutions.face_mesh`` when the ROI is the same (see tests).

Frames: float ``[B, 3, H, W]`` RGB; ``value_range=(-1, 1)`` (default, a StyleGAN generator's output)
or ``(0, 1)``; converted to [0, 1] for the network. Nothing is clamped (to keep gradients), pass
``clamp=True`` to clamp to [0, 1] after conversion.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "INPUT_SIZE",
    "rect_to_affine",
    "invert_affine",
    "crop_frame",
    "points_to_frame",
    "points_to_crop",
    "roi_from_landmarks",
    "aligned_face_rect",
    "normalized_rect_to_pixels",
]

INPUT_SIZE = 192


def _batch_rect(rect: torch.Tensor | Sequence[float], device=None, dtype=None) -> torch.Tensor:
    r = torch.as_tensor(rect, dtype=dtype or torch.float32, device=device)
    if r.dim() == 1:
        r = r[None]
    if r.shape[-1] != 5:
        raise ValueError("rect must be (cx, cy, w, h, angle) per sample")
    return r


def rect_to_affine(rect: torch.Tensor | Sequence[float], size: int = INPUT_SIZE) -> torch.Tensor:
    """Rotated rect(s) [B, 5] = (cx, cy, w, h, angle) in frame pixels -> affine [B, 2, 3] mapping crop
    coordinates (u, v) in [0, size] to frame pixels. Differentiable in ``rect``."""
    r = _batch_rect(rect)
    cx, cy, w, h, a = r.unbind(-1)
    c, s = torch.cos(a), torch.sin(a)
    sx, sy = w / size, h / size
    m00, m01 = c * sx, -s * sy
    m10, m11 = s * sx, c * sy
    half = size / 2.0
    tx = cx - (m00 + m01) * half
    ty = cy - (m10 + m11) * half
    return torch.stack([torch.stack([m00, m01, tx], -1), torch.stack([m10, m11, ty], -1)], 1)


def invert_affine(affine: torch.Tensor) -> torch.Tensor:
    """Inverse of a batch of 2x3 affine maps."""
    m = affine[..., :2]
    t = affine[..., 2:]
    mi = torch.linalg.inv(m)
    return torch.cat([mi, -mi @ t], -1)


def crop_frame(
    frame: torch.Tensor,
    affine: torch.Tensor,
    size: int = INPUT_SIZE,
    value_range: tuple[float, float] = (-1.0, 1.0),
    padding_mode: str = "border",
    clamp: bool = False,
) -> torch.Tensor:
    """Sample the network input [B, 3, size, size] in [0, 1] from ``frame`` [B, 3, H, W].

    ``affine`` [B, 2, 3] (or [2, 3]) maps crop coordinates to frame pixels (see :func:`rect_to_affine`).
    Differentiable w.r.t. ``frame`` and ``affine`` (bilinear ``grid_sample``)."""
    if frame.dim() != 4:
        raise ValueError("frame must be [B, C, H, W]")
    b, _, hgt, wid = frame.shape
    a = affine.to(frame.dtype)
    if a.dim() == 2:
        a = a[None]
    if a.shape[0] == 1 and b > 1:
        a = a.expand(b, 2, 3)
    lo, hi = value_range
    x = (frame - lo) / (hi - lo) if (lo, hi) != (0.0, 1.0) else frame
    if clamp:
        x = x.clamp(0.0, 1.0)
    idx = torch.arange(size, device=frame.device, dtype=frame.dtype)
    gy, gx = torch.meshgrid(idx, idx, indexing="ij")
    ones = torch.ones_like(gx)
    uv1 = torch.stack([gx, gy, ones], -1).reshape(1, -1, 3)  # [1, S*S, 3]
    p = uv1 @ a.transpose(1, 2)  # [B, S*S, 2] frame pixel coords
    # align_corners=True: normalized -1 / +1 are the centres of the first / last pixel
    gxn = p[..., 0] * (2.0 / max(wid - 1, 1)) - 1.0
    gyn = p[..., 1] * (2.0 / max(hgt - 1, 1)) - 1.0
    grid = torch.stack([gxn, gyn], -1).reshape(b, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def points_to_frame(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Crop points [B, K, 2|3] (192-crop pixels) -> frame pixels. z (if present) is scaled by the
    crop's scale (sqrt|det|), like MediaPipe scales z by the ROI width."""
    a = affine if affine.dim() == 3 else affine[None]
    xy = points[..., :2] @ a[..., :2].transpose(1, 2) + a[..., 2][:, None, :]
    if points.shape[-1] == 2:
        return xy
    det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]  # 2x2 by hand: no solver call (CUDA graphs)
    scale = torch.sqrt(torch.abs(det))[:, None, None]
    return torch.cat([xy, points[..., 2:] * scale], -1)


def points_to_crop(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`points_to_frame`."""
    return points_to_frame(points, invert_affine(affine if affine.dim() == 3 else affine[None]))


def _normalize_radians(a: torch.Tensor) -> torch.Tensor:
    return a - 2 * torch.pi * torch.floor((a + torch.pi) / (2 * torch.pi))


def roi_from_landmarks(
    points: torch.Tensor,
    scale: float = 1.5,
    rotation_idx: tuple[int, int] = (33, 263),
    target_angle: float = 0.0,
    square: bool = True,
) -> torch.Tensor:
    """MediaPipe face-mesh ROI from landmarks in frame pixels [B, K, >=2] -> rect [B, 5].

    Recipe (``FaceLandmarkLandmarksToRoi``): axis-aligned bounding box of all landmarks -> centre and
    size; rotation = target - atan2(-(y1 - y0), x1 - x0) from landmark ``rotation_idx`` (outer eye
    corners 33 -> 263); scaled by ``scale`` (1.5), made square on the longer side.
    Differentiable (min/max subgradients); detach it to keep the crop fixed during optimization."""
    xy = points[..., :2]
    lo = xy.amin(1)
    hi = xy.amax(1)
    centre = (lo + hi) / 2
    size = (hi - lo) * scale
    p0 = xy[:, rotation_idx[0]]
    p1 = xy[:, rotation_idx[1]]
    angle = _normalize_radians(target_angle - torch.atan2(-(p1[:, 1] - p0[:, 1]), p1[:, 0] - p0[:, 0]))
    if square:
        side = size.amax(-1)
        w = h = side
    else:
        w, h = size[:, 0], size[:, 1]
    return torch.stack([centre[:, 0], centre[:, 1], w, h, angle], -1)


# Measured on FFHQ-style aligned frames (METHOD.md section 4 recipe driven by MediaPipe landmarks)
# of the astronaut and Grace Hopper photographs and their mirror images: the face-mesh ROI
# (roi_from_landmarks on the aligned frame) has centre (0.486..0.503 N, 0.599..0.603 N),
# side 0.886..0.956 N, angle |a| < 0.013 rad. Prefer roi_from_landmarks of the driving frame when
# landmarks are available; this fixed box is the fallback.
ALIGNED_CENTER = (0.5, 0.60)
ALIGNED_SIDE = 0.92


def aligned_face_rect(
    height: int,
    width: int | None = None,
    center: tuple[float, float] = ALIGNED_CENTER,
    side: float = ALIGNED_SIDE,
) -> torch.Tensor:
    """A fixed ROI [1, 5] for FFHQ-style aligned frames: centre and side as fractions of the frame
    size (pixel coordinates with centres at integers: the frame spans [-0.5, N - 0.5])."""
    width = height if width is None else width
    cx = center[0] * width - 0.5
    cy = center[1] * height - 0.5
    s = side * min(width, height)
    return torch.tensor([[cx, cy, s, s, 0.0]], dtype=torch.float32)


def normalized_rect_to_pixels(rect, height: int, width: int) -> torch.Tensor:
    """A MediaPipe ``NormalizedRect`` (proto, or (x_center, y_center, width, height, rotation)
    normalized by the image size) -> rect [1, 5] in pixels, MediaPipe's convention (x_norm * W)."""
    if hasattr(rect, "x_center"):
        vals = (rect.x_center, rect.y_center, rect.width, rect.height, rect.rotation)
    else:
        vals = tuple(float(v) for v in rect)
    xc, yc, w, h, a = vals
    return torch.tensor([[xc * width, yc * height, w * width, h * height, a]], dtype=torch.float32)
