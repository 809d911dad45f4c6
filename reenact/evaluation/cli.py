"""`reenact eval ...` and `python -m reenact.evaluation ...` (same parser; the module form imports no grpc,
so the produce phase runs on a machine with only torch + numpy + cv2 and this repository).

    reenact eval prepare --driving drv.mp4 --scan scan.mp4 --profile cpu-quick -o bundle.npz
    reenact eval produce bundle.npz --out runs/x --device cuda          # or --store URL --person ID
    reenact eval score runs/x                                           # -> results.json, report.html
    reenact eval run --driving drv.mp4 --scan scan.mp4 --out runs/x     # the three in one
    reenact eval run --driving drv.mp4 --store file://st --person p --output reenacted.mp4 --methods ''
    reenact eval suite --out runs/suite                                 # both protocols, all methods
    reenact eval compare runs/x:ours runs/x:nearest --block 8           # paired per-frame differences
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def _kv(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def _typed(cls, pairs) -> dict:
    """NAME=VALUE pairs -> kwargs typed like the dataclass `cls`'s fields (ValueError for unknown names)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for k, v in pairs or []:
        if k not in fields:
            raise ValueError(f"unknown {cls.__name__} field {k!r}; one of {sorted(fields)}")
        name = fields[k].type if isinstance(fields[k].type, str) else getattr(fields[k].type, "__name__", "")
        typ = {"int": int, "float": float, "str": str, "bool": lambda x: x.lower() in ("1", "true", "yes")}.get(name)
        if typ is None:
            raise ValueError(f"field {k!r} of {cls.__name__} cannot be set from the command line")
        out[k] = typ(v)
    return out


def _methods(text: str) -> list[str]:
    return [m for m in (s.strip() for s in text.split(",")) if m]


def _add_prepare_args(p, with_output: bool) -> None:
    p.add_argument("--driving", required=True, help="driving video (any path)")
    p.add_argument("--scan", default=None, help="self-scan video to enroll (else --store and --person)")
    p.add_argument("--ground-truth", default=None, help="ground_truth.json of a fixture driving video (exact "
                   "landmarks: keypoint error vs ground truth)")
    p.add_argument("--crop-size", type=int, default=128, help="aligned driving crop size (default 128)")
    p.add_argument("--max-frames", type=int, default=None, help="driving frames used (default all)")
    p.add_argument("--protocol", default="", help="label: 'self' (PSNR vs the driver is scored) or 'cross'")
    p.add_argument("--notes", default="", help="free text stored in the bundle and shown in the report")
    p.add_argument("--identity-holdout", type=int, default=0, metavar="H",
                   help="hold the scan's last H frames out of the enrollment and the baselines and measure "
                        "identity against them only (a fair identity reference for a real scan; default 0: "
                        "identity against the scan's own frames)")
    if with_output:
        p.add_argument("-o", "--output", required=True, help="bundle .npz to write")


