"""Landmark-derived attributes of one face: expression ratios and head pose, from the 478 points.

Input: MediaPipe points [478, 3] (or [468, 3]) in source pixels, z scaled like x (reenact.face.mesh).
Distances are 3D (x, y, z), so the ratios change little with head rotation. Definitions (MediaPipe
indices; "left"/"right" are the subject's, as in MediaPipe):

- inter_ocular: distance between the eye centres (means of the six-point eye contours of
  reenact.face.align), in pixels.
- mouth_open: inner-lip gap |13 - 14| / inter_ocular (about 0 closed, 0.3+ wide open).
- smile: mouth width |61 - 291| / inter_ocular (grows when smiling; about 0.8-0.9 neutral).
- eye_open_right / eye_open_left: lid gap / eye width: |159 - 145| / |33 - 133| and
  |386 - 374| / |362 - 263| (about 0.25-0.35 open, below 0.1 closed).
- brow_raise_right / brow_raise_left / brow_raise: mean distance from the upper brow points to the eye
  centre / inter_ocular.
- yaw, pitch, roll in degrees, from the face's own geometry (no reference model: the wheel of
  mediapipe 0.10.21 does not ship canonical_face_model.obj). The head's left-right axis is the normal
  of the face's mirror-symmetry plane (principal direction of p_i - p_mirror(i) over the 468 mesh
  vertices, MESH_MIRROR); its up axis is the part of (mean of the four eye corners - mean of the nose
  base 2/98/327) orthogonal to it, tilted back by PITCH_OFFSET_DEG; forward = left-right x up. In
  camera axes (x right, y up, z towards the viewer):
  yaw > 0: the nose turns towards image +x (the subject turns to their own left);
  pitch > 0: the face looks up; roll > 0: the face is rotated clockwise as seen in the image.
  The eye-corner/nose-base axis was chosen (over eyes-mouth, forehead-nose and plane fits) on the
  self-scan fixture for the least change with smile, blink and brows; PITCH_OFFSET_DEG makes the two
  frontal sample portraits (astronaut, Grace Hopper) read about 0. Measured on fixture renders, on
  MediaPipe's points: a rendered +-20 deg yaw reads +-12..16 deg (MediaPipe flattens depth), +-15 deg
  of pitch reads 13..18 deg, +-10 deg of roll reads within 0.5 deg, and a wide-open mouth adds 4-8 deg
  of pitch (smile, blink and brows change pitch by less than 3 deg).
"""

from __future__ import annotations

import numpy as np

from reenact.face.align import MOUTH_CORNERS, SUBJECT_LEFT_EYE, SUBJECT_RIGHT_EYE

RIGHT_BROW_UPPER = (70, 63, 105, 66, 107)
LEFT_BROW_UPPER = (300, 293, 334, 296, 336)
INNER_LIPS = (13, 14)
RIGHT_EYE_LIDS, RIGHT_EYE_CORNERS = (159, 145), (33, 133)
LEFT_EYE_LIDS, LEFT_EYE_CORNERS = (386, 374), (362, 263)
EYE_CORNERS = (33, 133, 362, 263)
NOSE_BASE = (2, 98, 327)
PITCH_OFFSET_DEG = 20.0

# Left-right mirror partner of each of the 468 mesh vertices (28 midline vertices map to themselves).
# Computed by `mirror_map` (reflection about the fitted symmetry plane + optimal assignment) from the
# astronaut and the Grace Hopper photos, which give the same involution; tests re-derive it.
MESH_MIRROR = (
    0, 1, 2, 248, 4, 5, 6, 249, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
    18, 19, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260, 261, 262, 263, 264, 265,
    266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283,
    284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301,
    302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319,
    320, 321, 322, 323, 94, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336,
    337, 338, 339, 340, 341, 342, 343, 344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354,
    355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365, 366, 367, 368, 369, 370, 371, 372,
    373, 374, 375, 376, 377, 378, 379, 151, 152, 380, 381, 382, 383, 384, 385, 386, 387, 388,
    389, 390, 164, 391, 392, 393, 168, 394, 395, 396, 397, 398, 399, 175, 400, 401, 402, 403,
    404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 195, 419, 197,
    420, 199, 200, 421, 422, 423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435,
    436, 437, 438, 439, 440, 441, 442, 443, 444, 445, 446, 447, 448, 449, 450, 451, 452, 453,
    454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466, 467, 3, 7, 20, 21,
    22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39,
    40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
    58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75,
    76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93,
    95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112,
    113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130,
    131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148,
    149, 150, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 165, 166, 167, 169, 170,
    171, 172, 173, 174, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189,
    190, 191, 192, 193, 194, 196, 198, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211,
    212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229,
    230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247,)

