"""Property-based fuzzing (hypothesis) of the video decoder path the gateway runs on uploads:
`validate_video` and then `read_frames` (reenact/video.py) on mutated real containers (bit flips, truncation,
inserted and deleted runs, spliced headers), on headers that declare zero-size or huge frames, and on
random bytes. Every input must end in a VideoInfo (and then decode or raise VideoError) or in a clean
VideoError (an InvalidInputError: INVALID_ARGUMENT at the services) - never another exception, never a
hang (per-example deadline, test timeout), and the process's peak RSS must stay bounded.

Example counts are small (derandomized, so CI sees the same inputs every run); raise FUZZ_EXAMPLES to
fuzz longer locally, FUZZ_RANDOM=1 for new inputs each run.
"""

from __future__ import annotations

import datetime
import os
import resource
import struct
import zlib

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reenact.errors import InvalidInputError
from reenact.video import VideoError, VideoLimits, encode_video, read_frames, validate_video

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
LIMITS = VideoLimits(max_bytes=8 << 20, max_width=1024, max_height=1024, max_frames=200, max_duration_s=30)
MAX_RSS_GROWTH_MB = 400
FUZZ = settings(max_examples=EXAMPLES, deadline=datetime.timedelta(seconds=10), database=None,
                derandomize=not os.environ.get("FUZZ_RANDOM"),  # FUZZ_RANDOM=1: new inputs each run
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

pytestmark = pytest.mark.timeout(180)


def _frames(n=8, w=48, h=32):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _container(fmt: str, codec: str) -> bytes:
    import io

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        s = out.add_stream(codec, rate=25)
        s.width, s.height = 48, 32
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for rgb in _frames():
            for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    return buf.getvalue()


SEEDS = {
    "mp4": encode_video(_frames(), 25),
    "mkv": _container("matroska", "libx264"),
    "avi": _container("avi", "mjpeg"),
    "y4m": _container("yuv4mpegpipe", "rawvideo"),
}


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def check(data: bytes) -> None:
    """The property: a clean VideoError or a video that validates and then decodes (or fails cleanly)."""
    try:
        info = validate_video(data, LIMITS, field="chunk")
    except VideoError as exc:
        assert isinstance(exc, InvalidInputError) and exc.kind == "INVALID_ARGUMENT"
        assert [v.field for v in exc.violations] == ["chunk"]
        return
    assert 0 < info.width <= LIMITS.max_width and 0 < info.height <= LIMITS.max_height
    assert 0 < info.frames <= LIMITS.max_frames
    try:
        for rgb in read_frames(data, max_frames=LIMITS.max_frames):
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    except VideoError:
        pass


@st.composite
def mutated(draw):
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite", "splice"]))
        n = len(data)
        if n == 0:
            break
        at = draw(st.integers(0, n - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 256))]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(chunk)] = chunk
        else:  # the head of one container on the body of another
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            data = bytearray(other[:at % len(other)]) + data[at:]
    return bytes(data)


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _mp4_with_size(width: int, height: int) -> bytes:
    """The seed mp4 with the track header and sample entry rewritten to declare width x height."""
    data = bytearray(SEEDS["mp4"])
    tkhd = data.find(b"tkhd")
    if tkhd > 0:  # version 0 tkhd: width/height are 16.16 fixed point at the end of the box
        size = struct.unpack(">I", data[tkhd - 4:tkhd])[0]
        end = tkhd - 4 + size
        data[end - 8:end] = struct.pack(">II", (width & 0xFFFF) << 16, (height & 0xFFFF) << 16)
    avc1 = data.find(b"avc1")
    if avc1 > 0:  # visual sample entry: 24 bytes after the type come width and height (16 bit)
        data[avc1 + 28:avc1 + 32] = struct.pack(">HH", width & 0xFFFF, height & 0xFFFF)
    return bytes(data)


@st.composite
def declared_sizes(draw):
    """Headers that declare zero-size or huge frames, with little or no data behind them."""
    w = draw(st.sampled_from([0, 1, 2, 16, 4097, 65535, 1 << 20, (1 << 31) - 1]))
    h = draw(st.sampled_from([0, 1, 2, 16, 4097, 65535, 1 << 20, (1 << 31) - 1]))
    kind = draw(st.sampled_from(["y4m", "png", "mp4"]))
    if kind == "y4m":
        body = b"FRAME\n" + draw(st.binary(max_size=256))
        return f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\n".encode() + body * draw(st.integers(1, 3))
    if kind == "png":
        return _png(max(w, 0) & 0x7FFFFFFF, max(h, 0) & 0x7FFFFFFF)
    return _mp4_with_size(w, h)


@FUZZ
@given(data=mutated())
def test_mutated_containers_fail_cleanly(data):
    check(data)


@FUZZ
@given(data=declared_sizes())
def test_declared_zero_or_huge_sizes_fail_cleanly(data):
    check(data)


@FUZZ
@given(data=st.binary(min_size=0, max_size=4096))
def test_random_bytes_fail_cleanly(data):
    if not data:
        with pytest.raises(VideoError):
            validate_video(data, LIMITS)
        return
    check(data)


def test_seeds_are_valid_and_fuzzing_keeps_memory_bounded():
    """The seeds themselves validate (so the mutations start from real containers), and a fixed batch of
    the nastiest inputs does not grow the peak RSS by more than MAX_RSS_GROWTH_MB."""
    for name, data in SEEDS.items():
        assert validate_video(data, LIMITS).frames == 8, name
    before = rss_peak_mb()
    for w, h in [(65535, 65535), ((1 << 31) - 1, 16), (1 << 20, 1 << 20)]:
        for data in (f"YUV4MPEG2 W{w} H{h} F25:1 C420jpeg\nFRAME\n".encode() + b"\0" * 4096, _png(w, h),
                     _mp4_with_size(w, h)):
            check(data)
    assert rss_peak_mb() - before < MAX_RSS_GROWTH_MB