def _add_produce_args(p) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--methods", type=_methods, default=["nearest", "warp", "paper", "ours"],
                   help="comma-separated subset of nearest,warp,paper,ours,ours-relative (default: the first "
                   "four; ours-relative = ours with the engine option motion=relative)")
    p.add_argument("--store", default=None, help="artifact store URL of an enrolled person (without it: enrolls the "
                   "bundle's scan, except for --methods nearest,warp alone, which use the scan with no generator)")
    p.add_argument("--person", default=None, help="person id in --store")
    p.add_argument("--profile", default="cpu-quick", help="enrollment profile for --scan (cpu-quick, gpu)")
    p.add_argument("--profile-set", type=_kv, action="append", default=[], metavar="FIELD=VALUE",
                   help="override a profile field, e.g. tune_steps=50 (repeatable)")
    p.add_argument("--paper-steps", type=int, default=200, help="fixed steps per frame of the per-frame baseline")
    p.add_argument("--ours-set", type=_kv, action="append", default=[], metavar="OPTION=VALUE",
                   help="override an engine option (default: the engine's defaults; repeatable)")
    p.add_argument("--frames-format", choices=("npz", "jpg"), default="npz",
                   help="how the output frames are stored: npz = lossless (default), jpg = JPEG quality 95, ~8x "
                        "smaller, for moving a long video's outputs from the GPU machine to the scoring one")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    sub = ap.add_subparsers(dest="eval_cmd", required=True, metavar="PHASE")
    p = sub.add_parser("prepare", help="CPU: track the driver, align the scan -> one .npz bundle")
    _add_prepare_args(p, with_output=True)
    p.add_argument("--profile", default="cpu-quick", help="enrollment profile the scan is aligned for")
    p.add_argument("--profile-set", type=_kv, action="append", default=[], metavar="FIELD=VALUE",
                   help="override a profile field (only resolution matters here)")
    p = sub.add_parser("produce", help="run every method on a bundle (torch only; cpu or cuda)")
    p.add_argument("bundle")
    p.add_argument("--out", required=True, help="output folder")
    _add_produce_args(p)
    p = sub.add_parser("score", help="CPU: metrics of the produced outputs -> results.json + report.html")
    p.add_argument("out_dir")
    p.add_argument("--bundle", default=None, help="bundle (default: the one produce.json names)")
    p.add_argument("--output", default=None, help="an already reenacted video to score as method 'given'")
    p.add_argument("--psnr", action=argparse.BooleanOptionalAction, default=None,
                   help="PSNR vs the driving crops (default: for protocol 'self')")
    p = sub.add_parser("run", help="prepare + produce + score")
    _add_prepare_args(p, with_output=False)
    _add_produce_args(p)
    p.add_argument("--out", required=True, help="output folder (bundle.npz, method outputs, results, report)")
    p.add_argument("--output", default=None, help="an already reenacted video to score as method 'given'")
    p = sub.add_parser("compare", help="paired per-frame differences A - B of two scored methods on the same "
                                        "driving frames: mean, bootstrap interval, fraction of frames A is lower")
    p.add_argument("a", help="PATH[:METHOD]: a results.json or a scored folder (METHOD optional when it holds one)")
    p.add_argument("b", help="PATH[:METHOD], the same driving frames as A")
    p.add_argument("--metric", action="append", default=None,
                   help="per-frame metric of results.json, or a correlation with the driver (mouth_open_corr, "
                        "eye_open_corr, mouth_open_corr_68, eye_open_corr_68: r(driver, A) - r(driver, B)); "
                        "repeatable; default expression_error and expression_error_68")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--block", type=int, default=1,
                   help="resample runs of this many consecutive frames (moving-block bootstrap; default 1 = "
                        "frame by frame, optimistic for video: neighbouring frames are correlated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the comparison here")
    p = sub.add_parser("slice", help="the driving frames [start, end) of a bundle as a bundle of their own "
                                      "(produce a long driver in pieces; reenact.evaluation.slices)")
    p.add_argument("bundle")
    p.add_argument("--start", type=int, default=0, help="first frame of the slice (default 0)")
    p.add_argument("--end", type=int, default=None, help="first frame NOT in the slice (default: all to the end)")
    p.add_argument("-o", "--output", required=True, help="slice bundle .npz to write")
    p.add_argument("--no-scan", action="store_true",
                   help="leave out the aligned self-scan (most of a long bundle's size; e.g. to copy it to a "
                        "GPU machine): for produce with --store/--person only")
    p = sub.add_parser("merge", help="join the produce outputs of consecutive slices into one output folder "
                                      "for score (per-frame methods only: nearest, paper)")
    p.add_argument("out", help="output folder")
    p.add_argument("parts", nargs="+", help="produce output folders of the slices (any order)")
    p.add_argument("--bundle", default=None, help="the full bundle (default: the one the slices name)")
    p = sub.add_parser("suite", help="both protocols (self: held-out fixture frames; cross: another real "
                                      "person) x all methods; writes results.md")
    from reenact.evaluation.suite import add_suite_args

    add_suite_args(p)


def _profile_resolution(ns) -> int | None:
    if not ns.scan:
        return None
    from reenact.enroll.profiles import Profile, get_profile

    prof = dataclasses.replace(get_profile(ns.profile), **_typed(Profile, ns.profile_set))
    return prof.resolution


def _produce(ns, bundle: str, out: str) -> dict:
    from reenact.enroll.profiles import Profile
    from reenact.evaluation.methods import produce
    from reenact.optimize import OptimizerOptions

    return produce(bundle, out, methods=ns.methods, device=ns.device, store=ns.store, person_id=ns.person,
                   profile=ns.profile, profile_overrides=_typed(Profile, ns.profile_set), paper_steps=ns.paper_steps,
                   ours_overrides=_typed(OptimizerOptions, ns.ours_set), frames_format=ns.frames_format)


