"""One Reenact stream as concurrent stages joined by BOUNDED queues (no grpc servicer code here).

    source ──q_frames──> landmarks ──q_targets──> optimizer ──q_latents──> render ──q_out──> output
    (frames in)          TrackFrames stream        Optimize stream           Triton, batched   (RPC thread:
                                                                                              paste-back,
                                                                                              encode, store)

- `source` (thread) yields driving frames (decoded from the spooled upload, or read from the client's
  request stream) and, with `store_driving`, writes them to the driving video kept with the reenactment.
- `landmarks` (thread) runs one TrackFrames stream; per result it keeps the frame's alignment and makes an
  OptimizeTarget (crop keypoints, crop, no_face).
- `optimizer` (thread) runs one Optimize stream: targets in, latents out, in order.
- `render` (thread) takes up to `render_batch` latents that are already waiting, applies the edits, and
  renders them with ONE Triton request.
- `output` (the RPC's own thread) pastes back, encodes frames or mp4 chunks, appends the latents to the
  reenactment writer and yields the responses; the reenactment is committed before the summary.

Memory is bounded: every queue holds at most `queue_frames` items and at most `max_in_flight` frames
are between the source and the output (a semaphore), so a client that reads slowly blocks the output
thread, which fills the queues, which stops the source, which stops reading the client's requests: gRPC
flow control pushes back to the client. The latents of the whole stream go to local temporary files.

Failure: the first error of any stage stops every stage, cancels both peer calls (the optimizer stops
its work at once) and is raised in the output thread; the writer's temporary files are removed and
nothing reaches the store. A client cancel does the same (`cancel()`).
"""

from __future__ import annotations

import logging
import math
import pathlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from reenact.api.common.v1 import types_pb2
from reenact.api.gateway.v1 import gateway_pb2
from reenact.api.landmarks.v1 import landmarks_pb2
from reenact.api.optimizer.v1 import optimizer_pb2
from reenact.errors import CancelledError, InternalError, ReenactError
from reenact.lipwarp import NUM_LIP_POINTS
from reenact.runtime.deadlines import time_left
from reenact.wire import affine_from_proto, image_to_proto, tensor_from_proto
from services.gateway.compose import lip_warped, paste_back
from services.gateway.edits import PersonAnchors, render_ws
from services.gateway.peers import Peers, peer_error
from services.gateway.reenactments import ReenactmentWriter

log = logging.getLogger("reenact.gateway.pipeline")

DONE = object()
RGB8_MAX_BYTES = 12 << 20  # frames larger than this travel to the landmarks service as JPEG
LANDMARKS_SIGMA = 2.0       # the landmarks service's default smoothing (TrackConfig.smoothing_sigma = 0)
OPTIMIZER_SIGMA = 2.0       # the optimizer's default keypoint smoothing
DEFAULT_WINDOW = 8          # the optimizer's default window


class _Stopped(Exception):
    """Internal: the pipeline was stopped while a stage waited."""


MOTIONS = ("absolute", "relative")  # the optimizer's keypoint targets ("" = its default, absolute)
MAX_SMOOTHING_SIGMA = 10.0          # the optimizer's bound on keypoint_sigma (the landmarks service allows 30)
MAX_OPENING_WEIGHT = 1e6            # the optimizer's bound on opening_weight
MAX_LATENT_SIGMA = 10.0             # the optimizer's bound on latent_sigma (0 = off, its default)
MAX_OPENING_RANGE = 10.0            # the optimizer's bound on opening_range (0 = off, its default; motion relative)
MAX_MOUTH_STARTS = 1.5              # the optimizer's bound on mouth_starts (0 = off, its default; eager engine only)
MAX_DELTA_LR_SCALE = 10.0           # the optimizer's bound on delta_lr_scale (0 = its default, 0.02)
MAX_LIP_WARP = 1.0                  # the optimizer's bound on lip_warp (reenact.lipwarp.MAX_GAIN; 0 = off)
INITS = ("auto", "anchor", "regressor", "mixed", "uniform", "random")  # the optimizer's start points ("" = auto)


