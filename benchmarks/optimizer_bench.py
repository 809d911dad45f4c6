"""Reenactment optimizer throughput: the straightforward per-frame procedure vs the batched warm-started engine.

    python benchmarks/optimizer_bench.py --device cuda                 # random-init 256 px generator (gpu profile)
    python benchmarks/optimizer_bench.py --device cuda --store file:///data/store --person astro

(a) straightforward: every frame alone (window 1), from its nearest anchor, a fixed step count
    (`--baseline-steps`, the paper's few hundred), no warm start, no early stop.
(b) engine: windows of `--window` frames as one batch, warm-started from the previous frame, for each
    step budget in `--steps`; the table marks the smallest budget whose mean keypoint error is <= (a)'s.
Both use the same targets with keypoint_sigma 0 (the targets are not smoothed, so the errors compare).

Without --person: a random-init generator of the gpu profile's architecture, 100 anchors from its mapping
network, anchor keypoints = a real face's MediaPipe keypoints (the astronaut photo, 256 px aligned crop)
with small random offsets, targets = that face's keypoints moved smoothly (head shift, mouth opening).
The generated images are not faces then, so the errors only compare the two procedures, not quality.
Prints a table (warm-up first, CUDA synchronized, median of `--repeats` runs); peak GPU memory per row.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from reenact.optimize import OptimizerOptions, PersonModel, ReenactmentOptimizer, Target

KEYPOINTS_FILE = ""  # --keypoints: precomputed keypoints (machines without MediaPipe)


def face_keypoints(size: int) -> np.ndarray:
    """MediaPipe keypoints [478, 3] of the astronaut photo in its aligned crop of `size` pixels."""
    if KEYPOINTS_FILE:
        kp = np.load(KEYPOINTS_FILE).astype(np.float32)  # saved for a 256 px crop
        return kp * np.float32(size / 256)
    from reenact.face.tracker import detect_image
    from reenact.fixtures import load_face

    return detect_image(load_face("astronaut"), size, return_crop=False).crop_points.astype(np.float32)


def synthetic_person(resolution: int, num_anchors: int, device: str) -> PersonModel:
    from reenact.enroll.profiles import get_profile
    from reenact.models.stylegan2 import Generator

    p = get_profile("gpu")
    torch.manual_seed(0)
    G = Generator(z_dim=p.w_dim, w_dim=p.w_dim, img_resolution=resolution, channel_base=p.channel_base,
                  channel_max=p.channel_max, num_mapping_layers=p.mapping_layers)
    with torch.no_grad():
        anchor_w = G.mapping(torch.randn(num_anchors, p.w_dim))[:, 0]
    base = torch.from_numpy(face_keypoints(resolution))
    points = base + torch.randn(num_anchors, 478, 3) * (resolution / 128)
    return PersonModel.from_parts("bench", 1, G, anchor_w, points, device)


def load_targets(path: str, num_frames: int) -> list[Target]:
    """Real driving targets saved by `--save-targets` (aligned crops + their MediaPipe keypoints), or the
    driving frames with a face of an evaluation bundle (reenact.evaluation.bundle: `drv_raw_points`, the
    unsmoothed points, as a live stream without smoothing gets them, and `drv_crops`)."""
    z = np.load(path)
    if "drv_raw_points" in z:
        face = z["drv_has_face"]
        kp, crops = z["drv_raw_points"][face][:num_frames], z["drv_crops"][face][:num_frames]
    else:
        kp, crops = z["keypoints"][:num_frames], z["crops"][:num_frames]
    return [Target(i, kp[i].astype(np.float32), crops.shape[1], crops[i]) for i in range(len(kp))]


def save_targets(path: str, size: int, num_frames: int) -> None:
    """Held-out self-scan fixture frames of the astronaut (TEST FIXTURE), aligned by the landmarks core."""
    from reenact.face.tracker import FaceTracker
    from reenact.fixtures import load_face, make_schedule, render_selfscan

    frames, _ = render_selfscan(load_face("astronaut"), make_schedule(num_frames, seed=1, held_out=True),
                                size=512)
    with FaceTracker(crop_size=size, sigma=0.0, return_crop=True) as tracker:
        res = [r for i, f in enumerate(frames) for r in tracker.push(i, f)] + tracker.flush()
    res = [r for r in res if r.crop_points is not None]
    np.savez_compressed(path, keypoints=np.stack([r.crop_points for r in res]).astype(np.float32),
                        crops=np.stack([r.crop for r in res]))
    print(f"wrote {len(res)} targets to {path}")


def make_targets(person: PersonModel, num_frames: int) -> list[Target]:
    r = person.resolution
    base = face_keypoints(r)
    crop = np.full((r, r, 3), 128, np.uint8)
    out = []
    for t in range(num_frames):
        kp = base.copy()
        kp[:, 0] += 0.02 * r * np.sin(t / 6.0)
        kp[[14, 87, 178, 88, 95, 317, 402, 318, 324], 1] += 0.02 * r * (1 + np.sin(t / 4.0))
        out.append(Target(t, kp, r, crop))
    return out


def run_once(person, options, targets, device, per_frame: bool, bf16: bool):
    """(seconds, results). per_frame: a fresh optimizer per frame (no warm start)."""
    sync(device)
    start = time.perf_counter()
    results = []
    if per_frame:
        for t in targets:
            opt = ReenactmentOptimizer(person, options, device=device, bf16=bf16)
            results += opt.push(Target(0, t.keypoints, t.crop_size, t.crop)) + opt.flush()
    else:
        opt = ReenactmentOptimizer(person, options, device=device, bf16=bf16)
        for t in targets:
            results += opt.push(t)
        results += opt.flush()
    sync(device)
    return time.perf_counter() - start, results


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def baseline_indices(args, num_frames: int) -> list[int]:
    return list(range(0, num_frames, max(1, args.baseline_stride)))[: args.baseline_frames]


def measure(name, person, options, targets, args, per_frame=False, bf16=False) -> dict:
    """Median time of `repeats` runs after a warm-up; 'head_error' = mean keypoint error on the frames the
    per-frame procedure optimizes (baseline_indices), so rows compare at equal frames."""
    run_once(person, options, targets[: max(2, options.window)], args.device, per_frame, bf16)  # warm-up
    if torch.device(args.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, results = [], None
    repeats = (args.baseline_repeats or args.repeats) if per_frame else args.repeats
    for _ in range(repeats):
        seconds, results = run_once(person, options, targets, args.device, per_frame, bf16)
        times.append(seconds)
    mem = torch.cuda.max_memory_allocated() / 2**30 if torch.device(args.device).type == "cuda" else float("nan")
    seconds = statistics.median(times)
    steps = np.mean([r.steps for r in results])
    errors = [r.keypoint_error for r in results]
    return {"name": name, "window": 1 if per_frame else options.window, "steps": steps,
            "fps": len(targets) / seconds, "error": float(np.mean(errors)),
            "head_error": float(np.mean(errors if per_frame else [errors[i] for i in baseline_indices(
                args, len(errors))])), "mem": mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--anchors", type=int, default=100)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--baseline-steps", type=int, default=200)
    ap.add_argument("--baseline-frames", type=int, default=8, help="frames timed for the slow procedure")
    ap.add_argument("--baseline-stride", type=int, default=1, help="the slow procedure optimizes every S-th "
                    "frame (0, S, 2S, ...), so the equal-quality comparison spans the whole motion")
    ap.add_argument("--baseline-repeats", type=int, default=0, help="timed runs of the slow procedure "
                    "(default: --repeats)")
    ap.add_argument("--steps", default="5,10,20,30,50")
    ap.add_argument("--learning-rate", type=float, default=3e-2, help="the per-frame procedure's learning rate "
                    "(3e-2 with --baseline-variant delta_lr_scale=0.1,lr_final=0.1 was its best measured setting)")
    ap.add_argument("--learning-rates", default="", help="engine learning rates to compare (default: "
                    "--learning-rate)")
    ap.add_argument("--variants", default="", help="engine option sets to compare, ';'-separated, each "
                    "'name=value,...' (e.g. 'delta_lr_scale=0.1,lr_final=0.1'); applied to every row")
    ap.add_argument("--baseline-variant", default="", help="option set of the per-frame procedure")
    ap.add_argument("--trace", action="store_true", help="print the engine's mean total loss per step, first "
                    "windows")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="also time the engine with bf16 autocast (CUDA)")
    ap.add_argument("--store", default="", help="artifact store URL of an enrolled person (else synthetic)")
    ap.add_argument("--person", default="")
    ap.add_argument("--keypoints", default="", help="face keypoints [478, 3] of a 256 px aligned crop (.npy), "
                    "for machines without MediaPipe")
    ap.add_argument("--targets", default="", help="real targets (.npz from --save-targets) instead of synthetic")
    ap.add_argument("--save-targets", default="", help="write held-out fixture targets to this .npz and exit")
    args = ap.parse_args()
    global KEYPOINTS_FILE
    KEYPOINTS_FILE = args.keypoints
    if args.save_targets:
        save_targets(args.save_targets, args.resolution, args.frames)
        return

    if args.store and args.person:
        from reenact.store import PersonRepository, open_store

        person = PersonModel.load(PersonRepository(open_store(args.store)), args.person, device=args.device)
    else:
        person = synthetic_person(args.resolution, args.anchors, args.device)
    targets = load_targets(args.targets, args.frames) if args.targets else make_targets(person, args.frames)
    common = dict(keypoint_sigma=0.0, tolerance=0.0)
    base_opts = OptimizerOptions(first_frame_steps=args.baseline_steps, steps=args.baseline_steps, window=1,
                                 learning_rate=args.learning_rate,
                                 **{**common, **parse_variant(args.baseline_variant)})
    head = [targets[i] for i in baseline_indices(args, len(targets))]
    rows = [measure("per-frame (paper)", person, base_opts, head, args, per_frame=True)]
    print("measured:", rows[-1], flush=True)
    rates = ([float(r) for r in args.learning_rates.split(",")] if args.learning_rates
             else [OptimizerOptions.learning_rate])  # the engine's default
    variants = [parse_variant(v) for v in args.variants.split(";")] if args.variants else [{}]
    for variant, lr, steps in [(v, r, s) for v in variants for r in rates for s in map(int, args.steps.split(","))]:
        opts = OptimizerOptions(first_frame_steps=args.baseline_steps, steps=steps, window=args.window,
                                learning_rate=lr, **{**common, **variant})
        label = "".join(f" {k}={v:g}" for k, v in variant.items())
        if args.trace:
            print_trace(person, opts, targets, args.device)
        rows.append(measure(f"engine lr={lr:g} steps={steps}{label}", person, opts, targets, args))
        print("measured:", rows[-1], flush=True)
        if args.bf16 and torch.device(args.device).type == "cuda":
            rows.append(measure(f"engine lr={lr:g} steps={steps} bf16", person, opts, targets, args, bf16=True))
            print("measured:", rows[-1], flush=True)
    print_table(rows, args, person)


def parse_variant(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        out[key.strip()] = float(value)
    return out


def print_trace(person, options, targets, device) -> None:
    """Mean total loss per step of the first two windows after frame 0, and where their frames started."""
    opt = ReenactmentOptimizer(person, options, device=device)
    opt.trace = []
    for t in targets[: 1 + 2 * options.window]:
        opt.push(t)
    opt.flush()
    for i, totals in enumerate(opt.trace[:3]):
        pts = ", ".join("/".join(f"{t[k]:.3f}" for k in ("total", "keypoint", "delta", "sum"))
                        for t in totals[:: max(1, len(totals) // 10)])
        print(f"trace lr={options.learning_rate:g} window {i}: {len(totals)} steps (total/kp/delta/sum): {pts}")
    print(f"trace starts: {opt.stats}", flush=True)


def print_table(rows: list[dict], args, person: PersonModel) -> None:
    dev = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    print(f"\nreenactment optimizer, {person.resolution} px, {len(person.anchor_w)} anchors, {dev}, "
          f"median of {args.repeats} (frames/s counts the first frame's {args.baseline_steps} steps too)")
    print(f"{'procedure':<30}{'window':>7}{'steps/fr':>10}{'frames/s':>10}{'err all':>9}"
          f"{'err baseline fr':>16}{'speed-up':>10}{'GPU GiB':>9}")
    base = rows[0]
    for row in rows:
        mark = " *" if row is not base and row["head_error"] <= base["head_error"] else ""
        print(f"{row['name']:<30}{row['window']:>7}{row['steps']:>10.1f}{row['fps']:>10.2f}{row['error']:>9.4f}"
              f"{row['head_error']:>16.4f}{row['fps'] / base['fps']:>9.1f}x{row['mem']:>9.2f}{mark}")
    idx = baseline_indices(args, args.frames)
    print(f"* = keypoint error on frames {idx} (the ones the per-frame procedure optimizes) <= the per-frame "
          "procedure's: equal quality")


if __name__ == "__main__":
    main()
