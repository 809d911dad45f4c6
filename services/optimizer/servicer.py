"""gRPC adapter of the reenactment optimizer: proto <-> domain types, stream bookkeeping, metrics.

One Optimize stream = one `ReenactmentOptimizer` fed in the RPC thread. The request iterator is read
lazily, one target per engine `push`, so a client that sends faster than the engine optimizes is slowed
by gRPC flow control instead of filling memory. The RPC's end (client cancel, deadline, server stop)
sets the stream's stop event, which the engine polls between Adam steps: work stops at once.
Domain errors travel up unchanged; the service runtime maps them to status codes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from reenact.api.common.v1 import types_pb2
from reenact.api.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from reenact.errors import CancelledError, ExhaustedError, FieldViolation, InvalidInputError
from reenact.face.mesh import NUM_POINTS
from reenact.optimize.engine import FrameResult, OptimizerOptions, ReenactmentOptimizer, Target, landmark_net
from reenact.runtime.streams import StreamSlots, client_requests
from reenact.store import InvalidKeyError, validate_person_id
from reenact.wire import image_from_proto, tensor_from_proto, tensor_to_proto
from services.optimizer.cache import ModelCache
from services.optimizer.config import OptimizerConfig

log = logging.getLogger("reenact.optimizer")

MIN_CROP, MAX_CROP = 16, 1024
STEP_BUCKETS = (0, 1, 2, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000)
FRAME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
OPTION_FIELDS = tuple(optimizer_pb2.OptimizerOptions.DESCRIPTOR.fields_by_name)

OptimizerFactory = Callable[..., ReenactmentOptimizer]


# ---------------------------------------------------------------------------------------------- metrics


class OptimizerMetrics:
    """The service's own metrics on the server's registry (reenact_ prefix, base units)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.frames = Counter("reenact_optimizer_frames", "Frames optimized and answered", registry=r)
        self.steps = Histogram("reenact_optimizer_steps_per_frame", "Adam steps spent per frame",
                               buckets=STEP_BUCKETS, registry=r)
        self.frame_seconds = Histogram(
            "reenact_optimizer_frame_seconds",
            "Engine time per frame: seconds in push/flush spread over the frames they returned",
            buckets=FRAME_BUCKETS, registry=r)
        self.latency = Histogram("reenact_optimizer_frame_latency_seconds",
                                 "Seconds from receiving a target to sending its latent (window wait included)",
                                 buckets=FRAME_BUCKETS, registry=r)
        self.queue_depth = Gauge("reenact_optimizer_queue_depth",
                                 "Targets received but not yet answered, summed over streams (scaling signal)",
                                 registry=r)
        self.active_streams = Gauge("reenact_optimizer_active_streams", "Optimize streams being served",
                                    registry=r)


class CacheCollector:
    """Exports the ModelCache counters: reenact_optimizer_cache_{hits,misses,evictions}_total, size."""

    def __init__(self, cache: ModelCache) -> None:
        self.cache = cache

    def collect(self):
        s = self.cache.stats()
        for name, value, doc in (("hits", s.hits, "Person model lookups served from the cache"),
                                 ("misses", s.misses, "Person model loads from the artifact store"),
                                 ("evictions", s.evictions, "Person models evicted to fit the byte budget")):
            fam = CounterMetricFamily(f"reenact_optimizer_cache_{name}", doc)
            fam.add_metric([], value)
            yield fam
        yield GaugeMetricFamily("reenact_optimizer_cache_bytes", "Bytes of the cached person models", value=s.bytes)
        yield GaugeMetricFamily("reenact_optimizer_cache_entries", "Person models in the cache", value=s.entries)


# ----------------------------------------------------------------------------------------- conversions


def options_from_proto(msg: optimizer_pb2.OptimizerOptions, *, field: str = "config.options") -> OptimizerOptions:
    """Proto options -> validated engine options (0 / empty = the engine's default; a negative
    keypoint_sigma turns smoothing off). InvalidInputError with one violation per bad field, named
    by its path in the request (`config.options.<name>`)."""
    try:
        options = OptimizerOptions().override(**{name: getattr(msg, name) for name in OPTION_FIELDS})
        if msg.keypoint_sigma < 0:
            options = dataclasses.replace(options, keypoint_sigma=0.0)
        options.validate()
    except InvalidInputError as exc:
        violations = [FieldViolation(_request_path(v.field, field), v.description) for v in exc.violations]
        raise InvalidInputError("; ".join(f"{v.field}: {v.description}" for v in violations),
                                violations=violations) from None
    return options


