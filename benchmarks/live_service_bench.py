"""Live latency through the optimizer gRPC service (issue 7): frame in -> latent out over loopback gRPC.

    python -m benchmarks.live_service_bench --device cuda --targets runs/results-gpu/cross/bundle.npz

A real optimizer server (services.optimizer, real gRPC on 127.0.0.1, a local artifact store) serves one
person; a client streams driving targets (keypoints + aligned crop as RGB8, as the landmarks service
sends them) at --fps with the live settings of the public API (window 1, keypoint_sigma -1: no
look-ahead) and records, per frame, send -> its OptimizeResponse. One row per --static-step mode, in one
run (warm-up stream first: model load, CUDA graph capture).

The person is SPEED ONLY: a random-init generator of the gpu profile's shape (256 px, channel_max 256,
channel_base 16384, 90 anchors from its mapping network), the anchors' keypoints measured by the landmark
network, an initializer trained briefly on rendered mixes. No identity or quality is measured here.
`--targets` is an evaluation bundle (reenact.evaluation.bundle): its driving frames, and its pickled
landmark network where mediapipe is not installed (the GPU machine).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import threading
import time

import grpc
import numpy as np
import torch

import benchmarks.optimizer_bench as ob
from reenact.api.common.v1 import types_pb2
from reenact.api.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from reenact.optimize import engine
from reenact.store import LocalStore, PersonRepository
from reenact.wire import image_to_proto, tensor_to_proto

PERSON = "bench"


def write_person(store: LocalStore, device: str, anchors: int, resolution: int) -> None:
    """A speed-only person version (generator.pt, anchors.pt, init.pt) into `store`."""
    from reenact.models.checkpoint import save_generator
    from reenact.models.stylegan2 import Generator
    from reenact.optimize.amortized import render_samples, train_regressor

    torch.manual_seed(0)
    G = Generator(z_dim=512, w_dim=512, img_resolution=resolution, channel_base=16384, channel_max=256,
                  num_mapping_layers=8).to(device).eval().requires_grad_(False)
    with torch.no_grad():
        anchor_w = G.mapping(torch.randn(anchors, 512, device=device))[:, 0]
    net = engine.landmark_net(device)
    points = render_samples(G, net, anchor_w, torch.eye(anchors, device=device))
    model, stats = train_regressor(G, net, anchor_w, points, samples=512, steps=300)
    print(f"person: {anchors} anchors, initializer held-out W error {stats.heldout_w_error:.3f} "
          f"(nearest anchor {stats.nearest_w_error:.3f})", flush=True)
    repo = PersonRepository(store)
    with repo.begin_version(PERSON) as writer, tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "generator.pt")
        save_generator(path, G.cpu(), provenance={"person_id": PERSON, "created_by": "live_service_bench"})
        writer.put_file("generator.pt", path)
        buf = io.BytesIO()
        torch.save({"anchor_w": anchor_w.cpu().float(), "anchor_points": points.cpu().float()}, buf)
        writer.put_bytes("anchors.pt", buf.getvalue())
        writer.put_bytes("init.pt", model.to_bytes())
        writer.commit({"resolution": resolution, "num_anchors": anchors})


def stream(address: str, targets, frames: int, fps: float, steps: int) -> dict:
    """One Optimize stream at `fps`; per-frame latency send -> response (ms)."""
    options = optimizer_pb2.OptimizerOptions(steps=steps, window=1, keypoint_sigma=-1.0)
    sent: dict[int, float] = {}
    period = 1.0 / fps

    def requests():
        yield optimizer_pb2.OptimizeRequest(config=optimizer_pb2.OptimizeConfig(person_id=PERSON, options=options))
        start = time.perf_counter()
        for i in range(frames):
            t = targets[i % len(targets)]
            wait = start + i * period - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            msg = optimizer_pb2.OptimizeTarget(index=i, crop_size=t.crop_size)
            msg.keypoints.CopyFrom(tensor_to_proto(t.keypoints, np.float32))
            msg.crop.CopyFrom(image_to_proto(t.crop, types_pb2.IMAGE_ENCODING_RGB8))
            sent[i] = time.perf_counter()
            yield optimizer_pb2.OptimizeRequest(target=msg)

    latencies, errors, steps_seen = [], [], set()
    t0 = time.perf_counter()
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20),
                                                 ("grpc.max_send_message_length", 64 << 20)]) as ch:
        for r in optimizer_pb2_grpc.OptimizerServiceStub(ch).Optimize(requests(), timeout=600):
            latencies.append((time.perf_counter() - sent[r.index]) * 1e3)
            errors.append(r.keypoint_error)
            steps_seen.add(r.steps)
    wall = time.perf_counter() - t0
    lat = np.asarray(latencies)
    return {"n": len(lat), "p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
            "p99": float(np.percentile(lat, 99)), "max": float(lat.max()), "fps": len(lat) / wall,
            "err": float(np.nanmean(errors)), "steps": sorted(steps_seen)}


def serve_and_measure(args, store: LocalStore, targets, mode: str) -> dict:
    from services.optimizer.__main__ import build_server, start_when_store_ready
    from services.optimizer.config import OptimizerConfig

    cfg = OptimizerConfig(port=0, metrics_port=-1, store_url="unused", device=args.device, max_streams=1,
                          workers=3, drain_seconds=1, grace_seconds=0, static_step=mode)
    server = build_server(cfg, store=store, device=args.device)
    server.start()
    try:
        assert start_when_store_ready(server, store, threading.Event())
        stream(server.address, targets, args.warmup_frames, args.fps, args.steps)  # load, capture
        return stream(server.address, targets, args.frames, args.fps, args.steps)
    finally:
        server.stop(drain_seconds=1, grace_seconds=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--targets", required=True, help="evaluation bundle (its driving frames and landmark net)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--warmup-frames", type=int, default=30)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--anchors", type=int, default=90)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--modes", default="off,on", help="--static-step modes to measure, in order")
    args = ap.parse_args()
    from reenact.evaluation.bundle import Bundle
    from reenact.evaluation.methods import bundle_landmark_net

    with bundle_landmark_net(Bundle(args.targets)):
        import services.optimizer.servicer as servicer

        servicer.landmark_net = engine.landmark_net  # the servicer's warm-up too (imported by name)
        targets = ob.load_targets(args.targets, 1000)
        with tempfile.TemporaryDirectory() as tmp:
            store = LocalStore(tmp, fsync=False)
            write_person(store, args.device, args.anchors, args.resolution)
            rows = [(mode, serve_and_measure(args, store, targets, mode)) for mode in args.modes.split(",")]
    dev = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    print(f"\n## optimizer service, live settings (window 1, no look-ahead), {args.steps} step(s), "
          f"{args.frames} frames sent at {args.fps:g}/s, {args.resolution} px, {args.anchors} anchors, {dev}\n"
          "| static step | frames | p50 ms | p90 ms | p99 ms | max ms | frames/s | kp err | steps |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for mode, r in rows:
        print(f"| {mode} | {r['n']} | {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | {r['max']:.1f} "
              f"| {r['fps']:.1f} | {r['err']:.4f} | {r['steps']} |")


if __name__ == "__main__":
    main()
