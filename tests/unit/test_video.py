"""PyAV helpers: H.264 mp4 round trip, probing, clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from reenact.errors import InvalidInputError
from reenact.video import VideoError, VideoReader, decode_video, encode_video, probe_video, read_frames


def moving_frames(n=12, h=64, w=96):
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(n):
        r = (xx * 2 + t * 5) % 256
        g = (yy * 3) % 256
        b = np.full_like(xx, 40 + 10 * t)
        frames.append(np.stack([r, g, b], axis=2).astype(np.uint8))
    return frames


def psnr(a, b):
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-9))


def test_encode_decode_round_trip_bytes_and_path(tmp_path):
    frames = moving_frames()
    data = encode_video(frames, fps=25.0, crf=12)
    assert isinstance(data, bytes) and data[4:8] == b"ftyp"
    info = probe_video(data)
    assert info["width"] == 96 and info["height"] == 64 and info["frames"] == 12
    assert info["fps"] == pytest.approx(25.0) and info["codec"] == "h264"
    decoded, fps = decode_video(data)
    assert decoded.shape == (12, 64, 96, 3) and decoded.dtype == np.uint8 and fps == pytest.approx(25.0)
    assert min(psnr(a, b) for a, b in zip(frames, decoded, strict=True)) > 30
    path = encode_video(iter(frames), fps=29.97, dst=tmp_path / "clip.mp4")
    assert path.is_file()
    with VideoReader(path) as reader:
        assert reader.fps == pytest.approx(29.97, abs=1e-3)
        assert sum(1 for _ in reader) == 12
    assert len(list(read_frames(str(path), max_frames=5))) == 5


def test_odd_sizes_are_padded_to_even():
    frames = [np.full((33, 47, 3), 100, np.uint8)] * 3
    decoded, _ = decode_video(encode_video(frames, fps=10))
    assert decoded.shape == (3, 34, 48, 3)


@pytest.mark.parametrize("bad", [b"", b"not a video at all" * 50, bytes(range(256)) * 40])
def test_unreadable_bytes_raise_video_error(bad):
    with pytest.raises(VideoError) as err:
        list(read_frames(bad))
    assert isinstance(err.value, InvalidInputError) and err.value.kind == "INVALID_ARGUMENT"


def test_missing_empty_and_truncated_files(tmp_path):
    with pytest.raises(VideoError, match="no such video file"):
        probe_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe_video(tmp_path / "empty.mp4")
    data = encode_video(moving_frames(), fps=25)
    with pytest.raises(VideoError):
        list(read_frames(data[: len(data) // 2]))  # moov atom at the end is lost


def test_encode_rejects_bad_frames(tmp_path):
    with pytest.raises(VideoError, match="no frames"):
        encode_video([], fps=30, dst=tmp_path / "none.mp4")
    assert not (tmp_path / "none.mp4").exists()
    with pytest.raises(VideoError, match="differs"):
        encode_video([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 34, 3), np.uint8)], fps=30)
    with pytest.raises(VideoError, match="uint8"):
        encode_video([np.zeros((32, 32, 3), np.float32)], fps=30)
    with pytest.raises(VideoError, match="fps"):
        encode_video([np.zeros((32, 32, 3), np.uint8)], fps=0)


def test_prefetch_gives_the_same_frames_and_stops_early():
    frames = moving_frames(n=20)
    data = encode_video(frames, fps=25)
    plain = list(read_frames(data))
    ahead = list(read_frames(data, prefetch=3))
    assert len(ahead) == 20 and all(np.array_equal(a, b) for a, b in zip(plain, ahead, strict=True))
    it = read_frames(data, prefetch=2)
    first = [next(it) for _ in range(3)]
    it.close()  # the decode thread is told to stop and joined; nothing hangs
    assert all(np.array_equal(a, b) for a, b in zip(first, plain, strict=False))
    assert len(list(read_frames(data, prefetch=4, max_frames=7))) == 7
    with pytest.raises(VideoError):
        read_frames(b"junk" * 100, prefetch=2)  # opened (and rejected) before iterating