def _request_path(engine_field: str, prefix: str) -> str:
    name = engine_field.removeprefix("options.")
    return f"{prefix}.{name}"


def target_from_proto(msg: optimizer_pb2.OptimizeTarget) -> Target:
    """OptimizeTarget -> engine Target; InvalidInputError naming the field when malformed."""
    if msg.index < 0:
        raise InvalidInputError.for_field("target.index", f"must be >= 0, got {msg.index}")
    size = msg.crop_size
    valid_size = MIN_CROP <= size <= MAX_CROP
    if msg.no_face:  # the engine repeats the previous latent; keypoints, crop and crop_size are unused
        return Target(index=msg.index, keypoints=np.zeros((NUM_POINTS, 3), np.float32),
                      crop_size=size if valid_size else MIN_CROP, crop=None, has_face=False)
    if not valid_size:
        raise InvalidInputError.for_field("target.crop_size", f"{size} outside {MIN_CROP}..{MAX_CROP}")
    return Target(index=msg.index, keypoints=_keypoints(msg), crop_size=size, crop=_crop(msg, size),
                  has_face=True)


def _keypoints(msg: optimizer_pb2.OptimizeTarget) -> np.ndarray:
    if not msg.HasField("keypoints"):
        raise InvalidInputError.for_field("target.keypoints", f"missing in frame {msg.index} (no_face is false)")
    if msg.keypoints.dtype != types_pb2.DATA_TYPE_FLOAT32:
        raise InvalidInputError.for_field("target.keypoints.dtype", "must be DATA_TYPE_FLOAT32")
    kps = tensor_from_proto(msg.keypoints, field="target.keypoints", shape=(NUM_POINTS, 3))
    if not np.isfinite(kps).all():
        raise InvalidInputError.for_field("target.keypoints.data", f"non-finite values in frame {msg.index}")
    return kps


def _crop(msg: optimizer_pb2.OptimizeTarget, size: int) -> np.ndarray | None:
    if not msg.HasField("crop") or (not msg.crop.data and not msg.crop.width and not msg.crop.height):
        return None
    rgb = image_from_proto(msg.crop, field="target.crop")
    if rgb.shape[:2] != (size, size):
        raise InvalidInputError.for_field(
            "target.crop.size", f"{rgb.shape[1]}x{rgb.shape[0]}, expected crop_size {size}x{size}")
    return rgb


def result_to_proto(r: FrameResult) -> optimizer_pb2.OptimizeResponse:
    return optimizer_pb2.OptimizeResponse(
        index=int(r.index),
        ws=tensor_to_proto(r.ws, np.float32),
        alpha=tensor_to_proto(r.alpha, np.float32),
        delta=tensor_to_proto(r.delta, np.float32),
        losses=types_pb2.LossTerms(terms={str(k): float(v) for k, v in r.losses.items()}),
        steps=int(r.steps),
        keypoint_error=float(r.keypoint_error),
        **({} if r.lip_src is None else {"lip_src": tensor_to_proto(r.lip_src, np.float32),
                                         "lip_dst": tensor_to_proto(r.lip_dst, np.float32)}),
    )


# ----------------------------------------------------------------------------------------------- streams


class _Stream:
    """Bookkeeping of one Optimize stream: targets waiting for their latent, engine time since the last
    answer. Keeps the shared queue-depth gauge equal to the sum of `waiting` over streams."""

    def __init__(self, metrics: OptimizerMetrics, max_queue: int) -> None:
        self.metrics = metrics
        self.max_queue = max_queue
        self.received_at: dict[int, float] = {}
        self.last_index: int | None = None
        self.engine_seconds = 0.0

    def receive(self, target: Target) -> None:
        if self.last_index is not None and target.index <= self.last_index:
            raise InvalidInputError.for_field(
                "target.index", f"indices must increase within a stream: {target.index} after {self.last_index}")
        if len(self.received_at) >= self.max_queue:
            raise ExhaustedError(f"more than {self.max_queue} targets waiting in this stream",
                                 reason="STREAM_QUEUE_FULL")
        self.last_index = target.index
        self.received_at[target.index] = time.perf_counter()
        self.metrics.queue_depth.inc()

    def answer(self, results: list[FrameResult]) -> Iterator[optimizer_pb2.OptimizeResponse]:
        if not results:
            return
        per_frame = self.engine_seconds / len(results)
        self.engine_seconds = 0.0
        now = time.perf_counter()
        for r in results:
            received = self.received_at.pop(int(r.index), None)
            if received is not None:
                self.metrics.queue_depth.dec()
                self.metrics.latency.observe(now - received)
            self.metrics.frames.inc()
            self.metrics.steps.observe(r.steps)
            self.metrics.frame_seconds.observe(per_frame)
            yield result_to_proto(r)

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.engine_seconds += time.perf_counter() - t0

    def close(self) -> None:
        self.metrics.queue_depth.dec(len(self.received_at))
        self.received_at.clear()


