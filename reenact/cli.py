"""`reenact`: the command line of the reenact suite.

    reenact demo [--out DIR] [--video PATH]     the embedded-default demo (see README)
    reenact track VIDEO --address HOST:PORT     stream a video through a running landmarks service
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time

import grpc
import numpy as np

from reenact.api.common.v1 import types_pb2
from reenact.api.landmarks.v1 import landmarks_pb2, landmarks_pb2_grpc
from reenact.wire import image_from_proto, image_to_proto, tensor_from_proto

MAX_MSG = 64 * 1024 * 1024


def track_video(address: str, frames, *, crop_size: int = 256, sigma: float = 0.0, return_crop: bool = True,
                timeout: float = 600.0) -> list[landmarks_pb2.TrackFramesResponse]:
    """Stream RGB frames through LandmarksService.TrackFrames; returns the responses in order."""

    def requests():
        yield landmarks_pb2.TrackFramesRequest(config=landmarks_pb2.TrackConfig(
            crop_size=crop_size, smoothing_sigma=sigma, return_crop=return_crop))
        for i, rgb in enumerate(frames):
            yield landmarks_pb2.TrackFramesRequest(frame=landmarks_pb2.Frame(
                index=i, image=image_to_proto(rgb, types_pb2.IMAGE_ENCODING_RGB8)))

    opts = [("grpc.max_receive_message_length", MAX_MSG), ("grpc.max_send_message_length", MAX_MSG)]
    with grpc.insecure_channel(address, options=opts) as ch:
        stub = landmarks_pb2_grpc.LandmarksServiceStub(ch)
        return list(stub.TrackFrames(requests(), timeout=timeout))


def crop_center_jitter(responses) -> float:
    """Mean |c_{t+1} - 2 c_t + c_{t-1}| of the alignment centre, in crop pixels, over tracked runs."""
    centers, scales = [], []
    for r in responses:
        a = r.result.alignment
        if r.result.status == landmarks_pb2.FACE_STATUS_NO_FACE or not a.center:
            centers.append(None)
            continue
        centers.append(np.array(a.center))
        scales.append(a.crop_size / (2 * np.linalg.norm(a.x_axis)))  # source px -> crop px
    vals = [np.linalg.norm(centers[t + 1] - 2 * centers[t] + centers[t - 1])
            for t in range(1, len(centers) - 1) if all(c is not None for c in centers[t - 1:t + 2])]
    return float(np.mean(vals) * np.mean(scales)) if vals else float("nan")


def _summary(responses) -> dict:
    status = [r.result.status for r in responses]
    return {"frames": len(responses),
            "tracked": int(sum(s != landmarks_pb2.FACE_STATUS_NO_FACE for s in status)),
            "multiple_faces": int(sum(s == landmarks_pb2.FACE_STATUS_MULTIPLE_FACES for s in status))}


def run_landmarks_demo(video: pathlib.Path, out: pathlib.Path, crop_size: int = 256) -> dict:
    from reenact.launcher import Stack
    from reenact.video import decode_video, encode_video

    frames, fps = decode_video(video)
    out.mkdir(parents=True, exist_ok=True)
    with Stack(out / "logs") as stack:
        addr = stack.start("landmarks").address
        t0 = time.perf_counter()
        smoothed = track_video(addr, frames, crop_size=crop_size, sigma=0.0)
        wall = time.perf_counter() - t0
        raw = track_video(addr, frames, crop_size=crop_size, sigma=-1.0, return_crop=False)
    crops = [image_from_proto(r.result.crop) if r.result.crop.data else np.zeros((crop_size, crop_size, 3),
                                                                                  np.uint8)
             for r in smoothed]
    encode_video(crops, fps, out / "aligned.mp4")
    per_frame = []
    for r in smoothed:
        res = r.result
        item = {"index": r.index, "status": landmarks_pb2.FaceStatus.Name(res.status), "num_faces": res.num_faces}
        if res.landmarks.source_points.data:
            pts = tensor_from_proto(res.landmarks.source_points, shape=(478, 3))
            item.update(presence=round(res.landmarks.presence, 4), center=list(res.alignment.center),
                        quad=list(res.alignment.quad), nose_tip=pts[1, :2].round(2).tolist())
        per_frame.append(item)
    report = {"video": str(video), "fps": fps, **_summary(smoothed),
              "crop_jitter_px_raw": round(crop_center_jitter(raw), 4),
              "crop_jitter_px_smoothed": round(crop_center_jitter(smoothed), 4),
              "frames_per_second": round(len(frames) / wall, 1), "crop_size": crop_size}
    (out / "landmarks.json").write_text(json.dumps({"summary": report, "frames": per_frame}, indent=1))
    return report


def cmd_demo(ns) -> int:
    from reenact.samples import carphone_video_path

    video = pathlib.Path(ns.video) if ns.video else carphone_video_path()
    out = pathlib.Path(ns.out)
    report = run_landmarks_demo(video, out, ns.crop_size)
    print(json.dumps(report, indent=2))
    print(f"wrote {out / 'landmarks.json'} and {out / 'aligned.mp4'}")
    return 0 if report["tracked"] > 0 else 1


def cmd_track(ns) -> int:
    from reenact.video import decode_video

    frames, _fps = decode_video(ns.video)
    responses = track_video(ns.address, frames, crop_size=ns.crop_size, sigma=ns.sigma, return_crop=False)
    print(json.dumps({**_summary(responses), "crop_jitter_px": crop_center_jitter(responses)}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="reenact", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the embedded-default demo on the bundled sample")
    d.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--video", default="", help="driving video (default: the bundled carphone clip)")
    d.add_argument("--crop-size", type=int, default=256)
    d.set_defaults(fn=cmd_demo)
    t = sub.add_parser("track", help="stream a video through a running landmarks service")
    t.add_argument("video")
    t.add_argument("--address", required=True, help="landmarks service host:port")
    t.add_argument("--crop-size", type=int, default=256)
    t.add_argument("--sigma", type=float, default=0.0, help="smoothing sigma in frames (0 = default, <0 = off)")
    t.set_defaults(fn=cmd_track)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    ns = build_parser().parse_args(argv)
    try:
        return ns.fn(ns)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
