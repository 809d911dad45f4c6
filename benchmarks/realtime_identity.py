"""Identity distance of realtime_bench's rendered frames (CPU; dlib is not on the GPU machine).

    python benchmarks/realtime_identity.py --frames OUT/frames.npz --reference .bench/astro.npz

Reference = the mean dlib ResNet descriptor of --reference-count frames of the person's self-scan
(aligned crops in an .npz with 'crops', e.g. benchmarks/enroll_quality.py's aligned scan). Per method:
mean distance of its frames to that reference, and the share below 0.5 / 0.6 (dlib's same-person
threshold is 0.6). Frames where dlib finds no face are counted.
"""

from __future__ import annotations

import argparse

import numpy as np

from reenact.metrics.identity import FaceDescriptor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--reference-count", type=int, default=24)
    args = ap.parse_args()
    fd = FaceDescriptor()
    crops = np.load(args.reference)["crops"]
    pick = np.linspace(0, len(crops) - 1, args.reference_count).round().astype(int)
    refs = [d for d in (fd.describe(crops[i]) for i in pick) if d is not None]
    ref = np.mean(refs, axis=0)
    z = np.load(args.frames)
    print(f"reference: {len(refs)}/{len(pick)} self-scan frames with a face\n")
    print("| method | frames | no face | identity distance (mean) | < 0.5 | < 0.6 |\n|---|---|---|---|---|---|")
    for name in z.files:
        if name == "head":
            continue
        ds = [fd.describe(img) for img in z[name]]
        d = np.asarray([np.linalg.norm(x - ref) for x in ds if x is not None])
        miss = sum(x is None for x in ds)
        mean = f"{d.mean():.3f}" if len(d) else "-"
        print(f"| {name.replace('_', ' ')} | {len(ds)} | {miss} | {mean} | {np.mean(d < 0.5) * 100 if len(d) else 0:.0f}% "
              f"| {np.mean(d < 0.6) * 100 if len(d) else 0:.0f}% |")


if __name__ == "__main__":
    main()
