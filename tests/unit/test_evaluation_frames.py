"""How `reenact eval produce` stores output frames (reenact.evaluation.frames): lossless npz or JPEG."""

from __future__ import annotations

import numpy as np
import pytest

from reenact.evaluation import frames as frames_io


def smooth_frames(t=5, size=64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.stack([np.stack([(xx * 3 + i * 10) % 256, (yy * 2) % 256, (xx + yy + i * 5) % 256], -1)
                    for i in range(t)])
    return out.astype(np.uint8)


def test_npz_is_lossless_and_keeps_the_per_frame_arrays(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    frames_io.save(tmp_path / "m.npz", frames, "npz", steps=np.arange(4))
    assert np.array_equal(frames_io.load(tmp_path / "m.npz"), frames)
    assert np.load(tmp_path / "m.npz")["steps"].tolist() == [0, 1, 2, 3]


def test_jpg_is_close_smaller_and_keeps_rgb_order_and_arrays(tmp_path):
    frames = smooth_frames()
    frames[:, :8, :8] = (255, 0, 0)  # a red corner stays red (no BGR swap)
    frames_io.save(tmp_path / "lossless.npz", frames, "npz")
    frames_io.save(tmp_path / "jpg.npz", frames, "jpg", engine_keypoint_error=np.ones(5))
    back = frames_io.load(tmp_path / "jpg.npz")
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames).mean() < 3
    assert back[:, 2, 2, 0].min() > 200 and back[:, 2, 2, 2].max() < 60
    assert np.load(tmp_path / "jpg.npz")["engine_keypoint_error"].tolist() == [1.0] * 5
    assert (tmp_path / "jpg.npz").stat().st_size < (tmp_path / "lossless.npz").stat().st_size


def test_bad_requests_and_files(tmp_path):
    with pytest.raises(ValueError, match="one of"):
        frames_io.save(tmp_path / "a.npz", smooth_frames(), "png")
    with pytest.raises(ValueError, match="uint8"):
        frames_io.save(tmp_path / "a.npz", smooth_frames().astype(np.float32), "jpg")
    np.savez(tmp_path / "other.npz", steps=np.arange(3))
    with pytest.raises(ValueError, match="no output frames"):
        frames_io.load(tmp_path / "other.npz")
    frames_io.save(tmp_path / "j.npz", smooth_frames(2), "jpg")
    z = dict(np.load(tmp_path / "j.npz"))
    z["frames_jpg"] = np.zeros_like(z["frames_jpg"])  # corrupt JPEG bytes
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(ValueError, match="does not decode"):
        frames_io.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("fmt", ["npz", "jpg"])
def test_concat_joins_files_frame_by_frame_without_reencoding(tmp_path, fmt):
    """concat of files written by save: the frames of each in order (JPEG blobs as they are: the same decoded
    pixels as each part's), per-frame arrays joined; different arrays or a non-per-frame array are refused."""
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8) for n in (3, 2)]
    paths = []
    for i, p in enumerate(parts):
        paths.append(tmp_path / f"p{i}.npz")
        frames_io.save(paths[-1], p, fmt, steps=np.arange(len(p)) + 10 * i)
    assert frames_io.concat(paths, tmp_path / "all.npz") == 5
    joined = frames_io.load(tmp_path / "all.npz")
    assert np.array_equal(joined, np.concatenate([frames_io.load(p) for p in paths]))
    assert np.load(tmp_path / "all.npz")["steps"].tolist() == [0, 1, 2, 10, 11]
    other = tmp_path / "other.npz"
    frames_io.save(other, parts[1], "jpg" if fmt == "npz" else "npz", steps=np.arange(2))
    with pytest.raises(ValueError, match="different arrays"):
        frames_io.concat([paths[0], other], tmp_path / "x.npz")
    frames_io.save(other, parts[1], fmt, steps=np.arange(5))
    with pytest.raises(ValueError, match="one row per frame"):
        frames_io.concat([paths[0], other], tmp_path / "x.npz")
