"""`reenact.evaluation.bundle.split_holdout` (eval prepare --identity-holdout): the identity references are
the scan's last H frames with a face, and the scan the methods read loses exactly those frames."""

from __future__ import annotations

import numpy as np
import pytest

from reenact.enroll.scan import AlignedScan
from reenact.evaluation.bundle import NUM_IDENTITY_REFS, split_holdout


def scan(n: int, faces=None) -> AlignedScan:
    crops = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    has = np.ones(n, bool) if faces is None else np.asarray(faces, bool)
    z = np.zeros(n, np.float32)
    return AlignedScan(crops=crops, points=np.zeros((n, 478, 3), np.float32), has_face=has, yaw=z + 1,
                       pitch=z + 2, mouth_open=z + 3, eye_open=z + 4, frames_total=n, fps=30.0)


def test_split_cuts_every_per_frame_array_and_keeps_the_held_faces_only():
    faces = [True] * 8 + [False, True, False, True]
    kept, refs = split_holdout(scan(12, faces), 4)
    assert kept.frames_total == 8 and kept.fps == 30.0
    for name in ("crops", "points", "has_face", "yaw", "pitch", "mouth_open", "eye_open"):
        assert len(getattr(kept, name)) == 8, name
    assert [int(r[0, 0, 0]) for r in refs] == [9, 11]  # frames 9 and 11: the held-out ones with a face
    assert not set(kept.crops[:, 0, 0, 0].tolist()) & {9, 11}


def test_many_held_frames_are_spread_evenly_up_to_the_reference_count():
    kept, refs = split_holdout(scan(100), 60)
    ids = [int(r[0, 0, 0]) for r in refs]
    assert len(ids) == NUM_IDENTITY_REFS and ids[0] == 40 and ids[-1] == 99 and ids == sorted(set(ids))


@pytest.mark.parametrize("holdout, faces, msg", [
    (0, None, "between 1 and"), (5, None, "between 1 and"), (2, [True, True, True, False, False], "no face in the last 2"),
    (2, [False, False, False, True, True], "no face in the first 3"),
])
def test_refused_splits(holdout, faces, msg):
    with pytest.raises(ValueError, match=msg):
        split_holdout(scan(5, faces), holdout)
