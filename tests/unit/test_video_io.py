"""Gateway video IO: upload spooling with a byte limit, validation before any work is queued
(containers, audio, truncation, limits), and the streaming fragmented-mp4 encoder."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from reenact.errors import InvalidInputError
from reenact.video import (
    ChunkSpool,
    Mp4ChunkEncoder,
    VideoEncoder,
    VideoError,
    VideoInfo,
    VideoLimits,
    decode_video,
    encode_mp4_chunks,
    validate_video,
)

W, H = 96, 64


def frames(n=20, h=H, w=W, seed=0):
    """Smoothly moving gradients plus a little noise (compressible, but every frame differs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for t in range(n):
        rgb = np.stack([(xx * 2 + t * 7) % 256, (yy * 3 + t) % 256, np.full_like(xx, 30 + 5 * t)], axis=2)
        out.append(np.clip(rgb + rng.integers(0, 8, rgb.shape), 0, 255).astype(np.uint8))
    return out


def make_video(tmp_path, fmt="mp4", codec="libx264", *, n=20, rate=25, audio=False, video=True,
               options=None, name=None) -> bytes:
    """Encode a small test video with PyAV (to a file: mp4 faststart needs a seekable output)."""
    path = tmp_path / (name or f"clip.{fmt}")
    container = av.open(str(path), mode="w", format=fmt, options=options or {})
    vstream = astream = None
    if video:
        vstream = container.add_stream(codec, rate=rate)
        vstream.width, vstream.height = W, H
        vstream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    if audio:
        astream = container.add_stream("aac" if fmt in ("mp4", "mov") else "libopus", rate=48000)
    if vstream is not None:
        for rgb in frames(n):
            for packet in vstream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
    if astream is not None:
        seconds = n / float(rate)
        samples = np.sin(np.linspace(0, 440 * 2 * np.pi * seconds, int(48000 * seconds)))
        frame = av.AudioFrame.from_ndarray(samples[None].astype(np.float32) * 0.1, format="flt", layout="mono")
        frame.sample_rate = 48000
        for packet in astream.encode(frame):
            container.mux(packet)
        for packet in astream.encode(None):
            container.mux(packet)
    container.close()
    return path.read_bytes()


def assert_rejected(src, limits=None, match=None, field="video"):
    with pytest.raises(VideoError, match=match) as err:
        validate_video(src, limits, field=field)
    exc = err.value
    assert isinstance(exc, InvalidInputError) and exc.kind == "INVALID_ARGUMENT"
    assert [v.field for v in exc.violations] == [field] and exc.violations[0].description
    return exc


# ----------------------------------------------------------------------------------------------------
# validate_video: accepted inputs


@pytest.mark.parametrize(("fmt", "codec"), [("mp4", "libx264"), ("webm", "libvpx-vp9"), ("matroska", "libx264"),
                                            ("avi", "mjpeg"), ("mov", "libx264")])
def test_common_containers_validate_and_decode(tmp_path, fmt, codec):
    data = make_video(tmp_path, fmt, codec, n=20)
    info = validate_video(data)
    assert isinstance(info, VideoInfo)
    assert (info.width, info.height, info.frames) == (W, H, 20)
    assert info.fps == pytest.approx(25.0) and not info.fps_guessed
    assert info.duration_s == pytest.approx(0.8, abs=0.05)
    assert not info.has_audio and info.size_bytes == len(data)
    path = tmp_path / f"clip.{fmt}"
    assert validate_video(path) == info  # a path gives the same answer as the bytes
    assert validate_video(str(path), full_decode=True).frames == 20
    decoded, fps = decode_video(data)
    assert decoded.shape == (20, H, W, 3) and fps == pytest.approx(25.0)


def test_faststart_mp4_and_frame_rates_are_kept(tmp_path):
    for rate in (25, Fraction(30000, 1001)):
        data = make_video(tmp_path, "mp4", options={"movflags": "faststart"}, rate=rate, n=30)
        info = validate_video(data)
        assert info.fps == pytest.approx(float(rate), rel=1e-6) and info.frames == 30
        assert info.duration_s == pytest.approx(30 / float(rate), rel=0.02)


def test_raw_streams_rate_from_the_bitstream_or_a_flagged_default(tmp_path):
    """Raw streams have no container clock: H.264 carries its rate in the SPS; raw MJPEG has none."""
    h264 = validate_video(make_video(tmp_path, "h264", n=20, rate=30))
    assert h264.fps == pytest.approx(30.0) and not h264.fps_guessed and h264.frames == 20
    ts = validate_video(make_video(tmp_path, "mpegts", n=20, rate=30))
    assert ts.fps == pytest.approx(30.0) and not ts.fps_guessed and ts.frames == 20
    mjpeg = validate_video(make_video(tmp_path, "mjpeg", "mjpeg", n=20, rate=30))
    assert mjpeg.fps_guessed and mjpeg.fps == 25.0 and mjpeg.frames == 20


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_audio_streams_are_ignored(tmp_path, fmt):
    codec = "libvpx-vp9" if fmt == "webm" else "libx264"
    info = validate_video(make_video(tmp_path, fmt, codec, n=25, audio=True))
    assert info.has_audio and info.frames == 25 and (info.width, info.height) == (W, H)


# ----------------------------------------------------------------------------------------------------
# validate_video: rejected inputs


def test_empty_missing_and_random_bytes_are_rejected(tmp_path):
    assert_rejected(b"", match="empty")
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert_rejected(tmp_path / "empty.mp4", match="empty")
    assert_rejected(tmp_path / "missing.mp4", match="no such")
    rng = np.random.default_rng(1)
    assert_rejected(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    assert_rejected(b"not a video at all" * 100)


def test_audio_only_is_rejected(tmp_path):
    data = make_video(tmp_path, "mp4", video=False, audio=True, name="voice.m4a")
    assert_rejected(data, match="no video stream", field="driving_video")


@pytest.mark.parametrize(("fmt", "codec", "options"), [
    ("mp4", "libx264", None),                           # moov at the end: lost
    ("mp4", "libx264", {"movflags": "faststart"}),      # moov first: the samples it lists are missing
    ("webm", "libvpx-vp9", None),                       # streams end before the declared duration
    ("matroska", "libx264", None),
    ("avi", "mjpeg", None),                             # fewer frames than the header declares
])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_files_are_rejected(tmp_path, fmt, codec, options, keep):
    data = make_video(tmp_path, fmt, codec, n=40, options=options)
    assert validate_video(data).frames == 40
    assert_rejected(data[: int(len(data) * keep)])


def test_truncated_by_a_few_bytes_is_rejected(tmp_path):
    data = make_video(tmp_path, "mp4", options={"movflags": "faststart"}, n=40)
    assert_rejected(data[:-200])


@pytest.mark.parametrize("frac", [0.3, 0.05])
def test_wiped_end_fails_to_decode(tmp_path, frac):
    """Length intact, the last bytes zeroed (a bad copy): the decode of the last GOP fails."""
    data = bytearray(make_video(tmp_path, "mp4", options={"movflags": "faststart"}, n=40))
    keep = int(len(data) * (1 - frac))
    data[keep:] = bytes(len(data) - keep)
    assert_rejected(bytes(data), match="decode|corrupt")


def test_damaged_header_is_rejected(tmp_path):
    data = make_video(tmp_path, "mp4", options={"movflags": "faststart"}, n=20)
    for atom in (b"ftyp", b"stsd", b"stco", b"avcC"):
        bad = bytearray(data)
        at = bad.find(atom)
        bad[at + 8:at + 40] = b"\xff" * 32
        assert_rejected(bytes(bad))


def test_limits_are_enforced(tmp_path):
    data = make_video(tmp_path, "mp4", n=30)
    assert validate_video(data, VideoLimits()).frames == 30
    assert_rejected(data, VideoLimits(max_width=64), match="resolution 96x64")
    assert_rejected(data, VideoLimits(max_height=32), match="resolution")
    assert_rejected(data, VideoLimits(max_frames=10), match="frames")
    assert_rejected(data, VideoLimits(max_duration_s=0.5), match="s exceeds|longer than")
    assert_rejected(data, VideoLimits(max_bytes=len(data) - 1), match="bytes")
    assert_rejected(data, VideoLimits(min_frames=31), match="fewer than")
    # a stream that does not declare its frame count (webm) is counted and stopped by the demux pass
    webm = make_video(tmp_path, "webm", "libvpx-vp9", n=30)
    assert_rejected(webm, VideoLimits(max_frames=10), match="more than 10 frames")


# ----------------------------------------------------------------------------------------------------
# ChunkSpool


def test_chunk_spool_collects_and_cleans_up(tmp_path):
    data = make_video(tmp_path, "mp4", n=20)
    with ChunkSpool(max_bytes=len(data), dir=tmp_path) as spool:
        for i in range(0, len(data), 1000):
            spool.write(data[i:i + 1000])
        assert spool.size == len(data)
        path = spool.finish()
        assert path.read_bytes() == data
        assert validate_video(path).frames == 20
    assert not path.exists()


def test_chunk_spool_rejects_before_buffering_over_the_limit(tmp_path):
    spool = ChunkSpool(max_bytes=2500, dir=tmp_path)
    spool.write(b"x" * 1000)
    spool.write(b"x" * 1000)
    with pytest.raises(VideoError) as err:
        spool.write(b"x" * 1000)
    assert [v.field for v in err.value.violations] == ["chunk"] and "2500" in err.value.message
    assert spool.size == 2000 and spool.path.stat().st_size <= 2000
    spool.write(b"x" * 500)  # exactly at the limit is fine
    assert spool.size == 2500
    spool.close()
    spool.close()
    assert not spool.path.exists()
    with pytest.raises(ValueError):
        spool.write(b"x")


# ----------------------------------------------------------------------------------------------------
# Mp4ChunkEncoder


def decode_all(data: bytes):
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        out = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack(out), rate


def psnr(a, b):
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-9))


