"""Where one optimizer step goes: generator and landmark-net costs, forward and backward, per batch size.

    python benchmarks/step_profile.py --device cuda [--batches 1,16,64] [--resolution 256] [--compile]

A random-init generator of the gpu profile's architecture (cost does not depend on the weights), the
differentiable MediaPipe attention mesh, real face keypoints as targets. Every row: warm-up, CUDA
synchronized, median of --repeats; ms per call and per frame.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.optimizer_bench import synthetic_person
from reenact.models import pplus as pp
from reenact.optimize import losses
from reenact.optimize.engine import landmark_net
from reenact.optimize.keypoints import get_subset


def timed(fn, device, repeats: int) -> float:
    fn()
    fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e3


def compiled_step(G, net, affine, subset, anchors, alpha, delta, target, mode: str):
    """The full step with the forward (P+ -> image -> keypoints -> loss) under torch.compile; the first
    call compiles (its time is printed)."""
    def forward(a, d):
        im = G.synthesis(pp.combine(pp.coefficients(a, d), anchors), noise_mode="const")
        kp = losses.generated_keypoints(net, im.float(), affine)
        return losses.keypoint_loss(kp, target, subset).sum()

    fwd = torch.compile(forward, mode=mode, dynamic=False)

    def run():
        a = alpha.clone().requires_grad_(True)
        d = delta.clone().requires_grad_(True)
        fwd(a, d).backward()

    t0 = time.perf_counter()
    run()
    print(f"compile ({mode}, batch {alpha.shape[0]}): {time.perf_counter() - t0:.1f} s", flush=True)
    return run


def profile_batch(b: int, person, net, affine, subset, dev, args) -> None:
    G, anchors = person.G, person.anchor_w.float()
    alpha = pp.init_alpha(anchors.shape[0], index=torch.arange(b) % anchors.shape[0], batch_size=b).to(dev)
    delta = torch.zeros(b, G.num_ws, anchors.shape[0], device=dev)
    target = person.anchor_points[:b].to(dev) if b <= anchors.shape[0] else \
        person.anchor_points[torch.arange(b) % anchors.shape[0]].to(dev)

    def ws():
        return pp.combine(pp.coefficients(alpha, delta), anchors)

    rows = {}
    with torch.no_grad():
        w = ws()
        rows["G fwd fp32 (no grad)"] = lambda: G.synthesis(w, noise_mode="const")

        def g_bf16():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                return G.synthesis(w, noise_mode="const")
        rows["G fwd bf16 (no grad)"] = g_bf16
        img = G.synthesis(w, noise_mode="const")
        rows["landmarks fwd (no grad)"] = lambda: losses.generated_keypoints(net, img, affine)

    def step(bf16: bool):
        def run():
            a = alpha.clone().requires_grad_(True)
            d = delta.clone().requires_grad_(True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and dev.type == "cuda"):
                im = G.synthesis(pp.combine(pp.coefficients(a, d), anchors), noise_mode="const")
            kp = losses.generated_keypoints(net, im.float(), affine)
            loss = losses.keypoint_loss(kp, target, subset).sum()
            loss.backward()
        return run

    def g_only_step():
        a = alpha.clone().requires_grad_(True)
        im = G.synthesis(pp.combine(pp.coefficients(a, delta), anchors), noise_mode="const")
        im.square().mean().backward()

    def lm_only_step():
        im = img.clone().requires_grad_(True)
        kp = losses.generated_keypoints(net, im, affine)
        losses.keypoint_loss(kp, target, subset).sum().backward()

    rows["G fwd+bwd fp32"] = g_only_step
    rows["landmarks fwd+bwd"] = lm_only_step
    rows["full step fp32"] = step(False)
    rows["full step bf16"] = step(True)
    if args.compile:
        cs = torch.compile(G.synthesis)
        with torch.no_grad():
            rows["G fwd compiled (no grad)"] = lambda: cs(w, noise_mode="const")
        for mode in ("default", "max-autotune-no-cudagraphs"):
            rows[f"full step compiled ({mode})"] = compiled_step(G, net, affine, subset, anchors, alpha, delta,
                                                                 target, mode)
    for name, fn in rows.items():
        ms = timed(fn, dev, args.repeats)
        print(f"| {b} | {name} | {ms:.2f} | {ms / b:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd synthesis")
    ap.add_argument("--keypoints", default="", help="precomputed 256 px keypoints .npy (no MediaPipe here)")
    args = ap.parse_args()
    if args.keypoints:
        import benchmarks.optimizer_bench as ob

        ob.KEYPOINTS_FILE = args.keypoints
    dev = torch.device(args.device)
    person = synthetic_person(args.resolution, 100, args.device)
    net = landmark_net(args.device)
    affine = losses.face_affine(person.resolution, dev)
    subset = get_subset("default")
    print("| batch | part | ms/call | ms/frame |\n|---|---|---|---|")
    for b in [int(x) for x in args.batches.split(",")]:
        profile_batch(b, person, net, affine, subset, dev, args)
    if dev.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB; {torch.cuda.get_device_name()}")


if __name__ == "__main__":
    main()