ATTRIBUTE_NAMES = ("inter_ocular", "mouth_open", "smile", "eye_open_right", "eye_open_left", "brow_raise_right",
                   "brow_raise_left", "brow_raise", "yaw", "pitch", "roll")


def _dist(p: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(p[a] - p[b]))


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(subject's right, subject's left) eye centres, 3D."""
    p = np.asarray(points, dtype=np.float64)
    return p[list(SUBJECT_RIGHT_EYE)].mean(axis=0), p[list(SUBJECT_LEFT_EYE)].mean(axis=0)


def head_rotation(points: np.ndarray) -> np.ndarray:
    """3x3 rotation whose columns are the head's left-right, up and forward axes in camera axes."""
    p = np.asarray(points, dtype=np.float64)[:468] * np.array([1.0, -1.0, -1.0])  # image -> camera axes
    eye_r, eye_l = eye_centres(p)
    diffs = p - p[list(MESH_MIRROR)]
    _, _, vt = np.linalg.svd(diffs, full_matrices=False)
    across = vt[0] * np.sign(vt[0] @ (eye_l - eye_r))  # towards the subject's left
    up = p[list(EYE_CORNERS)].mean(axis=0) - p[list(NOSE_BASE)].mean(axis=0)
    up -= (up @ across) * across
    up /= np.linalg.norm(up)
    forward = np.cross(across, up)
    tilt = np.radians(PITCH_OFFSET_DEG)  # rotate about `across`: forward turns down, up leans forward
    up, forward = np.cos(tilt) * up + np.sin(tilt) * forward, np.cos(tilt) * forward - np.sin(tilt) * up
    return np.column_stack([across, up, forward])


def rotation_to_angles(r: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of R = Ry(yaw) Rx(-pitch) Rz(-roll) (module doc for the signs)."""
    yaw = np.degrees(np.arctan2(r[0, 2], r[2, 2]))
    pitch = np.degrees(np.arcsin(np.clip(r[1, 2], -1.0, 1.0)))
    roll = -np.degrees(np.arctan2(r[1, 0], r[1, 1]))
    return float(yaw), float(pitch), float(roll)


def face_attributes(points: np.ndarray) -> dict[str, float]:
    """All attributes of ATTRIBUTE_NAMES for one face (module doc for definitions)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 468 or p.shape[1] != 3:
        raise ValueError(f"expected points [478, 3], got {p.shape}")
    eye_r, eye_l = eye_centres(p)
    iod = float(np.linalg.norm(eye_l - eye_r))
    brow_r = float(np.linalg.norm(p[list(RIGHT_BROW_UPPER)] - eye_r, axis=1).mean()) / iod
    brow_l = float(np.linalg.norm(p[list(LEFT_BROW_UPPER)] - eye_l, axis=1).mean()) / iod
    yaw, pitch, roll = rotation_to_angles(head_rotation(p))
    return {
        "inter_ocular": iod,
        "mouth_open": _dist(p, *INNER_LIPS) / iod,
        "smile": _dist(p, *MOUTH_CORNERS) / iod,
        "eye_open_right": _dist(p, *RIGHT_EYE_LIDS) / _dist(p, *RIGHT_EYE_CORNERS),
        "eye_open_left": _dist(p, *LEFT_EYE_LIDS) / _dist(p, *LEFT_EYE_CORNERS),
        "brow_raise_right": brow_r,
        "brow_raise_left": brow_l,
        "brow_raise": 0.5 * (brow_r + brow_l),
        "yaw": yaw,
        "pitch": pitch,
        "roll": roll,
    }


def mirror_map(points: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Mirror partner of each mesh vertex of one (roughly frontal) face, as an index array [468].

    Reflect the vertices about a symmetry plane (first guess: through the centroid, normal along the
    eye-to-eye direction), pair each reflected vertex with a vertex by optimal assignment, refit the
    plane from the pairs, repeat. Used to derive and check MESH_MIRROR.
    """
    from scipy.optimize import linear_sum_assignment

    p = np.asarray(points, dtype=np.float64)[:468]
    eye_r, eye_l = eye_centres(p)
    normal = (eye_l - eye_r) / np.linalg.norm(eye_l - eye_r)
    origin = p.mean(axis=0)
    perm = np.arange(len(p))
    for _ in range(iterations):
        reflected = p - 2.0 * ((p - origin) @ normal)[:, None] * normal
        cost = np.linalg.norm(reflected[:, None, :] - p[None, :, :], axis=2)
        _, perm = linear_sum_assignment(cost)
        _, _, vt = np.linalg.svd(p - p[perm], full_matrices=False)
        normal = vt[0] * np.sign(vt[0] @ normal)
        origin = 0.5 * (p + p[perm]).mean(axis=0)
    return perm
