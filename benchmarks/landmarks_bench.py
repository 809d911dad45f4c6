"""Landmarks core throughput: H.264 decode + MediaPipe tracking + FFHQ alignment + smoothing + crop.

Prints a table of frames/s (median over repeats, after a warm-up pass) and peak RSS per configuration.
Each configuration runs in a fresh subprocess so that its peak RSS is its own.

Clips (encoded once per run with PyAV/libx264, crf 18, then decoded inside the timed loop):
  astronaut-anim   the astronaut photo moved by small shifts, rotations and zooms (real face, synthetic
                   motion), at 512x512 or on a 1280x720 canvas (face scaled to the canvas height)
  carphone         the real 176x144 talking-face clip, upscaled (bicubic) into 512x512 / 1280x720

Usage: python benchmarks/landmarks_bench.py [--frames 120] [--repeats 5] [--crop 256] [--threads 1]
         [--detector full|short] [--detect-every 5] [--modes inline,prefetch] [--stages]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

SIZES = {"512x512": (512, 512), "1280x720": (1280, 720)}


def animate(photo: np.ndarray, size: tuple[int, int], frames: int) -> list[np.ndarray]:
    """The photo fitted into `size` and moved smoothly: shifts of +-12 px, +-4 deg, +-3 % zoom."""
    w, h = size
    side = min(w, h)
    base = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    canvas = cv2.copyMakeBorder(base, (h - side) // 2, h - side - (h - side) // 2,
                                (w - side) // 2, w - side - (w - side) // 2, cv2.BORDER_REFLECT_101)
    out = []
    for t in range(frames):
        a = 2 * np.pi * t / 60
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 4 * np.sin(a), 1 + 0.03 * np.sin(0.7 * a))
        m[:, 2] += [12 * np.sin(1.3 * a), 8 * np.cos(a)]
        out.append(cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101))
    return out


def upscale_clip(frames: list[np.ndarray], size: tuple[int, int], count: int) -> list[np.ndarray]:
    w, h = size
    out = []
    for i in range(count):
        f = frames[i % len(frames)]
        scale = max(w / f.shape[1], h / f.shape[0])
        big = cv2.resize(f, (round(f.shape[1] * scale), round(f.shape[0] * scale)), interpolation=cv2.INTER_CUBIC)
        y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
        out.append(np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w]))
    return out


def make_clip(source: str, size_name: str, frames: int) -> bytes:
    from reenact import samples
    from reenact.video import encode_video, read_frames

    size = SIZES[size_name]
    if source == "astronaut-anim":
        rgb = animate(samples.astronaut(), size, frames)
    else:
        rgb = upscale_clip(list(read_frames(samples.carphone_video_path())), size, frames)
    return encode_video(rgb, fps=30.0, crf=18)


def decoded_frames(data: bytes, threads: int, prefetch: bool):
    """Frames of the clip; with prefetch, decoded 8 frames ahead in a background thread."""
    from reenact.video import read_frames

    return read_frames(data, threads=threads, prefetch=8 if prefetch else 0)


def peak_rss_mb() -> float:
    """Peak resident memory of this process image (VmHWM; ru_maxrss would include the parent's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_pass(tracker, data: bytes, threads: int, prefetch: bool) -> tuple[int, int, float]:
    """(frames, frames with a face, seconds) of one decode + track pass."""
    t0 = time.perf_counter()
    results = []
    for i, rgb in enumerate(decoded_frames(data, threads, prefetch)):
        results += tracker.push(i, rgb)
    results += tracker.flush()
    return len(results), sum(r.alignment is not None for r in results), time.perf_counter() - t0


def stage_times(data: bytes, crop: int, threads: int) -> dict:
    """Per-frame median milliseconds of each stage, measured on its own."""
    from reenact.face import align
    from reenact.face.mesh import FaceMesh
    from reenact.face.smooth import StreamingSmoother
    from reenact.video import read_frames

    t0 = time.perf_counter()
    frames = list(read_frames(data, threads=threads))
    decode = (time.perf_counter() - t0) / len(frames) * 1e3
    mesh_ms, align_ms, warp_ms, smooth_ms = [], [], [], []
    smoother = StreamingSmoother(2.0)
    with FaceMesh(max_num_faces=4, detector="full", detect_every=5) as mesh:
        for rgb in frames[:10]:
            mesh.process(rgb)
        for rgb in frames:
            t = time.perf_counter()
            faces = mesh.process(rgb)
            mesh_ms.append(time.perf_counter() - t)
            if not faces:
                continue
            t = time.perf_counter()
            a = align.ffhq_alignment(faces[0].points, crop)
            region = align.cut_region(rgb, a)
            align_ms.append(time.perf_counter() - t)
            t = time.perf_counter()
            smoother.push(np.concatenate([a.as_vector(), faces[0].points.ravel()]))
            smooth_ms.append(time.perf_counter() - t)
            t = time.perf_counter()
            align.warp_crop(region.pixels, a, source_to_image=region.source_to_region)
            warp_ms.append(time.perf_counter() - t)
    med = lambda v: float(np.median(v) * 1e3)  # noqa: E731
    return {"decode_ms": decode, "mesh_ms": med(mesh_ms), "align_cut_ms": med(align_ms),
            "smooth_ms": med(smooth_ms), "warp_ms": med(warp_ms)}


def one(args) -> dict:
    from reenact.face.tracker import FaceTracker

    with open(args.clip, "rb") as f:
        data = f.read()
    rss_before = peak_rss_mb()
    fps = []
    with FaceTracker(crop_size=args.crop, sigma=2.0, max_faces=args.max_faces, detector=args.detector,
                     detect_every=args.detect_every) as tracker:
        n, with_face, _ = run_pass(tracker, data, args.threads, args.prefetch)  # warm-up
        assert n == args.frames, (n, args.frames)
        for _ in range(args.repeats):
            n, with_face, dt = run_pass(tracker, data, args.threads, args.prefetch)
            fps.append(n / dt)
    out = {"source": args.source, "size": args.size, "prefetch": args.prefetch, "max_faces": args.max_faces,
           "detector": args.detector, "detect_every": args.detect_every,
           "frames_with_face": with_face, "fps_median": float(np.median(fps)), "fps_min": float(np.min(fps)), "fps_max": float(np.max(fps)),
           "peak_rss_mb": peak_rss_mb(),
           "rss_before_tracking_mb": rss_before}
    if args.stages:
        out.update(stage_times(data, args.crop, args.threads))
    return out


def run_child(args, source: str, size: str, clip: str, mode: str) -> dict | None:
    cmd = [sys.executable, __file__, "--one", "--source", source, "--size", size, "--clip", clip,
           "--frames", str(args.frames), "--repeats", str(args.repeats), "--crop", str(args.crop),
           "--threads", str(args.threads), "--max-faces", str(args.max_faces), "--detector", args.detector,
           "--detect-every", str(args.detect_every)]
    cmd += ["--prefetch"] if mode == "prefetch" else []
    cmd += ["--stages"] if args.stages and mode == args.modes.split(",")[0] else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="FFmpeg decode threads (0 = FFmpeg's choice)")
    p.add_argument("--max-faces", type=int, default=4)
    p.add_argument("--detector", default="full", choices=["full", "short"])
    p.add_argument("--detect-every", type=int, default=5)
    p.add_argument("--sources", default="astronaut-anim,carphone")
    p.add_argument("--sizes", default="512x512,1280x720")
    p.add_argument("--modes", default="inline,prefetch", help="decode inline and/or in a prefetch thread")
    p.add_argument("--stages", action="store_true", help="also time each stage on its own")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--prefetch", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--clip", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="landmarks-bench-") as tmp:
        for source in args.sources.split(","):
            for size in args.sizes.split(","):
                clip = os.path.join(tmp, f"{source}-{size}.mp4")
                with open(clip, "wb") as f:
                    f.write(make_clip(source, size, args.frames))
                for mode in args.modes.split(","):
                    row = run_child(args, source, size, clip, mode)
                    if row is None:
                        return 1
                    rows.append(row)
    print(f"cpus={os.cpu_count()} load_avg={os.getloadavg()[0]:.2f} frames={args.frames} repeats={args.repeats} "
          f"crop={args.crop} max_faces={args.max_faces} detector={args.detector} detect_every={args.detect_every}")
    head = f"{'source':15s} {'size':9s} {'decode':8s} {'fps med':>8s} {'min':>7s} {'max':>7s} {'peak RSS MB':>11s} {'faces':>5s}"
    print(head + ("  stages ms: decode mesh align+cut smooth warp" if args.stages else ""))
    for r in rows:
        line = (f"{r['source']:15s} {r['size']:9s} {'prefetch' if r['prefetch'] else 'inline':8s} "
                f"{r['fps_median']:8.1f} {r['fps_min']:7.1f} {r['fps_max']:7.1f} {r['peak_rss_mb']:11.0f} {r['frames_with_face']:5d}")
        if "mesh_ms" in r:
            line += (f"  {r['decode_ms']:.2f} {r['mesh_ms']:.2f} {r['align_cut_ms']:.2f} {r['smooth_ms']:.2f} "
                     f"{r['warp_ms']:.2f}")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