def lookahead(sigma: float, latent_sigma: float = 0.0) -> tuple[int, int]:
    """Frames of look-ahead of the landmarks and the optimizer smoothing for a header's smoothing_sigma
    (0 = each stage's default, negative = off) and latent_sigma (the optimizer's smoothing of its returned
    latents, ceil(3 latent_sigma) more frames; 0 = off)."""
    lm = LANDMARKS_SIGMA if sigma == 0 else max(sigma, 0.0)
    opt = OPTIMIZER_SIGMA if sigma == 0 else max(sigma, 0.0)
    return math.ceil(3 * lm), math.ceil(3 * opt) + math.ceil(3 * max(latent_sigma, 0.0))


def required_in_flight(window: int, sigma: float = 0.0, latent_sigma: float = 0.0) -> int:
    """Frames that must be in flight for the first result to come out (look-aheads + one window)."""
    w = window or DEFAULT_WINDOW
    return sum(lookahead(sigma, latent_sigma)) + w + 1


class _Queue:
    """A bounded queue whose blocking calls give up when the pipeline stops."""

    def __init__(self, maxsize: int, stop: threading.Event) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = stop

    def put(self, item) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self):
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                return self._q.get(timeout=0.1)
            except queue.Empty:
                continue

    def get_nowait(self):
        return self._q.get_nowait()

    def qsize(self) -> int:
        return self._q.qsize()


@dataclass
class StreamSpec:
    """A validated Reenact header plus what the gateway resolved for it."""

    reenactment_id: str
    person_id: str
    version: int
    anchors: PersonAnchors
    edits: list[tuple[Any, float]]
    output: int                   # gateway_pb2.OUTPUT_KIND_FRAMES / _VIDEO
    encoding: int                 # types_pb2.IMAGE_ENCODING_*
    paste_back: bool
    steps: int
    window: int
    fps: float
    resolution: int               # generator output side (Triton model)
    num_ws: int
    w_dim: int
    crop_size: int
    frame_size: tuple[int, int] | None = None  # (width, height) of the driving frames when known upfront
    motion: str = ""              # optimizer keypoint targets ("" = default)
    smoothing_sigma: float = 0.0  # landmarks + optimizer temporal smoothing (0 = defaults, < 0 = off)
    opening_weight: float = 0.0   # optimizer opening-ratio term weight (0 = default, off)
    latent_sigma: float = 0.0     # optimizer smoothing of the returned latents (0 = default, off)
    init: str = ""                # optimizer start point of every frame ("" = default, auto)
    opening_range: float = 0.0    # optimizer soft map of the mouth opening into the scan's range (0 = off)
    mouth_starts: float = 0.0     # optimizer candidate starts along the mouth-opening direction (0 = off)
    delta_lr_scale: float = 0.0   # optimizer learning rate of delta / learning_rate (0 = default, 0.02)
    lip_warp: float = 0.0         # residual lip warp, fraction of the way to the target's lip shape (0 = off)


@dataclass
class _Frame:
    index: int
    rgb: np.ndarray | None        # the driving frame, kept only for paste-back
    affine: np.ndarray | None = None
    has_face: bool = False
    t_target: float = 0.0
    optimize_s: float = 0.0


@dataclass
class StreamStats:
    frames: int = 0
    without_face: int = 0
    kp_errors: list[float] = field(default_factory=list)
    first_track_s: float = float("nan")    # stream start -> first landmarks result
    first_latent_s: float = float("nan")   # stream start -> first optimizer result
    render_s: float = 0.0                  # summed Triton render time
    wall_s: float = 0.0

    def as_log(self) -> dict[str, float | int]:
        return {"frames": self.frames, "frames_without_face": self.without_face,
                "first_track_s": round(self.first_track_s, 3), "first_latent_s": round(self.first_latent_s, 3),
                "render_s": round(self.render_s, 3), "wall_s": round(self.wall_s, 3)}


