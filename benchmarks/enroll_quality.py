"""Enrollment quality and wall time on a self-scan fixture (issue 3's GPU measurement).

Three steps, so the GPU machine needs neither MediaPipe nor dlib:
  1. CPU:  python benchmarks/enroll_quality.py prealign --face astronaut --frames 240 --out .bench/astro.npz
           (renders the TEST FIXTURE self-scan of a real photo at 512 px and aligns it with MediaPipe)
  2. GPU:  python benchmarks/enroll_quality.py train --aligned .bench/astro.npz --profile gpu --out DIR
           (select, base, anchors, tune, evaluate; writes DIR/enroll_metrics.json and DIR/p0.npz with
           JPEG renders of random convex mixes of anchors, P0 samples)
  3. CPU:  python benchmarks/enroll_quality.py identity --renders DIR/p0.npz --photo astronaut
           (dlib identity distance of the P0 samples to the source photo; < 0.6 = same person)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cmd_prealign(ns) -> None:
    from reenact.enroll.scan import align_scan
    from reenact.fixtures import load_face, make_schedule, render_selfscan, write_selfscan

    frames, truth = render_selfscan(load_face(ns.face), make_schedule(ns.frames, seed=0), size=ns.size)
    with tempfile.TemporaryDirectory() as tmp:
        video = pathlib.Path(tmp) / "scan.mp4"
        write_selfscan(video, frames, fps=30)
        t0 = time.perf_counter()
        aligned = align_scan(str(video), ns.resolution, should_stop=lambda: False, progress=lambda i, n: None)
        print(f"aligned {len(aligned.crops)} frames in {time.perf_counter() - t0:.1f}s")
    out = pathlib.Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    aligned.save(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


class StageTimer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.stage, self.start = None, self.t0
        self.times: dict[str, float] = {}
        self.last: dict[str, dict] = {}

    def __call__(self, *, stage, step, total, fraction, losses, eta_seconds, message) -> None:
        now = time.perf_counter()
        if stage != self.stage:
            if self.stage is not None:
                self.times[self.stage] = round(now - self.start, 2)
            self.stage, self.start = stage, now
            print(f"[{now - self.t0:7.1f}s] {stage}", flush=True)
        if losses:
            self.last[stage] = {k: round(float(v), 4) for k, v in losses.items()}

    def finish(self) -> None:
        self.times[self.stage] = round(time.perf_counter() - self.start, 2)
        self.times["total"] = round(time.perf_counter() - self.t0, 2)


def cmd_train(ns) -> None:
    import cv2
    import torch

    from reenact.enroll import evaluate
    from reenact.enroll.pipeline import Checkpoints, StageProgress, _device, run_enrollment
    from reenact.enroll.profiles import get_profile
    from reenact.enroll.scan import AlignedScan
    from reenact.models.checkpoint import load_generator
    from reenact.store import LocalStore, PersonRepository

    out = pathlib.Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    aligned = AlignedScan.load(ns.aligned)
    profile = dataclasses.replace(get_profile(ns.profile), p0_samples=0)  # identity is scored on the CPU
    profile = profile.override(base_steps=ns.base_steps, tune_steps=ns.tune_steps, eval_steps=ns.eval_steps)
    timer = StageTimer()
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(ns.store or tmp)
        result = run_enrollment("", person_id="bench", profile=profile, repo=PersonRepository(store),
                                ckpt=Checkpoints(store, "jobs/bench/ckpt/"), progress=StageProgress(timer),
                                should_stop=lambda: False, device=ns.device, aligned=aligned,
                                checkpoint_every_s=1e9)
        timer.finish()
        repo = PersonRepository(store)
        gpath = pathlib.Path(tmp) / "g.pt"
        gpath.write_bytes(repo.read("bench", 1, "generator.pt"))
        G = load_generator(gpath, device=_device(ns.device))
        anchors = torch.load(__import__("io").BytesIO(repo.read("bench", 1, "anchors.pt")), weights_only=True)
    anchor_w = anchors["anchor_w"].to(next(G.parameters()).device)
    rng = np.random.default_rng(0)
    mix = torch.as_tensor(rng.dirichlet(np.ones(len(anchor_w)), ns.p0), dtype=torch.float32,
                          device=anchor_w.device)
    ws = (mix @ anchor_w)[:, None, :].expand(-1, G.num_ws, -1)
    imgs = evaluate.to_uint8(evaluate.render(G, ws))
    ref = evaluate.to_uint8(evaluate.render(G, anchor_w[:1, None, :].expand(-1, G.num_ws, -1)))[0]
    enc = [np.frombuffer(cv2.imencode(".jpg", im[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])[1], np.uint8)
           for im in imgs]
    np.savez(out / "p0.npz", jpeg=np.array(enc, dtype=object), reference=ref, allow_pickle=True)
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report = {"profile": profile.as_dict(), "device": device_name, "stage_seconds": timer.times,
              "last_losses": timer.last, "metrics": result.metrics, "coverage": result.coverage,
              "num_anchors": len(result.anchors),
              "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
              if torch.cuda.is_available() else None}
    (out / "enroll_metrics.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("device", "stage_seconds", "metrics", "peak_gpu_mem_gib")},
                     indent=1))


def cmd_identity(ns) -> None:
    import cv2

    from reenact import samples
    from reenact.metrics.identity import FaceDescriptor

    z = np.load(ns.renders, allow_pickle=True)
    fd = FaceDescriptor()
    photo = getattr(samples, ns.photo)()
    ref = fd.describe(photo)
    dists = []
    for buf in z["jpeg"]:
        d = fd.describe(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])
        dists.append(np.nan if d is None else float(np.linalg.norm(d - ref)))
    d = np.asarray(dists)
    found = ~np.isnan(d)
    ref_gen = fd.describe(z["reference"])
    print(json.dumps({
        "samples": len(d), "faces_found": int(found.sum()),
        "fraction_below_0_5": round(float((d[found] < 0.5).sum() / len(d)), 4),
        "fraction_below_0_6": round(float((d[found] < 0.6).sum() / len(d)), 4),
        "median": round(float(np.median(d[found])), 4) if found.any() else None,
        "neutral_anchor_render_to_photo": None if ref_gen is None else round(float(np.linalg.norm(ref_gen - ref)), 4),
    }, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prealign")
    p.add_argument("--face", default="astronaut")
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_prealign)
    t = sub.add_parser("train")
    t.add_argument("--aligned", required=True)
    t.add_argument("--profile", default="gpu")
    t.add_argument("--device", default="auto")
    t.add_argument("--base-steps", type=int, default=0, help="override the profile (0 = keep)")
    t.add_argument("--tune-steps", type=int, default=0)
    t.add_argument("--eval-steps", type=int, default=0)
    t.add_argument("--p0", type=int, default=200)
    t.add_argument("--store", default="", help="keep the person in this local store dir (default: temporary)")
    t.add_argument("--out", required=True)
    t.set_defaults(fn=cmd_train)
    i = sub.add_parser("identity")
    i.add_argument("--renders", required=True)
    i.add_argument("--photo", default="astronaut")
    i.set_defaults(fn=cmd_identity)
    ns = ap.parse_args()
    ns.fn(ns)


if __name__ == "__main__":
    main()
