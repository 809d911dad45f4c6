"""FFHQ alignment (METHOD.md section 4) from MediaPipe face-mesh points, and the crop it defines.

Landmarks: FFHQ's script averages dlib-68 eye contours (36..41 on the image left, 42..47 on the image
right) and takes the two outer mouth corners (48, 54). The MediaPipe points used here are the same
anatomical points: the six-point eye contours (corners + two upper + two lower lid points; the set
used for the eye aspect ratio) and the mouth corners 61/291. Eye CONTOURS, not iris centres: the iris
follows the gaze, the contour mean does not, and dlib (hence FFHQ's statistics) used contours.

Pixel convention (everywhere in reenact.face): continuous coordinates with the origin at the top-left
CORNER of the top-left pixel; pixel (i, j) covers [i, i+1) x [j, j+1) and its centre is (i+0.5, j+0.5).
MediaPipe's normalized coordinates times the image size are already in this convention. OpenCV's
warpAffine addresses pixel centres at integers; `affine_to_cv` converts, and every warp here goes
through it. A crop of size S covers [0, S) x [0, S): the quad corners map to the crop's outer corners
(0, 0), (0, S), (S, S), (S, 0), as in FFHQ's PIL QUAD transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# MediaPipe indices. "Right"/"left" are the SUBJECT's (MediaPipe's naming): in an unmirrored frontal
# photo the subject's right eye is on the image LEFT, i.e. it plays FFHQ's `eye_left` (dlib 36..41).
SUBJECT_RIGHT_EYE = (33, 160, 158, 133, 153, 144)  # outer corner, upper x2, inner corner, lower x2
SUBJECT_LEFT_EYE = (362, 385, 387, 263, 373, 380)  # inner corner, upper x2, outer corner, lower x2
MOUTH_CORNERS = (61, 291)  # outer lip corners: image left (dlib 48), image right (dlib 54)

BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT,
           "replicate": cv2.BORDER_REPLICATE}


@dataclass(frozen=True)
class Alignment:
    """FFHQ crop of one face: centre c, half-axes x (crop right) and y (crop down), source pixels.

    quad = [c-x-y, c-x+y, c+x+y, c+x-y] (top-left, bottom-left, bottom-right, top-right) maps onto the
    crop of `crop_size` x `crop_size` pixels.
    """

    center: np.ndarray
    x: np.ndarray
    y: np.ndarray
    crop_size: int = 256

    @property
    def quad(self) -> np.ndarray:
        c, x, y = self.center, self.x, self.y
        return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])

    @property
    def scale(self) -> float:
        """Source pixels per crop pixel."""
        return float(2.0 * np.hypot(*self.x) / self.crop_size)

    @property
    def crop_to_source(self) -> np.ndarray:
        """2x3 affine: crop pixel coordinates -> source pixel coordinates."""
        a = np.column_stack([self.x, self.y]) * (2.0 / self.crop_size)
        return np.column_stack([a, self.center - self.x - self.y])

    @property
    def source_to_crop(self) -> np.ndarray:
        """2x3 affine: source pixel coordinates -> crop pixel coordinates."""
        return invert_affine(self.crop_to_source)

    def with_crop_size(self, crop_size: int) -> Alignment:
        return Alignment(self.center, self.x, self.y, int(crop_size))

    def as_vector(self) -> np.ndarray:
        """[cx, cy, xx, xy, yx, yy] (what the temporal smoother averages)."""
        return np.concatenate([self.center, self.x, self.y]).astype(np.float64)

    @classmethod
    def from_vector(cls, v: np.ndarray, crop_size: int) -> Alignment:
        v = np.asarray(v, dtype=np.float64)
        return cls(v[0:2].copy(), v[2:4].copy(), v[4:6].copy(), int(crop_size))


def eye_mouth_points(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eye_left, eye_right, mouth_avg) in FFHQ's naming (image left/right), x, y only."""
    p = np.asarray(points, dtype=np.float64)[:, :2]
    eye_left = p[list(SUBJECT_RIGHT_EYE)].mean(axis=0)
    eye_right = p[list(SUBJECT_LEFT_EYE)].mean(axis=0)
    mouth_avg = p[list(MOUTH_CORNERS)].mean(axis=0)
    return eye_left, eye_right, mouth_avg


def ffhq_alignment(points: np.ndarray, crop_size: int = 256) -> Alignment:
    """The FFHQ quad of METHOD.md section 4 from MediaPipe points [>=468, 2 or 3] in source pixels."""
    eye_left, eye_right, mouth_avg = eye_mouth_points(points)
    eye_avg = 0.5 * (eye_left + eye_right)
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1.0, 1.0])
    x /= np.hypot(*x)
    x *= max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    y = np.flipud(x) * np.array([-1.0, 1.0])
    c = eye_avg + 0.1 * eye_to_mouth
    return Alignment(c, x, y, int(crop_size))


