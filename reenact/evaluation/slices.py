"""A long driver in pieces: produce on consecutive slices of a bundle, then merge the outputs.

The per-frame baseline (c) runs at about 0.18 frames/s at 256 px on an H100 (100 steps per frame): 120
driving frames take 11 minutes, more than a machine with a per-command time limit allows. `slice_bundle`
writes the driving frames [start, end) of a bundle as a bundle of their own (everything else, the scan and
the landmark network included, is kept); `produce` runs on each slice (the same stored person); `merge`
joins the slices' outputs into one output folder that `score` reads against the FULL bundle.

Only methods whose frames are independent of each other give, in pieces, exactly what they give in one
run: nearest (retrieval per frame) and paper (every frame alone, from its own nearest anchor). merge
refuses the others: warp takes its motion reference from the first driving frame, ours and ours-relative
stream (warm starts, smoothing look-aheads, the relative-motion reference). A frame without a face repeats
the previous output within its slice only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from reenact.evaluation import frames as frames_io
from reenact.evaluation.bundle import Bundle, read_meta

DRIVING_KEYS = ("drv_keypoints", "drv_raw_points", "drv_crops", "drv_has_face", "gt_points")
PER_FRAME_METHODS = ("nearest", "paper")


def driver_digest(arrays) -> str:
    """A short fingerprint of a bundle's whole driver (its keypoints and face flags; `arrays`: the bundle's
    arrays or its open .npz): merge checks that the full bundle it is given is the one the parts were
    sliced from, whatever its path."""
    h = hashlib.sha256(np.ascontiguousarray(arrays["drv_keypoints"]).tobytes())
    h.update(np.ascontiguousarray(arrays["drv_has_face"]).tobytes())
    return h.hexdigest()[:16]


def slice_bundle(path: str | Path, start: int = 0, end: int | None = None, out: str | Path = "slice.npz", *,
                 no_scan: bool = False) -> Path:
    """Write the driving frames [start, end) (end None: to the last) of the bundle at `path` to `out` (.npz);
    meta records the slice and the source bundle. no_scan leaves out the aligned self-scan (the scan_*
    arrays, most of a long bundle's size): the slice is then for produce against a stored person
    (--store/--person), which needs no scan; enrolling or the generator-free nearest/warp refuse it."""
    b = Bundle(path)
    n = b.num_frames
    end = n if end is None else end
    if not (0 <= start < end <= n):
        raise ValueError(f"slice [{start}, {end}) is not inside the bundle's {n} driving frames")
    arrays = {k: (v[start:end] if k in DRIVING_KEYS else v) for k, v in b.arrays.items()
              if not (no_scan and k.startswith("scan_"))}
    meta = dict(b.meta, slice=[int(start), int(end)], source_bundle=str(Path(path).resolve()),
                source_digest=driver_digest(b.arrays),
                driving_frames=int(end - start), driving_frames_with_face=int(arrays["drv_has_face"].sum()))
    if no_scan:
        meta["scan_dropped"] = True
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, meta=np.array(json.dumps(meta)), **arrays)
    return out


def _part(d: Path) -> tuple:
    """(dir, produce.json, (start, end), source bundle path, driver fingerprint or None) of one part."""
    info = json.loads((d / "produce.json").read_text())
    if "slice" in info:  # recorded by produce: the slice file itself need not be here
        return d, info, tuple(info["slice"]), info["source_bundle"], info.get("source_digest")
    # outputs of an older produce: the slice file must be where produce read it
    if not Path(info["bundle"]).is_file():
        raise ValueError(f"{d}: produced on {info['bundle']}, which is not here, and its produce.json "
                         "does not record the slice (an older produce): slice the bundle again to that path")
    meta, _ = read_meta(info["bundle"])
    if "slice" not in meta:
        raise ValueError(f"{d}: produced on {info['bundle']}, which is not a slice (reenact eval slice)")
    return d, info, tuple(meta["slice"]), meta["source_bundle"], meta.get("source_digest")


def _parts(part_dirs, bundle: str | Path | None):
    """[(dir, produce.json, (start, end))] in frame order, and the full bundle's path; ValueError unless the
    slices come from one bundle and cover its driving frames exactly once, in order."""
    parts = [_part(Path(d)) for d in part_dirs]
    if not parts:
        raise ValueError("no parts to merge")
    same = {p[4] for p in parts} if all(p[4] for p in parts) else {p[3] for p in parts}
    if len(same) > 1:  # the driver's fingerprint (older parts: the path they were sliced from)
        raise ValueError(f"the parts were sliced from different bundles: {sorted({p[3] for p in parts})}")
    # --bundle: the full bundle here (the parts may have been sliced on another machine, under another path)
    full = Path(bundle).resolve() if bundle else Path(parts[0][3])
    if not full.is_file():
        raise ValueError(f"the full bundle {full} is not here: pass it with --bundle")
    digests = {p[4] for p in parts if p[4]}
    if digests:
        with np.load(full) as z:
            if digests != {driver_digest(z)}:
                raise ValueError(f"the parts were sliced from another driver than the one of {full}")
    parts.sort(key=lambda p: p[2][0])
    n, at = read_meta(full)[1], 0
    for d, _, (s, e), *_ in parts:
        if s != at:
            raise ValueError(f"{d}: slice [{s}, {e}) does not start where the previous one ended ({at})")
        at = e
    if at != n:
        raise ValueError(f"the slices end at frame {at}; the bundle has {n} driving frames")
    return [(d, info, sl) for d, info, sl, *_ in parts], full


def merge(out_dir: str | Path, part_dirs, bundle: str | Path | None = None) -> dict:
    """Join the outputs of `produce` on consecutive slices (module doc) into `out_dir`: per method its frames
    and per-frame arrays in frame order, produce.json naming the full bundle (seconds summed, frames/s over
    the whole driver, the parts listed under "merged_from"). Returns that produce.json."""
    parts, full = _parts(part_dirs, bundle)
    methods = list(parts[0][1]["methods"])
    for d, info, _ in parts:
        if list(info["methods"]) != methods:
            raise ValueError(f"{d}: methods {list(info['methods'])}, the first part has {methods}")
    dependent = [m for m in methods if m not in PER_FRAME_METHODS]
    if dependent:
        raise ValueError(f"methods {dependent} depend on earlier driving frames: merging slices of them would "
                         f"not give their one-run result (only {list(PER_FRAME_METHODS)} can be merged)")
    counts = [e - s for _, _, (s, e) in parts]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = {k: v for k, v in parts[0][1].items() if k not in ("slice", "source_bundle", "source_digest")}
    info = dict(first, bundle=str(full), frames=int(sum(counts)),
                merged_from=[{"dir": str(d.resolve()), "slice": list(sl)} for d, _, sl in parts], methods={})
    for m in methods:
        joined = frames_io.concat([d / f"{m}.npz" for d, _, _ in parts], out_dir / f"{m}.npz")
        if joined != sum(counts):
            raise ValueError(f"{m}: the parts hold {joined} frames, their slices {sum(counts)}")
        entries = [p[1]["methods"][m] for p in parts]
        entry = dict(entries[0])
        entry["seconds"] = float(sum(e["seconds"] for e in entries))
        entry["fps"] = sum(counts) / entry["seconds"] if entry["seconds"] > 0 else float("inf")
        if all(e.get("mean_steps") is not None for e in entries):  # frame-weighted mean of the parts'
            entry["mean_steps"] = float(np.average([e["mean_steps"] for e in entries], weights=counts))
        peaks = [e["peak_gpu_gib"] for e in entries if e.get("peak_gpu_gib") is not None]
        if peaks:
            entry["peak_gpu_gib"] = max(peaks)
        entry["notes"] = "; ".join(filter(None, [entry.get("notes"), f"merged from {len(parts)} slices"]))
        info["methods"][m] = entry
    refs = parts[0][0] / "identity_refs.npz"  # written by produce when the bundle has no scan
    if refs.exists():
        shutil.copyfile(refs, out_dir / "identity_refs.npz")
    (out_dir / "produce.json").write_text(json.dumps(info, indent=1))
    return info
