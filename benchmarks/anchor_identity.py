"""How much identity does the personalized generator lose on its own anchors?

The optimizer's frames are renders of P+ latents; the warp baseline and nearest anchor move real pixels.
This script separates the generator's reconstruction distance from what the optimizer adds: it renders
every anchor's stored W (the frames the generator was tuned to reproduce) and scores, with the same dlib
descriptor as `reenact eval score`:
- the real anchor frames against the bundle's identity references (the scan's own spread),
- their renders against the same references (the generator's reconstruction),
- each render against its own real frame (dlib distance and PSNR).

Two steps, so the render runs where the GPU is and the score where dlib is:

    python benchmarks/anchor_identity.py render --store file://OUT/e1/store --person person --out OUT/e1/anchors.npz --device cuda
    python benchmarks/anchor_identity.py score --renders OUT/e1/anchors.npz --bundle OUT/cross/bundle.npz [--json out.json]

The bundle must be the one the person was enrolled from (`reenact eval produce` without --store on
its scan): the anchors' frame indices point into its (held-out-trimmed) scan.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def render_anchors(store: str, person: str, out: str, device: str, version: int | None = None) -> dict:
    from reenact.evaluation import methods

    loaded = methods.load_person(store, person, device, version)
    m = loaded.model
    ws = m.anchor_w[:, None, :].expand(-1, m.G.num_ws, -1).detach().cpu().numpy()
    frames = methods.render(m.G, ws, device)
    info = {"store": store, "person": person, "version": int(m.version), "anchors": int(len(frames)),
            "resolution": int(frames.shape[1])}
    np.savez_compressed(out, renders=frames, anchor_frames=np.asarray(loaded.anchor_frames, np.int64),
                        info=np.array(json.dumps(info)))
    return info


def _pct(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    if not len(v):
        return "no face"
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return f"{p50:.3f} ({p10:.3f}-{p90:.3f})"


def score(renders_path: str, bundle_path: str) -> dict:
    from reenact.evaluation.bundle import Bundle
    from reenact.evaluation.metrics import psnr_frames
    from reenact.metrics.identity import FaceDescriptor

    with np.load(renders_path) as z:
        renders, idx, info = z["renders"], z["anchor_frames"], json.loads(str(z["info"]))
    bundle = Bundle(bundle_path)
    scan, refs = bundle.get("scan_crops"), bundle.get("identity_refs")
    if scan is None or refs is None:
        raise SystemExit("the bundle needs a scan and identity references (reenact eval prepare --scan)")
    if (idx < 0).any() or idx.max() >= len(scan):
        raise SystemExit("the anchors' frame indices do not fit this bundle's scan: enrolled from another scan?")
    if scan.shape[1:] != renders.shape[1:]:
        raise SystemExit(f"scan crops {scan.shape[1:]} and renders {renders.shape[1:]} differ in size")
    real = scan[idx]
    fd = FaceDescriptor()
    ref_desc = [d for d in (fd.describe(r) for r in refs) if d is not None]
    if not ref_desc:
        raise SystemExit("dlib finds no face in the identity references")
    ref_desc = np.stack(ref_desc)

    def nearest_ref(frames):
        out, descs = [], []
        for f in frames:
            d = fd.describe(f)
            descs.append(d)
            out.append(np.nan if d is None else float(np.linalg.norm(ref_desc - d, axis=1).min()))
        return np.array(out), descs

    d_real, desc_real = nearest_ref(real)
    d_render, desc_render = nearest_ref(renders)
    d_self = np.array([np.nan if a is None or b is None else float(np.linalg.norm(a - b))
                       for a, b in zip(desc_real, desc_render, strict=True)])
    psnr = psnr_frames(renders, real)
    table = {
        "info": info, "anchors": int(len(idx)), "references": int(len(ref_desc)),
        "real_to_refs": _stats(d_real), "render_to_refs": _stats(d_render),
        "render_minus_real": _stats(d_render - d_real), "render_to_own_frame": _stats(d_self),
        "psnr_db": _stats(psnr),
        # per anchor, in the store's anchor order (NaN -> null: no face found), for benchmarks/identity_spread.py
        "per_anchor": {"real_to_refs": _listed(d_real), "render_to_refs": _listed(d_render), "psnr_db": _listed(psnr)},
    }
    rows = [("real anchor frames -> references", d_real), ("their renders -> references", d_render),
            ("render minus real (per anchor)", d_render - d_real), ("render -> its own real frame", d_self),
            ("PSNR render vs real (dB)", psnr)]
    print(f"{info['store']} {info['person']} v{info['version']}: {len(idx)} anchors, {len(ref_desc)} references")
    print("| quantity | median (10-90 %) |\n|---|---|")
    for name, v in rows:
        print(f"| {name} | {_pct(np.asarray(v, float))} |")
    return table


def _listed(v) -> list[float | None]:
    return [float(x) if np.isfinite(x) else None for x in np.asarray(v, float)]


def _stats(v: np.ndarray) -> dict:
    v = np.asarray(v, float)
    f = v[np.isfinite(v)]
    if not len(f):
        return {"count": 0, "missing": int(len(v))}
    return {"median": float(np.median(f)), "p10": float(np.percentile(f, 10)), "p90": float(np.percentile(f, 90)),
            "mean": float(f.mean()), "count": int(len(f)), "missing": int(len(v) - len(f))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="render every anchor's W of a stored person (torch; GPU or CPU)")
    r.add_argument("--store", required=True)
    r.add_argument("--person", default="person")
    r.add_argument("--version", type=int)
    r.add_argument("--out", required=True)
    r.add_argument("--device", default="cpu")
    s = sub.add_parser("score", help="dlib distances of the renders and the real anchor frames (CPU)")
    s.add_argument("--renders", required=True)
    s.add_argument("--bundle", required=True)
    s.add_argument("--json")
    ns = ap.parse_args(argv)
    if ns.cmd == "render":
        print(json.dumps(render_anchors(ns.store, ns.person, ns.out, ns.device, ns.version)))
    else:
        table = score(ns.renders, ns.bundle)
        if ns.json:
            Path(ns.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