def run(ns) -> int:
    from reenact.evaluation import bundle as bundle_mod

    cmd = ns.eval_cmd
    if cmd == "run" and not ns.scan and not (ns.store and ns.person):
        raise ValueError("give a self-scan (--scan) or an enrolled person (--store and --person)")
    if cmd == "prepare":
        path = bundle_mod.prepare(ns.output, driving=ns.driving, crop_size=ns.crop_size, max_frames=ns.max_frames,
                                  scan=ns.scan, resolution=_profile_resolution(ns),
                                  ground_truth=ns.ground_truth, protocol=ns.protocol, notes=ns.notes,
                                  identity_holdout=ns.identity_holdout)
        print(f"wrote {path}")
        return 0
    if cmd == "produce":
        _produce(ns, ns.bundle, ns.out)
        print(f"wrote {ns.out}/produce.json")
        return 0
    if cmd == "score":
        from reenact.evaluation.report import markdown_table
        from reenact.evaluation.score import score

        results = score(ns.out_dir, bundle_path=ns.bundle, given_output=ns.output, psnr=ns.psnr)
        print(markdown_table(results))
        print(f"wrote {ns.out_dir}/results.json and {ns.out_dir}/report.html")
        return 0
    if cmd == "run":
        from reenact.evaluation.report import markdown_table
        from reenact.evaluation.score import score

        out = Path(ns.out)
        path = bundle_mod.prepare(out / "bundle.npz", driving=ns.driving, crop_size=ns.crop_size,
                                  max_frames=ns.max_frames, scan=None if ns.store else ns.scan,
                                  resolution=_profile_resolution(ns), ground_truth=ns.ground_truth,
                                  protocol=ns.protocol, notes=ns.notes,
                                  identity_holdout=ns.identity_holdout)
        if ns.methods:
            _produce(ns, str(path), str(out))
        elif not ns.output:
            raise ValueError("no methods and no --output video: nothing to score")
        else:
            _write_produce_stub(out, path, ns)
        results = score(out, bundle_path=path, given_output=ns.output)
        print(markdown_table(results))
        print(f"wrote {out}/results.json and {out}/report.html")
        return 0
    if cmd == "compare":
        from reenact.evaluation.compare import DEFAULT_METRICS, compare, markdown

        report = compare(ns.a, ns.b, metrics=tuple(ns.metric or DEFAULT_METRICS), resamples=ns.resamples,
                         level=ns.level, block=ns.block, seed=ns.seed)
        print(markdown(report))
        if ns.json:
            Path(ns.json).write_text(json.dumps(report, indent=1))
            print(f"wrote {ns.json}")
        return 0
    if cmd in ("slice", "merge"):
        return _pieces(ns)
    if cmd == "suite":
        from reenact.evaluation.suite import run_suite

        run_suite(ns)
        return 0
    raise ValueError(f"unknown eval command {cmd!r}")


def _pieces(ns) -> int:
    """eval slice / eval merge (reenact.evaluation.slices)."""
    from reenact.evaluation.slices import merge, slice_bundle

    if ns.eval_cmd == "slice":
        print(f"wrote {slice_bundle(ns.bundle, ns.start, ns.end, ns.output, no_scan=ns.no_scan)}")
        return 0
    info = merge(ns.out, ns.parts, bundle=ns.bundle)
    print(f"wrote {ns.out}/produce.json: {info['frames']} frames of {info['bundle']} ({', '.join(info['methods'])})")
    return 0


def _write_produce_stub(out: Path, bundle: Path, ns) -> None:
    """produce.json when only a given output video is scored (no methods run here)."""
    info = {"bundle": str(Path(bundle).resolve()), "device": None, "person": f"{ns.store} {ns.person}",
            "methods": {}}
    if ns.store and ns.person:
        from reenact.evaluation.methods import load_person, render

        person = load_person(ns.store, ns.person, "cpu")
        m = person.model
        ws = m.anchor_w[:16, None, :].expand(-1, m.G.num_ws, -1).cpu().numpy()
        import numpy as np

        np.savez_compressed(out / "identity_refs.npz", frames=render(m.G, ws, "cpu"))
        info["resolution"] = m.resolution
    out.mkdir(parents=True, exist_ok=True)
    (out / "produce.json").write_text(json.dumps(info, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reenact.evaluation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ns = ap.parse_args(argv)
    try:
        return run(ns)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
