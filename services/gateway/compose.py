"""Paste-back: the generated aligned face warped into the driving frame with the alignment's inverse map,
blended through a feathered mask (OpenCV, no grpc)."""

from __future__ import annotations

import numpy as np

FEATHER = 0.12  # width of the mask's soft edge as a fraction of the face crop side


def _three(m: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[:2] = m
    return out


def face_to_frame_matrix(crop_to_source: np.ndarray, crop_size: int, face_size: int) -> np.ndarray:
    """2x3 matrix for cv2.warpAffine (pixel-centre convention) mapping face pixels to frame pixels.

    `crop_to_source` maps aligned-crop pixels of `crop_size` to source pixels in the corner convention
    of common.v1.Affine2D (pixel centres at +0.5); the face is `face_size` square (the generator's output).
    """
    s = crop_size / face_size
    to_corner = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    to_centre = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    scale = np.diag([s, s, 1.0])
    return (to_centre @ _three(np.asarray(crop_to_source, np.float64)) @ scale @ to_corner)[:2]


def feather_mask(size: int, feather: float = FEATHER) -> np.ndarray:
    """float32 [size, size] in [0, 1]: 1 inside, ramping to 0 over `feather * size` pixels at the border."""
    ramp = max(1.0, feather * size)
    idx = np.arange(size, dtype=np.float32) + 0.5
    edge = np.minimum(idx, size - idx) / ramp
    d = np.minimum(edge[:, None], edge[None, :])
    return np.clip(d, 0.0, 1.0).astype(np.float32)


def paste_back(frame: np.ndarray, face: np.ndarray, crop_to_source: np.ndarray | None, crop_size: int,
               feather: float = FEATHER) -> np.ndarray:
    """The driving frame (uint8 [H, W, 3]) with `face` (uint8 [R, R, 3]) blended in; unchanged without affine."""
    import cv2

    if crop_to_source is None or not np.isfinite(crop_to_source).all():
        return frame.copy()
    h, w = frame.shape[:2]
    r = face.shape[0]
    m = face_to_frame_matrix(crop_to_source, crop_size, r)
    warped = cv2.warpAffine(face, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(feather_mask(r, feather), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    out = frame.astype(np.float32) * (1.0 - mask) + warped.astype(np.float32) * mask
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def lip_warped(image: np.ndarray, src: np.ndarray | None, dst: np.ndarray | None, resolution: int) -> np.ndarray:
    """`image` (a generated aligned face) with its residual lip warp applied (reenact.lipwarp): `src`/`dst`
    [40, 2] in pixels of the generator's `resolution`; unchanged for None or a NaN row (no warp stored)."""
    if src is None or dst is None or not (np.isfinite(src).all() and np.isfinite(dst).all()):
        return image
    from reenact.lipwarp import warp_lips

    return warp_lips(image, src, dst, scale=image.shape[0] / float(resolution))
