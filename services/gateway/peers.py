"""The gateway's peers: gRPC channels and stubs of landmarks, trainer and optimizer, the Triton renderer,
their readiness, and the mapping of a peer's failed call to a domain error (pure of servicer logic).

A peer's status travels on to the gateway's client with its code and details (BadRequest field
violations, RetryInfo, ErrorInfo reason), its message prefixed with the peer's name. A peer that cannot be
reached or died mid-call becomes UNAVAILABLE with reason PEER_UNAVAILABLE and a retry delay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reenact.api.landmarks.v1 import landmarks_pb2_grpc
from reenact.api.optimizer.v1 import optimizer_pb2_grpc
from reenact.api.trainer.v1 import trainer_pb2_grpc
from reenact.errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DeadlineError,
    ExhaustedError,
    FieldViolation,
    InternalError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    ReenactError,
    UnauthenticatedError,
    UnavailableError,
)
from reenact.runtime import tls
from reenact.runtime.deadlines import deadline_var, time_left
from reenact.runtime.status import details_of

log = logging.getLogger("reenact.gateway.peers")

PEERS = ("landmarks", "trainer", "optimizer")
_KINDS: dict[str, type[ReenactError]] = {cls.kind: cls for cls in (
    InvalidInputError, NotFoundError, AlreadyExistsError, PreconditionError, ExhaustedError, UnavailableError,
    AbortedError, CancelledError, DeadlineError, PermissionDeniedError, UnauthenticatedError, InternalError)}
# Bigger than any frame, crop or latent batch the gateway sends or receives.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def _channel(address: str, tls_config) -> grpc.Channel:
    if tls_config is None:
        return grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
    return tls.channel(address, tls_config, _CHANNEL_OPTIONS)


def peer_error(exc: grpc.RpcError, peer: str) -> ReenactError:
    """A failed call to `peer` -> the domain error the gateway's client gets (code and details kept)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    name = code.name if code is not None else "UNKNOWN"
    text = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    try:
        det = details_of(exc)
    except Exception:  # noqa: BLE001 - no or unreadable status details
        det = {"violations": [], "retry_after_s": None, "reason": ""}
    if name == "UNAVAILABLE":
        return UnavailableError(f"{peer} is unavailable: {text}", reason="PEER_UNAVAILABLE",
                                retry_after_s=det["retry_after_s"] if det["retry_after_s"] is not None else 1.0)
    if name == "DEADLINE_EXCEEDED":
        dl = deadline_var.get()
        if dl is not None and time.monotonic() >= dl - 0.05:  # the client's own deadline, passed on to the peer
            return DeadlineError(f"the deadline passed while waiting for {peer}", reason="DEADLINE_PASSED")
        return UnavailableError(f"{peer} did not answer in time: {text}", reason="PEER_TIMEOUT", retry_after_s=1.0)
    if name == "CANCELLED":  # we did not cancel it (that path never maps): the peer stopped the call
        return AbortedError(f"{peer} ended the call: {text}", reason="PEER_ABORTED")
    cls = _KINDS.get(name, InternalError)
    return cls(f"{peer}: {text}", violations=[FieldViolation(f, d) for f, d in det["violations"]],
               retry_after_s=det["retry_after_s"], reason=det["reason"] or ("PEER_ERROR" if cls is InternalError else ""))


class Peers:
    """Channels to the peers (created once, reconnecting by themselves) and the Triton renderer."""

    def __init__(self, landmarks: str, trainer: str, optimizer: str, triton_url: str, *,
                 renderer=None, timeout: float = 30.0, tls_config=None) -> None:
        """tls_config: a ServiceConfig whose tls_* options make the channels (m)TLS (reenact.runtime.tls)."""
        self.addresses = {"landmarks": landmarks, "trainer": trainer, "optimizer": optimizer}
        self.channels = {name: _channel(addr, tls_config) for name, addr in self.addresses.items()}
        self.landmarks = landmarks_pb2_grpc.LandmarksServiceStub(self.channels["landmarks"])
        self.trainer = trainer_pb2_grpc.TrainerServiceStub(self.channels["trainer"])
        self.optimizer = optimizer_pb2_grpc.OptimizerServiceStub(self.channels["optimizer"])
        self._health = {name: health_pb2_grpc.HealthStub(ch) for name, ch in self.channels.items()}
        self.triton_url = triton_url
        if renderer is None:
            from reenact.tritonserve.client import TritonRenderer, TritonTLS

            renderer = TritonRenderer(triton_url, timeout=timeout,
                                      tls=TritonTLS.from_config(tls_config) if tls_config is not None else None)
        self.renderer = renderer
        self.timeout = timeout

    def call(self, peer: str, fn: Callable, request, **kw):
        """One unary call with the peer timeout, shortened to the client's remaining deadline (deadline
        propagation); a failure becomes the mapped domain error."""
        timeout = time_left(kw.pop("timeout", self.timeout))
        try:
            return fn(request, timeout=timeout, **kw)
        except grpc.RpcError as exc:
            raise peer_error(exc, peer) from None

    def readiness(self) -> dict[str, bool]:
        """SERVING state of each peer and of Triton, checked now (1 s per check at most)."""
        out = {}
        for name, stub in self._health.items():
            try:
                st = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status
                out[name] = st == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                out[name] = False
        out["triton"] = bool(self.renderer.is_ready())
        return out

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
        try:
            self.renderer.close()
        except Exception:  # noqa: BLE001
            pass


class ReadinessPoller:
    """Polls the peers every `interval` s and calls `on_change(ready, states)` when readiness changes."""

    def __init__(self, peers: Peers, interval: float, on_change: Callable[[bool, dict[str, bool]], None]) -> None:
        self.peers = peers
        self.interval = interval
        self.on_change = on_change
        self.states: dict[str, bool] = {}
        self.ready = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> bool:
        states = self.peers.readiness()
        ready = all(states.values())
        if ready != self.ready or states != self.states:
            level = logging.INFO if ready or not self.ready else logging.WARNING
            log.log(level, "peers ready" if ready else "peers not ready",
                    extra={"states": ",".join(f"{k}={'up' if v else 'down'}" for k, v in states.items())})
            self.states, self.ready = states, ready
            self.on_change(ready, states)
        return ready

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling
                log.exception("readiness poll failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-readiness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