class DrivingSink:
    """Writes driving frames to an mp4 file next to the reenactment (for Render's paste-back).

    Thread-safe: the source stage adds frames while the RPC thread may close the sink (a cancelled stream or a
    passed deadline does not wait for the source, which can be blocked on the client). Closing the muxer while
    another thread muxes crashes libavformat (a segfault of the whole gateway), so every call holds one lock
    and, once closed, `add` and `finish` do nothing."""

    def __init__(self, path: pathlib.Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self._enc = None
        self._f = None
        self._size: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def add(self, rgb: np.ndarray) -> None:
        from reenact.video import Mp4ChunkEncoder

        with self._lock:
            if self._closed:
                return
            if self._enc is None:
                h, w = rgb.shape[:2]
                self._size = (w, h)
                self._enc = Mp4ChunkEncoder(self.fps, w, h)
                self._f = open(self.path, "wb")  # noqa: SIM115 - closed in finish/close
            for chunk in self._enc.add(rgb):
                self._f.write(chunk)

    def finish(self) -> pathlib.Path | None:
        with self._lock:
            if self._closed or self._enc is None:
                return None
            for chunk in self._enc.finish():
                self._f.write(chunk)
            self._f.close()
            self._enc = None
            return self.path

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._enc is not None:
                self._enc.close()
                self._enc = None
            if self._f is not None:
                self._f.close()


class ReenactPipeline:
    """Runs one stream; iterate `run()` in the RPC thread. `cancel()` from the RPC's done-callback."""

    def __init__(self, *, peers: Peers, spec: StreamSpec, source: Iterator[tuple[int, np.ndarray]],
                 writer: ReenactmentWriter, queue_frames: int, max_in_flight: int, render_batch: int,
                 driving_sink: DrivingSink | None = None, driving_file: pathlib.Path | None = None,
                 metrics=None, request_id: str = "", on_frame_size: Callable[[int, int], None] | None = None,
                 client_active: Callable[[], bool] = lambda: True, deadline: float | None = None) -> None:
        self.client_active = client_active
        self.deadline = deadline  # the client's (time.monotonic()), passed on to the peer streams
        self.peers, self.spec, self.source, self.writer = peers, spec, source, writer
        self.render_batch = render_batch
        self.driving_sink, self.driving_file = driving_sink, driving_file
        self.metrics = metrics
        self.request_id = request_id
        self.on_frame_size = on_frame_size
        self.stop = threading.Event()
        self.error: ReenactError | None = None
        self._lock = threading.Lock()
        self.q_frames = _Queue(queue_frames, self.stop)
        self.q_targets = _Queue(queue_frames, self.stop)
        self.q_latents = _Queue(queue_frames, self.stop)
        self.q_out = _Queue(queue_frames, self.stop)
        self._slots = threading.Semaphore(max_in_flight)
        self._frames: dict[int, _Frame] = {}
        self._calls: list[grpc.Future] = []
        self._threads: list[threading.Thread] = []
        self._size_known = threading.Event()
        self.frame_size = spec.frame_size
        if self.frame_size is not None:
            self._size_known.set()
        self.stats = StreamStats()
        self.t_start = time.perf_counter()
        self.finished = False
        self.meta: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------------- control

    def fail(self, exc: BaseException) -> None:
        """Record the first error, stop every stage and cancel the peer calls."""
        with self._lock:
            if self.error is None:
                if isinstance(exc, ReenactError):
                    self.error = exc
                else:
                    log.error("pipeline stage failed", exc_info=exc)
                    self.error = InternalError(f"internal error: {type(exc).__name__}: {exc}")
        self.stop.set()
        self._cancel_calls()

    def _cancel_calls(self) -> None:
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            call.cancel()

    def cancel(self) -> None:
        if not self.finished:
            self.fail(CancelledError("the client cancelled the stream", reason="CLIENT_CANCELLED"))

    def _stage(self, name: str, fn: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except _Stopped:
                pass
            except grpc.RpcError as exc:
                if not self.stop.is_set():
                    self.fail(peer_error(exc, name))
            except BaseException as exc:  # noqa: BLE001 - handed to the output thread
                self.fail(exc)

        t = threading.Thread(target=run, name=f"gw-{name}", daemon=True)
        self._threads.append(t)
        return t

    def _acquire_slot(self) -> None:
        while not self._slots.acquire(timeout=0.1):
            if self.stop.is_set():
                raise _Stopped

    # ----------------------------------------------------------------------------------- stages

    def _source(self) -> None:
        keep = self.spec.paste_back
        for index, rgb in self.source:
            if self.stop.is_set():
                raise _Stopped
            if self.frame_size is None:
                self.frame_size = (int(rgb.shape[1]), int(rgb.shape[0]))
                self._size_known.set()
            self._acquire_slot()
            with self._lock:
                self._frames[index] = _Frame(index, rgb if keep else None)
            if self.driving_sink is not None:
                self.driving_sink.add(rgb)
            self.q_frames.put((index, rgb))
        if not self.client_active():
            # the client's stream ended because the RPC was cancelled, not because the client half-closed: ending
            # the peers' streams normally would let them finish (and count) as a success
            raise CancelledError("the client cancelled the stream", reason="CLIENT_CANCELLED")
        if self.driving_sink is not None:
            self.driving_file = self.driving_sink.finish()
        self._size_known.set()
        self.q_frames.put(DONE)

    def _landmark_requests(self) -> Iterator[landmarks_pb2.TrackFramesRequest]:
        yield landmarks_pb2.TrackFramesRequest(config=landmarks_pb2.TrackConfig(
            crop_size=self.spec.crop_size, return_crop=True, crop_encoding=types_pb2.IMAGE_ENCODING_RGB8,
            smoothing_sigma=self.spec.smoothing_sigma))
        try:
            while (item := self.q_frames.get()) is not DONE:
                index, rgb = item
                yield landmarks_pb2.TrackFramesRequest(frame=landmarks_pb2.Frame(index=index, image=_wire_image(rgb)))
        except _Stopped:
            self._cancel_calls()  # cancel before this generator ends: its end would half-close the call (= success)
            return

    def _landmarks(self) -> None:
        call = self.peers.landmarks.TrackFrames(self._landmark_requests(), metadata=self._md(),
                                                timeout=time_left(None, self.deadline))
        self._register(call)
        for resp in call:
            if math.isnan(self.stats.first_track_s):
                self.stats.first_track_s = time.perf_counter() - self.t_start
            r = resp.result
            has_face = r.status in (landmarks_pb2.FACE_STATUS_OK, landmarks_pb2.FACE_STATUS_MULTIPLE_FACES)
            target = optimizer_pb2.OptimizeTarget(index=resp.index, no_face=not has_face)
            with self._lock:
                fr = self._frames.get(resp.index)
            if fr is None:
                raise InternalError(f"landmarks answered frame {resp.index}, which was not sent")
            if has_face:
                fr.has_face = True
                fr.affine = affine_from_proto(r.alignment.crop_to_source, field="alignment.crop_to_source")
                target.keypoints.CopyFrom(r.landmarks.crop_points)
                target.crop_size = r.alignment.crop_size
                if r.crop.data:
                    target.crop.CopyFrom(r.crop)
            self.q_targets.put(target)
        self.q_targets.put(DONE)

    def _optimizer_requests(self) -> Iterator[optimizer_pb2.OptimizeRequest]:
        s = self.spec
        yield optimizer_pb2.OptimizeRequest(config=optimizer_pb2.OptimizeConfig(
            person_id=s.person_id, person_version=s.version,
            options=optimizer_pb2.OptimizerOptions(steps=s.steps, window=s.window, motion=s.motion,
                                                   keypoint_sigma=s.smoothing_sigma,
                                                   opening_weight=s.opening_weight,
                                                   latent_sigma=s.latent_sigma, init=s.init,
                                                   opening_range=s.opening_range,
                                                   mouth_starts=s.mouth_starts,
                                                   delta_lr_scale=s.delta_lr_scale,
                                                   lip_warp=s.lip_warp)))
        try:
            while (target := self.q_targets.get()) is not DONE:
                with self._lock:
                    fr = self._frames.get(target.index)
                if fr is not None:
                    fr.t_target = time.perf_counter()
                yield optimizer_pb2.OptimizeRequest(target=target)
        except _Stopped:
            self._cancel_calls()  # cancel before this generator ends: its end would half-close the call (= success)
            return

    def _optimizer(self) -> None:
        call = self.peers.optimizer.Optimize(self._optimizer_requests(), metadata=self._md(),
                                             timeout=time_left(None, self.deadline))
        self._register(call)
        last = time.perf_counter()
        for resp in call:
            now = time.perf_counter()
            with self._lock:
                fr = self._frames.get(resp.index)
            if fr is None:
                raise InternalError(f"the optimizer answered frame {resp.index}, which was not sent")
            fr.optimize_s = now - max(fr.t_target, last)
            if math.isnan(self.stats.first_latent_s):
                self.stats.first_latent_s = now - self.t_start
            last = now
            self.q_latents.put(resp)
        self.q_latents.put(DONE)

    def _render(self) -> None:
        s = self.spec
        done = False
        while not done:
            first = self.q_latents.get()
            if first is DONE:
                break
            batch = [first]
            while len(batch) < self.render_batch:
                try:
                    item = self.q_latents.get_nowait()
                except queue.Empty:
                    break
                if item is DONE:
                    done = True
                    break
                batch.append(item)
            n, nw = s.anchors.num_anchors, s.num_ws
            alpha = np.stack([tensor_from_proto(r.alpha, field="alpha", shape=(n,)) for r in batch])
            delta = np.stack([tensor_from_proto(r.delta, field="delta", shape=(nw, n)) for r in batch])
            ws = np.stack([tensor_from_proto(r.ws, field="ws", shape=(nw, s.w_dim)) for r in batch])
            t0 = time.perf_counter()
            images = self.peers.renderer.render(s.person_id, render_ws(alpha, delta, ws, s.anchors, s.edits),
                                                request_id=self.request_id)
            took = time.perf_counter() - t0
            self.stats.render_s += took
            per_frame = took / len(batch)
            if self.metrics is not None:
                self.metrics.render_batch.observe(len(batch))
            for i, r in enumerate(batch):
                lips = self._lips(r)
                image = images[i] if lips is None or s.edits else lip_warped(images[i], *lips, s.resolution)
                self.q_out.put((r, alpha[i], delta[i], ws[i], image, per_frame, lips))
        self.q_out.put(DONE)

    @staticmethod
    def _lips(r: optimizer_pb2.OptimizeResponse) -> tuple[np.ndarray, np.ndarray] | None:
        """The response's residual lip warp (lip_src, lip_dst) [40, 2] each, or None (lip_warp off)."""
        if not r.HasField("lip_src"):
            return None
        shape = (NUM_LIP_POINTS, 2)
        return (tensor_from_proto(r.lip_src, field="lip_src", shape=shape),
                tensor_from_proto(r.lip_dst, field="lip_dst", shape=shape))

    # ----------------------------------------------------------------------------------- output

    def run(self) -> Iterator[gateway_pb2.ReenactResponse]:
        s = self.spec
        t_start = self.t_start = time.perf_counter()
        for name, fn in (("source", self._source), ("landmarks", self._landmarks),
                         ("optimizer", self._optimizer), ("render", self._render)):
            self._stage(name, fn).start()
        encoder = None
        try:
            if s.paste_back:
                self._wait_size()
                width, height = self.frame_size or (s.resolution, s.resolution)
            else:
                width, height = s.resolution, s.resolution
            if self.on_frame_size is not None:
                self.on_frame_size(width, height)
            yield gateway_pb2.ReenactResponse(started=gateway_pb2.ReenactStarted(
                reenactment_id=s.reenactment_id, fps=s.fps, width=width, height=height))
            if s.output == gateway_pb2.OUTPUT_KIND_VIDEO:
                from reenact.video import Mp4ChunkEncoder

                encoder = Mp4ChunkEncoder(s.fps, width, height)
            while (item := self._get_out()) is not DONE:
                yield from self._emit(item, encoder)
            if encoder is not None:
                for chunk in encoder.finish():
                    yield gateway_pb2.ReenactResponse(video_chunk=types_pb2.VideoChunk(data=chunk))
                encoder = None
            self.writer.driving_path = self.driving_file
            wall = self.stats.wall_s = time.perf_counter() - t_start
            self.meta = self.writer.commit({
                "person_version": s.version, "fps": s.fps, "width": width, "height": height,
                "driving_width": (self.frame_size or (0, 0))[0], "driving_height": (self.frame_size or (0, 0))[1],
                "crop_size": s.crop_size, "resolution": s.resolution, "num_ws": s.num_ws, "w_dim": s.w_dim,
                "num_anchors": s.anchors.num_anchors, "steps": s.steps, "window": s.window,
                "motion": s.motion or "absolute", "smoothing_sigma": s.smoothing_sigma,
                "opening_weight": s.opening_weight, "latent_sigma": s.latent_sigma, "init": s.init or "auto",
                "opening_range": s.opening_range, "mouth_starts": s.mouth_starts,
                "delta_lr_scale": s.delta_lr_scale, "lip_warp": s.lip_warp,
                "frames_without_face": self.stats.without_face})
            self.finished = True
            st = self.stats
            errs = [e for e in st.kp_errors if math.isfinite(e)]
            yield gateway_pb2.ReenactResponse(summary=gateway_pb2.ReenactSummary(
                frames=st.frames, frames_without_face=st.without_face, wall_seconds=wall,
                frames_per_second=st.frames / wall if wall > 0 else 0.0,
                mean_keypoint_error=float(np.mean(errs)) if errs else 0.0))
        finally:
            self.finished = True
            if encoder is not None:
                encoder.close()
            self.close()

    def _get_out(self):
        try:
            return self.q_out.get()
        except _Stopped:
            raise self.error or CancelledError("the stream was stopped") from None

    def _wait_size(self) -> None:
        while not self._size_known.wait(0.1):
            if self.stop.is_set():
                raise self.error or CancelledError("the stream was stopped")

    def _emit(self, item, encoder) -> Iterator[gateway_pb2.ReenactResponse]:
        s = self.spec
        resp, alpha, delta, ws, image, render_s, lips = item
        with self._lock:
            fr = self._frames.pop(resp.index)
        self._slots.release()
        if s.paste_back and fr.rgb is not None:
            image = paste_back(fr.rgb, image, fr.affine if fr.has_face else self._last_affine(fr), s.crop_size)
        if fr.has_face:
            self._prev_affine = fr.affine
        self.writer.add(index=resp.index, alpha=alpha, delta=delta, ws=ws, affine=fr.affine if fr.has_face else None,
                        has_face=fr.has_face, lips=lips)
        st = self.stats
        st.frames += 1
        kp = float(resp.keypoint_error) if fr.has_face else float("nan")
        if fr.has_face:
            st.kp_errors.append(kp)
        else:
            st.without_face += 1
        if self.metrics is not None:
            self.metrics.frames.inc()
            if not fr.has_face:
                self.metrics.frames_without_face.inc()
        metrics = gateway_pb2.FrameMetrics(
            has_face=fr.has_face, keypoint_error=kp if math.isfinite(kp) else 0.0, losses=resp.losses,
            optimizer_steps=resp.steps, optimize_seconds=fr.optimize_s, render_seconds=render_s)
        out = gateway_pb2.ReenactedFrame(index=resp.index, metrics=metrics)
        if encoder is None:
            out.image.CopyFrom(image_to_proto(image, s.encoding))
            yield gateway_pb2.ReenactResponse(frame=out)
            return
        yield gateway_pb2.ReenactResponse(frame=out)
        for chunk in encoder.add(image):
            yield gateway_pb2.ReenactResponse(video_chunk=types_pb2.VideoChunk(data=chunk))

    _prev_affine: np.ndarray | None = None

    def _last_affine(self, fr: _Frame) -> np.ndarray | None:
        return self._prev_affine

    # ----------------------------------------------------------------------------------- helpers

    def _register(self, call) -> None:
        with self._lock:
            self._calls.append(call)
            stopped = self.stop.is_set()
        if stopped:
            call.cancel()

    def _md(self):
        return (("x-request-id", self.request_id),) if self.request_id else None

    def close(self) -> None:
        """Stop every stage, cancel the peer calls, remove local files of an uncommitted reenactment."""
        self.stop.set()
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            call.cancel()
        for t in self._threads:
            if t.name != "gw-source":  # the source may wait on the client's next message until the RPC ends
                t.join(10)
        if self.driving_sink is not None:
            self.driving_sink.close()
        if not self.writer.committed:
            self.writer.abort()


def _wire_image(rgb: np.ndarray) -> types_pb2.Image:
    if rgb.nbytes <= RGB8_MAX_BYTES:
        return image_to_proto(rgb, types_pb2.IMAGE_ENCODING_RGB8)
    return image_to_proto(rgb, types_pb2.IMAGE_ENCODING_JPEG, quality=95)
