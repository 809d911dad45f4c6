"""Real time (issue 7): keypoints -> rendered frames, side by side in one run.

    python benchmarks/realtime_bench.py --device cuda --store file:///tmp/store --person bench \\
        --targets .gpu/targets256.npz --save-frames OUT/frames.npz

Rows (every one ends with the rendered frames, so frames/s is keypoints in -> images out):
  per-frame (paper)   fresh optimizer per frame, nearest-anchor start, --baseline-steps Adam steps
                      (its best measured setting), on every --baseline-stride-th frame
  engine (issue 4)    init 'anchor': 200-step first frame, then windows of 16 warm-started, 10 steps
  amortized           init 'regressor' (the person's enrolled initializer), --steps-list steps per
                      frame, windows of 16; and the same in bf16
Quality: the keypoint error of the RENDERED frames (the landmark net on the images vs the driving
keypoints, per-part normalized, / inter-ocular distance), on the frames the per-frame procedure
optimizes ('err base fr') and on all frames; identity distance is scored on a CPU machine from
--save-frames (benchmarks/realtime_identity.py). Then: live mode latency (frames arriving at --live-fps,
adaptive batches), cost vs video length, vs persons served concurrently, and the 1024 px figure with a
random-init 1024 generator (config-f widths; speed only). Warm-up first, CUDA synchronized, medians.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import threading
import time

import numpy as np
import torch

import benchmarks.optimizer_bench as ob
from reenact.optimize import OptimizerOptions, PersonModel, ReenactmentOptimizer, Target, losses
from reenact.optimize.keypoints import get_subset, keypoint_error, scale_keypoints
from reenact.optimize.live import LiveReenactor, render_results

PAPER = dict(learning_rate=3e-2, delta_lr_scale=0.1, lr_final=0.1, init="anchor")


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reenact(person, options, targets, device, *, per_frame=False, bf16=False, compile=False):
    """(seconds, results, images): optimize + render every target."""
    sync(device)
    t0 = time.perf_counter()
    results = []
    if per_frame:
        for t in targets:
            opt = ReenactmentOptimizer(person, options, device=device, bf16=bf16)
            results += opt.push(Target(t.index, t.keypoints, t.crop_size, t.crop)) + opt.flush()
    else:
        opt = ReenactmentOptimizer(person, options, device=device, bf16=bf16, compile=compile)
        for t in targets:
            results += opt.push(t)
        results += opt.flush()
    images = render_results(person, results, device, bf16=bf16)
    sync(device)
    return time.perf_counter() - t0, results, images


@torch.no_grad()
def rendered_error(person, images: np.ndarray, targets: list[Target], net, device) -> np.ndarray:
    r = person.resolution
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
    kp = losses.generated_keypoints(net, x, losses.face_affine(r, torch.device(device)))
    tgt = torch.from_numpy(np.stack([scale_keypoints(t.keypoints, t.crop_size, r) for t in targets])).float().to(device)
    return keypoint_error(kp, tgt, get_subset("default")).cpu().numpy()


def measure(name, person, options, targets, head, args, net, *, per_frame=False, bf16=False, saved=None,
            compile=False) -> dict:
    # warm-up on the same frames: every batch size the run will see (compiled per size) is built here
    t0 = time.perf_counter()
    reenact(person, options, targets[:1] if per_frame else targets, args.device, per_frame=per_frame, bf16=bf16,
            compile=compile)
    print(f"warm-up {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    if torch.device(args.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.baseline_repeats if per_frame else args.repeats):
        seconds, results, images = reenact(person, options, targets, args.device, per_frame=per_frame, bf16=bf16,
                                           compile=compile)
        times.append(seconds)
    mem = torch.cuda.max_memory_allocated() / 2**30 if torch.device(args.device).type == "cuda" else float("nan")
    err = rendered_error(person, images, targets, net, args.device)
    pos = {t.index: i for i, t in enumerate(targets)}
    head_err = float(np.mean([err[pos[i]] for i in head]))
    if saved is not None:
        saved[name] = images
    row = {"name": name, "steps": float(np.mean([r.steps for r in results])), "fps": len(targets) / statistics.median(times),
           "err": float(np.mean(err)), "head_err": head_err, "mem": mem}
    print("measured:", row, flush=True)
    return row


def live(person, options, targets, args, step: str = "auto") -> dict:
    """Frames arrive every 1/live_fps s; each batch takes all arrived frames (<= max_batch)."""
    options = dataclasses.replace(options, motion=args.live_motion)
    rt = LiveReenactor(person, options, device=args.device, max_batch=args.live_batch, bf16=args.bf16_live,
                       compile=args.compile, step=step)
    t0 = time.perf_counter()
    rt.process([targets[0]])  # warm-up: the first call (no warm start), then every batch size with one
    for k in range(1, args.live_batch + 1):  # (compiles, or captures the CUDA graph of, every batch size)
        rt.process([Target(j, t.keypoints, t.crop_size, t.crop) for j, t in enumerate(targets[:k], start=100 * k)])
    print(f"live warm-up ({rt.step}): {time.perf_counter() - t0:.1f} s", flush=True)
    n = args.live_frames
    base = 100 * (args.live_batch + 2)  # the measured stream goes on after the warm-up's frame indices
    seq = [Target(base + i, targets[i % len(targets)].keypoints, targets[0].crop_size, targets[i % len(targets)].crop)
           for i in range(n)]
    period = 1.0 / args.live_fps
    start = time.perf_counter()
    latencies, batches, errors, totals, i = [], [], [], [], 0
    while i < n:
        now = time.perf_counter() - start
        arrived = min(n, int(now / period) + 1)
        if arrived <= i:
            time.sleep(max(0.0, (i * period) - now))
            continue
        take = seq[i:min(arrived, i + args.live_batch)]
        out = rt.process(take)
        errors += [r.keypoint_error for r, _ in out]
        totals += [r.losses.get("total", np.nan) for r, _ in out]
        sync(args.device)
        done = time.perf_counter() - start
        latencies += [done - (t.index - base) * period for t in take]
        batches.append(len(take))
        i += len(take)
    wall = time.perf_counter() - start
    lat = np.asarray(latencies) * 1e3
    return {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "max": float(lat.max()),
            "mean_batch": float(np.mean(batches)), "fps": n / wall, "err": float(np.nanmean(errors)), "step": rt.step,
            "total": float(np.nanmean(totals))}


def scaled_targets(targets: list[Target], n: int) -> list[Target]:
    """n targets walking back and forth over the real ones (a longer video of the same motion)."""
    k = len(targets)
    order = [(i % (2 * k - 2)) if (i % (2 * k - 2)) < k else (2 * k - 2 - i % (2 * k - 2)) for i in range(n)]
    return [Target(i, targets[j].keypoints, targets[j].crop_size, targets[j].crop) for i, j in enumerate(order)]


def concurrent(person, options, targets, args, persons: int) -> dict:
    models = [person] + [copy.deepcopy(person) for _ in range(persons - 1)]
    for m in models:
        reenact(m, options, targets[:16], args.device)
    sync(args.device)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=reenact, args=(m, options, targets, args.device)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sync(args.device)
    wall = time.perf_counter() - t0
    return {"persons": persons, "fps_total": persons * len(targets) / wall, "fps_each": len(targets) / wall}


def hires(args, steps: list[int]) -> list[dict]:
    from reenact.models.stylegan2 import Generator
    from reenact.optimize.amortized import KeypointRegressor

    torch.manual_seed(0)
    res = args.hires
    G = Generator(z_dim=512, w_dim=512, img_resolution=res, channel_base=32768, channel_max=512,
                  num_mapping_layers=8)
    with torch.no_grad():
        anchor_w = G.mapping(torch.randn(100, 512))[:, 0]
    base = torch.from_numpy(ob.face_keypoints(res))
    pts = base + torch.randn(100, 478, 3) * (res / 128)
    person = PersonModel.from_parts("hires", 1, G, anchor_w, pts, args.device)
    person.initializer = KeypointRegressor(100, res).to(args.device).eval()  # untrained: speed only
    targets = [Target(i, (base.numpy() + np.float32(0.3 * np.sin(i / 5))).astype(np.float32), res, None)
               for i in range(args.hires_frames)]
    rows = []
    for s in steps:
        for bf16 in (False, True):
            opts = OptimizerOptions(steps=s, window=args.hires_window, init="regressor", keypoint_sigma=0.0,
                                    tolerance=0.0)
            reenact(person, opts, targets[: args.hires_window], args.device, bf16=bf16)
            if torch.device(args.device).type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sec, _, _ = reenact(person, opts, targets, args.device, bf16=bf16)
            mem = torch.cuda.max_memory_allocated() / 2**30 if torch.device(args.device).type == "cuda" else 0.0
            rows.append({"steps": s, "bf16": bf16, "fps": len(targets) / sec, "mem": mem})
            print("hires:", rows[-1], flush=True)
    return rows


def print_table(rows, person, targets, head, args) -> None:
    dev = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    print(f"\n## keypoints -> frames, {person.resolution} px, {len(person.anchor_w)} anchors, {len(targets)} real "
          f"driving frames, {dev}")
    print("| procedure | steps/frame | frames/s | err (all) | err (frames " + ",".join(map(str, head))
          + ") | vs paper | speed-up | GPU GiB |\n|---|---|---|---|---|---|---|---|")
    base = rows[0] if rows and rows[0]["name"].startswith("per-frame") else None
    for r in rows:
        rel = f"{r['head_err'] / base['head_err'] * 100 - 100:+.1f}%" if base else "-"
        up = f"{r['fps'] / base['fps']:.1f}x" if base else "-"
        print(f"| {r['name']} | {r['steps']:.1f} | {r['fps']:.2f} | {r['err']:.4f} | {r['head_err']:.4f} | {rel} "
              f"| {up} | {r['mem']:.2f} |")


def other_sections(person, targets, steps_list, skip, args) -> None:
    common = dict(keypoint_sigma=0.0, tolerance=0.0)
    live_opts = OptimizerOptions(steps=args.live_steps, init="regressor")
    if args.live_sweep:
        print(f"\n## live mode sweep: {args.live_frames} frames arriving at {args.live_fps:g} frames/s "
              f"(nomask: keypoint loss only, no mouth/eye photometric terms; motion {args.live_motion}; step engine: "
              "the eager ReenactmentOptimizer, static: the CUDA-graph step)\n"
              "| step | steps | max batch | terms | p50 ms | p99 ms | max ms | mean batch | frames/s | kp err | loss |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
        for cfg in args.live_sweep.split(","):
            parts = cfg.split(":")
            steps, batch, nomask = int(parts[0]), int(parts[1]), "nomask" in parts[2:]
            step = "engine" if "engine" in parts[2:] else "static" if "static" in parts[2:] else "auto"
            extra = dict(mouth_weight=0.0, eye_weight=0.0) if nomask else {}
            args.live_batch = batch
            out = live(person, OptimizerOptions(steps=steps, init="regressor", **extra), targets, args, step)
            print(f"| {out['step']} | {steps} | {batch} | {'keypoints' if nomask else 'all'} | {out['p50']:.1f} "
                  f"| {out['p99']:.1f} | {out['max']:.1f} | {out['mean_batch']:.2f} | {out['fps']:.1f} "
                  f"| {out['err']:.5f} | {out['total']:.4f} |", flush=True)
    if "live" not in skip:
        out = live(person, live_opts, targets, args)
        print(f"\n## live mode: {args.live_frames} frames arriving at {args.live_fps:g} frames/s, steps "
              f"{args.live_steps}, batches <= {args.live_batch}{' bf16' if args.bf16_live else ''}"
              f"{' compiled' if args.compile else ''}\n"
              f"| p50 ms | p99 ms | max ms | mean batch | frames/s |\n|---|---|---|---|---|\n"
              f"| {out['p50']:.1f} | {out['p99']:.1f} | {out['max']:.1f} | {out['mean_batch']:.2f} | {out['fps']:.1f} |",
              flush=True)
    mid = OptimizerOptions(steps=steps_list[len(steps_list) // 2], window=args.window, init="regressor", **common)
    if "length" not in skip:
        print(f"\n## cost vs video length (amortized steps {mid.steps})\n| frames | frames/s | GPU GiB |\n|---|---|---|")
        for n in [int(x) for x in args.lengths.split(",")]:
            seq = scaled_targets(targets, n)
            if torch.device(args.device).type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sec, _, _ = reenact(person, mid, seq, args.device)
            mem = torch.cuda.max_memory_allocated() / 2**30 if torch.device(args.device).type == "cuda" else 0.0
            print(f"| {n} | {n / sec:.2f} | {mem:.2f} |", flush=True)
    if "persons" not in skip:
        print(f"\n## persons served concurrently (one thread each, amortized steps {mid.steps}, "
              f"{len(targets)} frames each)\n| persons | frames/s total | frames/s each |\n|---|---|---|")
        for p in [int(x) for x in args.persons.split(",")]:
            out = concurrent(person, mid, targets, args, p)
            print(f"| {p} | {out['fps_total']:.2f} | {out['fps_each']:.2f} |", flush=True)
    if args.hires:
        rows_h = hires(args, [int(s) for s in args.hires_steps.split(",")])
        print(f"\n## {args.hires} px (random-init config-f-width generator, 100 anchors, window {args.hires_window})\n"
              "| steps/frame | bf16 | frames/s | GPU GiB |\n|---|---|---|---|")
        for r in rows_h:
            print(f"| {r['steps']} | {r['bf16']} | {r['fps']:.2f} | {r['mem']:.2f} |")



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--store", default="")
    ap.add_argument("--person", default="")
    ap.add_argument("--targets", required=True, help=".npz of real driving targets (optimizer_bench --save-targets, "
                    "or an evaluation bundle: its driving frames)")
    ap.add_argument("--keypoints", default="", help="face keypoints .npy for the synthetic 1024 person")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--baseline-steps", type=int, default=200)
    ap.add_argument("--baseline-stride", type=int, default=6)
    ap.add_argument("--baseline-frames", type=int, default=6)
    ap.add_argument("--baseline-repeats", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps-list", default="2,3,5")
    ap.add_argument("--live-steps", type=int, default=2)
    ap.add_argument("--live-batch", type=int, default=4)
    ap.add_argument("--live-fps", type=float, default=30.0)
    ap.add_argument("--live-frames", type=int, default=150)
    ap.add_argument("--bf16-live", action="store_true")
    ap.add_argument("--live-sweep", default="", help="live configs 'steps:max_batch[:nomask][:engine|:static]',...")
    ap.add_argument("--live-motion", default="absolute", choices=("absolute", "relative"))
    ap.add_argument("--compile", action="store_true", help="also rows with the step's forward under torch.compile; "
                    "live mode compiled")
    ap.add_argument("--lengths", default="32,128,512")
    ap.add_argument("--persons", default="1,2,4")
    ap.add_argument("--hires", type=int, default=1024, help="0: skip the high-resolution figure")
    ap.add_argument("--hires-frames", type=int, default=32)
    ap.add_argument("--hires-window", type=int, default=8)
    ap.add_argument("--hires-steps", default="1,3")
    ap.add_argument("--save-frames", default="")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: "
                    "paper,engine,amortized,live,length,persons")
    args = ap.parse_args()
    ob.KEYPOINTS_FILE = args.keypoints
    if "landmark_net" in np.load(args.targets).files:  # an evaluation bundle: its network (no mediapipe needed)
        from reenact.evaluation.bundle import Bundle
        from reenact.evaluation.methods import bundle_landmark_net

        with bundle_landmark_net(Bundle(args.targets)):
            return run(args)
    return run(args)


def run(args) -> None:
    from reenact.optimize import engine

    skip = set(filter(None, args.skip.split(",")))
    from reenact.store import PersonRepository, open_store

    person = PersonModel.load(PersonRepository(open_store(args.store)), args.person, device=args.device)
    if person.initializer is None:
        raise SystemExit(f"person {args.person} has no amortized initializer: enroll it again")
    targets = ob.load_targets(args.targets, args.frames)
    head = list(range(0, len(targets), args.baseline_stride))[: args.baseline_frames]
    net = engine.landmark_net(args.device)
    saved: dict[str, np.ndarray] = {}
    common = dict(keypoint_sigma=0.0, tolerance=0.0)
    rows = []
    if "paper" not in skip:
        opts = OptimizerOptions(first_frame_steps=args.baseline_steps, steps=args.baseline_steps, window=1,
                                **PAPER, **common)
        rows.append(measure(f"per-frame (paper) {args.baseline_steps}", person, opts, [targets[i] for i in head],
                            head, args, net, per_frame=True, saved=saved))
    if "engine" not in skip:
        rows.append(measure("engine (issue 4) steps 10", person, OptimizerOptions(
            steps=10, window=args.window, init="anchor", **common), targets, head, args, net, saved=saved))
    steps_list = [int(s) for s in args.steps_list.split(",")]
    for s in ([] if "amortized" in skip else steps_list):
        opts = OptimizerOptions(steps=s, window=args.window, init="regressor", **common)
        rows.append(measure(f"amortized steps {s}", person, opts, targets, head, args, net, saved=saved))
        if torch.device(args.device).type == "cuda":
            rows.append(measure(f"amortized steps {s} bf16", person, opts, targets, head, args, net, bf16=True,
                                saved=saved))
        if args.compile:
            rows.append(measure(f"amortized steps {s} compiled", person, opts, targets, head, args, net,
                                saved=saved, compile=True))
    print_table(rows, person, targets, head, args)
    if args.save_frames:
        np.savez_compressed(args.save_frames, head=np.asarray(head),
                            **{k.replace(" ", "_"): v for k, v in saved.items()})
    other_sections(person, targets, steps_list, skip, args)

if __name__ == "__main__":
    main()