@pytest.mark.parametrize("rate", [25, Fraction(30000, 1001), 30000 / 1001])
def test_fragmented_encoder_round_trip(rate):
    src = frames(50)
    enc = Mp4ChunkEncoder(rate, W, H, crf=12, keyframe_interval_s=0.5)
    streamed = []
    for rgb in src:
        streamed.append(enc.add(rgb))
    before_finish = sum(len(c) for c in streamed)
    tail = enc.finish()
    chunks = [c for group in streamed for c in group] + tail
    assert before_finish > 0  # fragments leave while frames are still coming in
    assert all(0 < len(c) <= 1024 * 1024 for c in chunks)
    data = b"".join(chunks)
    assert enc.bytes_out == len(data) and enc.frames == 50
    decoded, avg_rate = decode_all(data)
    assert decoded.shape == (50, H, W, 3)
    assert float(avg_rate) == pytest.approx(float(rate), rel=1e-6)
    assert min(psnr(a, b) for a, b in zip(src, decoded, strict=True)) > 27
    info = validate_video(data)
    assert info.frames == 50 and info.fps == pytest.approx(float(rate), rel=1e-6)


def test_encoder_chunks_are_capped_and_odd_sizes_padded():
    rng = np.random.default_rng(2)
    noise = [rng.integers(0, 256, (241, 321, 3), dtype=np.uint8) for _ in range(12)]  # incompressible
    chunks = list(encode_mp4_chunks(noise, 24, crf=0, chunk_bytes=64 * 1024))
    assert len(chunks) > 5 and max(len(c) for c in chunks) <= 64 * 1024
    decoded, _ = decode_all(b"".join(chunks))
    assert decoded.shape == (12, 242, 322, 3)
    odd = frames(6, h=33, w=47)
    decoded, _ = decode_all(b"".join(encode_mp4_chunks(odd, 10, crf=10)))
    assert decoded.shape == (6, 34, 48, 3)
    assert min(psnr(a, b[:33, :47]) for a, b in zip(odd, decoded, strict=True)) > 27


def test_encoder_rejects_bad_use():
    assert VideoEncoder is Mp4ChunkEncoder
    with pytest.raises(VideoError, match="fps"):
        Mp4ChunkEncoder(0, W, H)
    enc = Mp4ChunkEncoder(25, W, H)
    with pytest.raises(VideoError, match="expected RGB uint8"):
        enc.add(np.zeros((H, W + 2, 3), np.uint8))
    with pytest.raises(VideoError, match="expected RGB uint8"):
        enc.add(np.zeros((H, W, 3), np.float32))
    with pytest.raises(VideoError, match="no frames"):
        enc.finish()
    with pytest.raises(VideoError, match="after"):
        enc.add(np.zeros((H, W, 3), np.uint8))
    with pytest.raises(VideoError, match="no frames"):
        list(encode_mp4_chunks([], 25))
    with Mp4ChunkEncoder(25, W, H) as abandoned:
        abandoned.add(frames(1)[0])
    abandoned.close()  # idempotent
