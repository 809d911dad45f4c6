"""CPU cost of the residual lip warp (reenact.lipwarp.warp_lips) per output frame, as the gateway pays it.

A fixture face (the astronaut, reenact.fixtures) with its exact lip points, the lips moved by a random
displacement of about 2 px per point (the size the engine returns on the carphone cross driver), warped at
each output size. Warm-up, then the median and p90 of `--repeats` calls per size, one thread.

    OMP_NUM_THREADS=1 python benchmarks/lipwarp_bench.py --sizes 256 512 1024
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import cv2

    from reenact import lipwarp
    from reenact.fixtures import load_face, make_schedule, render_selfscan

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--move-px", type=float, default=2.0, help="standard deviation of the lip moves at 256 px")
    ns = p.parse_args(argv)
    cv2.setNumThreads(1)
    frames, truth = render_selfscan(load_face("astronaut"), make_schedule(1), size=256)
    pts = np.asarray(truth["frames"][0]["landmarks_2d"], np.float64)
    src = pts[list(lipwarp.LIP_POINTS)].astype(np.float32)
    dst = src + np.random.default_rng(0).normal(0, ns.move_px, src.shape).astype(np.float32)
    print(f"lip warp, {lipwarp.NUM_LIP_POINTS} points moved by ~{ns.move_px:g} px (at 256 px), one thread")
    print("| output px | median ms | p90 ms |")
    print("|---|---|---|")
    for size in ns.sizes:
        image = cv2.resize(frames[0], (size, size), interpolation=cv2.INTER_CUBIC)
        scale = size / 256.0
        for _ in range(5):
            lipwarp.warp_lips(image, src, dst, scale=scale)
        times = []
        for _ in range(ns.repeats):
            t0 = time.perf_counter()
            lipwarp.warp_lips(image, src, dst, scale=scale)
            times.append(time.perf_counter() - t0)
        ms = np.array(times) * 1e3
        print(f"| {size} | {np.median(ms):.2f} | {np.percentile(ms, 90):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