def _det2(a: np.ndarray) -> float:
    # closed form: numpy.linalg calls into LAPACK/BLAS, ~100x slower for 2x2 and slower still when
    # its threads compete with MediaPipe's
    return float(a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0])


def affine_scale(m: np.ndarray) -> float:
    """sqrt(|det A|) of a 2x3 affine [A | b]: its length scale."""
    return float(np.sqrt(abs(_det2(np.asarray(m, dtype=np.float64)))))


def invert_affine(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    det = _det2(m)
    if det == 0.0:
        raise ValueError("singular affine")
    a_inv = np.array([[m[1, 1], -m[0, 1]], [-m[1, 0], m[0, 0]]]) / det
    return np.column_stack([a_inv, -a_inv @ m[:, 2]])


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine of `outer(inner(p))`."""
    outer, inner = np.asarray(outer, np.float64), np.asarray(inner, np.float64)
    return np.column_stack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2] + outer[:, 2]])


def affine_to_cv(m: np.ndarray) -> np.ndarray:
    """Continuous (corner-origin) affine -> the same map between OpenCV pixel indices (centres at
    integers): idx_out = m(idx_in + 0.5) - 0.5."""
    m = np.asarray(m, dtype=np.float64)
    return np.column_stack([m[:, :2], m[:, :2] @ np.array([0.5, 0.5]) + m[:, 2] - 0.5])


def transform_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to points [N, 2] or [N, 3]; a third column (depth) is multiplied by the
    affine's scale sqrt(|det A|), so it stays in the units of x and y. Returns float32 [N, D]."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(affine, dtype=np.float64)
    out = np.empty(p.shape, dtype=np.float64)
    out[:, :2] = p[:, :2] @ m[:, :2].T + m[:, 2]
    if p.shape[1] > 2:
        out[:, 2:] = p[:, 2:] * affine_scale(m)
    return out.astype(np.float32)


def antialias_factor(scale: float) -> int:
    """Integer downscale applied before the bilinear warp so that it never shrinks by 2x or more
    (FFHQ shrinks by floor(scale / 2) for the same reason, then resamples at 4x; this is simpler)."""
    return int(np.floor(scale)) if scale >= 2.0 else 1


def _downscale(image: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-average downscale by about `factor`; returns (pixels, affine image -> small pixels)."""
    h, w = image.shape[:2]
    nw, nh = max(1, round(w / factor)), max(1, round(h / factor))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return small, np.array([[nw / w, 0.0, 0.0], [0.0, nh / h, 0.0]])


def warp_crop(image: np.ndarray, alignment: Alignment, size: int | None = None, *,
              source_to_image: np.ndarray | None = None, border: str = "reflect",
              antialias: bool = True) -> np.ndarray:
    """The aligned crop (size x size, default alignment.crop_size) of `image`, bilinear.

    source_to_image: where `image` is a region of the source frame (see `cut_region`), the affine from
      source to its pixel coordinates; identity by default.
    border: outside the image "reflect" (mirror without repeating the edge pixel, like FFHQ's
      np.pad(..., 'reflect'); FFHQ additionally blurs that padding), "constant" (black) or "replicate".
    antialias: area-downscale first when the crop shrinks the face by 2x or more.
    """
    size = int(size or alignment.crop_size)
    crop_to_image = alignment.with_crop_size(size).crop_to_source
    if source_to_image is not None:
        crop_to_image = compose_affine(source_to_image, crop_to_image)
    scale = affine_scale(crop_to_image)
    factor = antialias_factor(scale) if antialias else 1
    if factor > 1:
        image, to_small = _downscale(image, factor)
        crop_to_image = compose_affine(to_small, crop_to_image)
    return cv2.warpAffine(image, affine_to_cv(crop_to_image), (size, size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=BORDERS[border])


@dataclass(frozen=True)
class Region:
    """A part of a source frame kept for a later warp: pixels and the affine source -> pixels."""

    pixels: np.ndarray
    source_to_region: np.ndarray


def cut_region(image: np.ndarray, alignment: Alignment, *, margin: float = 0.5,
               antialias: bool = True) -> Region:
    """Copy the part of `image` that crops of alignments near `alignment` need.

    The kept box is the quad's bounding box grown by `margin` x the quad side on every side, clipped
    to the image, so reflected borders at the image edges stay exact; it is area-downscaled by the
    antialias factor of `alignment` (so a huge frame is not kept at full size).
    """
    h, w = image.shape[:2]
    quad = alignment.quad
    grow = margin * 2.0 * float(np.hypot(*alignment.x))
    x0, y0 = np.floor(quad.min(axis=0) - grow).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0) + grow).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:  # the face quad lies outside the frame: keep the whole frame
        x0, y0, x1, y1 = 0, 0, w, h
    pixels = image[y0:y1, x0:x1]
    to_region = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
    factor = antialias_factor(alignment.scale) if antialias else 1
    if factor > 1:
        pixels, to_small = _downscale(pixels, factor)
        to_region = compose_affine(to_small, to_region)
    else:
        pixels = pixels.copy()
    return Region(pixels, to_region)