# ---------------------------------------------------------------------------------------------- servicer


class OptimizerServicer(optimizer_pb2_grpc.OptimizerServiceServicer):
    def __init__(self, config: OptimizerConfig, cache: ModelCache, metrics: OptimizerMetrics, *, device: str,
                 optimizer_factory: OptimizerFactory = ReenactmentOptimizer) -> None:
        self.config = config
        self.cache = cache
        self.metrics = metrics
        self.device = device
        self.optimizer_factory = optimizer_factory
        self._slots = StreamSlots("Optimize streams", lambda: self.config.max_streams,
                                  lambda: self.config.retry_after_s, self.metrics.active_streams)

    def warm_up(self) -> None:
        """Load the differentiable landmark network on the device once (before SERVING)."""
        landmark_net(self.device)

    def _slot(self):
        return self._slots.take()

    def _open(self, first: optimizer_pb2.OptimizeRequest, stop: threading.Event) -> ReenactmentOptimizer:
        if first.WhichOneof("kind") != "config":
            raise InvalidInputError.for_field("config", "the first message of a stream must carry the config")
        cfg = first.config
        try:
            validate_person_id(cfg.person_id)
        except InvalidKeyError as exc:
            raise InvalidInputError.for_field("config.person_id", exc.violations[0].description) from None
        if cfg.person_version < 0:
            raise InvalidInputError.for_field("config.person_version", "must be >= 0 (0 = latest)")
        options = options_from_proto(cfg.options)
        person = self.cache.get(cfg.person_id, cfg.person_version)
        extra = {"compile": True} if self.config.compile else {}
        init = ReenactmentOptimizer.resolve_init(options.init, person)
        if self.config.use_static_step(str(self.device), init, options.steps, options.mouth_starts):
            if options.mouth_starts > 0:  # the engine would refuse it too, on its own field path
                raise InvalidInputError.for_field(
                    "config.options.mouth_starts", f"{options.mouth_starts:g}: this server runs this stream (init "
                    f"{init!r}, {options.steps or 'default'} steps) as the static step (static_step="
                    f"{self.config.static_step}), which has no mouth starts (eager engine only); send 0, or init "
                    "'mixed' for an eager stream")
            extra["static"] = True
        engine = self.optimizer_factory(person, options, device=self.device, should_stop=stop.is_set, **extra)
        if engine.latency + 1 > self.config.max_queue:
            raise InvalidInputError.for_field(
                "config.options.window", f"window {options.window} + smoothing look-ahead keeps {engine.latency + 1}"
                f" targets waiting; this server buffers at most {self.config.max_queue} per stream")
        log.info("optimize stream opened", extra={"person_id": person.person_id, "version": person.version,
                                                  "window": options.window, "latency": engine.latency,
                                                  "static": bool(extra.get("static"))})
        return engine

    def Optimize(self, request_iterator, context) -> Iterator[optimizer_pb2.OptimizeResponse]:
        stop = threading.Event()
        if not context.add_callback(stop.set):  # the RPC already ended
            return
        with self._slot():
            requests = client_requests(request_iterator, context)
            first = next(requests, None)
            if first is None:
                return
            engine = self._open(first, stop)
            stream = _Stream(self.metrics, self.config.max_queue)
            try:
                yield from self._run(engine, stream, requests)
            except CancelledError:
                if not stop.is_set():
                    raise
                log.info("optimize stream cancelled; engine stopped", extra={"last_index": stream.last_index})
            finally:
                stream.close()
                engine.close()  # the static step's CUDA graph goes now, under the capture lock

    def _run(self, engine: ReenactmentOptimizer, stream: _Stream,
             requests: Iterator) -> Iterator[optimizer_pb2.OptimizeResponse]:
        for req in requests:
            if req.WhichOneof("kind") != "target":
                raise InvalidInputError.for_field("target", "only targets may follow the config message")
            target = target_from_proto(req.target)
            stream.receive(target)
            with stream.timed():
                results = engine.push(target)
            yield from stream.answer(results)
        with stream.timed():
            results = engine.flush()
        yield from stream.answer(results)
