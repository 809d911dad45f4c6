"""Timing of the differentiable MediaPipe face-landmark networks (reenact.mpdiff).

Prints, per device / model / batch size, the median time of a forward pass (no_grad) and of a
forward + backward pass (gradient w.r.t. the input image), in ms per batch and per image.
Warm-up iterations first; CUDA timings are synchronized. fp32 throughout: the forward pass turns
cuDNN TF32 off by itself (FaceLandmarkNet.exact_fp32); --tf32 lets it and the backward use TF32
(TF32 convolutions move points by ~1e-2 px). --cuda-graphs also times the CUDA-graphed callable
(reenact.mpdiff.face_landmark.cuda_graphed), which removes the launch overhead of ~1000 small kernels.

    python benchmarks/mpdiff_bench.py                       # CPU (+ CUDA if available)
    python benchmarks/mpdiff_bench.py --model-dir DIR       # .tflite files from DIR (no mediapipe)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reenact.mpdiff.face_landmark import MODEL_FILES, FaceLandmarkNet, cuda_graphed  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench(net, device: torch.device, batch: int, warmup: int, iters: int, channels_last: bool = False):
    x = torch.rand(batch, 3, 192, 192, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def fwd():
        with torch.no_grad():
            net(x)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        pts, logit = net(xi)
        (pts[..., :2].square().mean() + logit.sum()).backward()

    return _time(fwd, device, warmup, iters), _time(fwd_bwd, device, warmup, iters)


def check(path: str, rows, channels_last: bool) -> None:
    """Max |points - points of the CPU fp32 module| on real crops, per device/model."""
    import numpy as np

    crops = torch.from_numpy(np.load(path)).permute(0, 3, 1, 2).float() / 255
    print(f"\nmax |points(device) - points(CPU fp32)| px on {len(crops)} crops from {path}:")
    for dev_name, model, net, model_path in rows:
        cpu = FaceLandmarkNet.from_mediapipe(model, path=model_path)
        with torch.no_grad():
            ref, ref_logit = cpu(crops)
            x = crops.to(dev_name)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            pts, logit = net(x)
        d = (pts.float().cpu() - ref).abs().amax().item()
        dl = (logit.float().cpu() - ref_logit).abs().amax().item()
        print(f"  {dev_name:<6} {model:<10} points {d:.2e} px, logit {dl:.2e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["basic", "attention"], choices=["basic", "attention"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument(
        "--model-dir", default=None, help="folder holding the .tflite files (default: mediapipe's)"
    )
    ap.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA")
    ap.add_argument("--channels-last", action="store_true", help="NHWC memory format for weights and input")
    ap.add_argument("--compile", default=None, help="torch.compile mode: default, reduce-overhead, ...")
    ap.add_argument(
        "--cuda-graphs", action="store_true", help="CUDA: time torch.cuda.make_graphed_callables too"
    )
    ap.add_argument(
        "--check", default=None, help="uint8 crops [N,192,192,3] (.npy): max |device - CPU| of points"
    )
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    # CUDA first: CPU runs leave OpenMP worker threads spinning, which slows the kernel-launching thread
    devices = args.devices or ((["cuda"] if torch.cuda.is_available() else []) + ["cpu"])
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32

    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}", end="")
    if torch.cuda.is_available():
        print(f", CUDA {torch.cuda.get_device_name(0)}, TF32 {'on' if args.tf32 else 'off'}", end="")
    print(f"; channels_last {args.channels_last}, compile {args.compile}", end="")
    print(f"; median of {args.iters} after {args.warmup} warm-up\n")
    header = f"{'device':<6} {'model':<10} {'batch':>5} | {'fwd ms/batch':>12} {'fwd ms/img':>10} | "
    header += f"{'fwd+bwd ms/batch':>16} {'fwd+bwd ms/img':>14}"
    print(header)
    print("-" * len(header))
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        for model in args.models:
            path = os.path.join(args.model_dir, MODEL_FILES[model]) if args.model_dir else None
            net = FaceLandmarkNet.from_mediapipe(model, device=device, path=path)
            net.exact_fp32 = not args.tf32
            if args.channels_last:
                net = net.to(memory_format=torch.channels_last)
            if args.compile:
                net = torch.compile(net, mode=None if args.compile == "default" else args.compile)
            for batch in args.batches:
                variants = [(dev_name, net)]
                if args.cuda_graphs and device.type == "cuda":
                    variants.append(("cuda/g", cuda_graphed(net, batch)))
                for label, fn in variants:
                    f, fb = bench(fn, device, batch, args.warmup, args.iters, args.channels_last)
                    print(
                        f"{label:<6} {model:<10} {batch:>5} | {f:>12.2f} {f / batch:>10.2f} | "
                        f"{fb:>16.2f} {fb / batch:>14.2f}",
                        flush=True,
                    )
            rows.append((dev_name, model, net, path))
    if args.check:
        check(args.check, rows, args.channels_last)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
