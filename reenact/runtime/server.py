"""A gRPC server with health, reflection, metrics, request ids, error mapping and graceful shutdown."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from reenact.errors import InvalidInputError, ReenactError
from reenact.runtime import status, tls
from reenact.runtime.auth import Authenticator, principal_var
from reenact.runtime.config import ServiceConfig, describe
from reenact.runtime.deadlines import deadline_from_context, deadline_var
from reenact.runtime.logs import new_request_id, request_id_var
from reenact.runtime.metrics import ServiceMetrics

log = logging.getLogger("reenact.runtime.server")

Registration = Callable[[grpc.Server], None]


class _Tracker:
    """Counts in-flight RPCs so shutdown can drain them."""

    def __init__(self) -> None:
        self._n = 0
        self._cv = threading.Condition()

    def enter(self) -> None:
        with self._cv:
            self._n += 1

    def leave(self) -> None:
        with self._cv:
            self._n -= 1
            self._cv.notify_all()

    @property
    def count(self) -> int:
        return self._n

    def wait_idle(self, timeout: float) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self._n == 0, timeout=timeout)


class _Call:
    """Bookkeeping of one RPC: request id, metrics, the final status code, error mapping."""

    def __init__(self, owner: ServiceServer, method: str, context: grpc.ServicerContext,
                 full_method: str = "") -> None:
        self.owner, self.method, self.context = owner, method, context
        self.full_method = full_method or method
        md = dict(context.invocation_metadata() or ())
        self.request_id = md.get("x-request-id") or new_request_id()
        self.code = "OK"
        self.t0 = 0.0

    def __enter__(self) -> _Call:
        self.token = request_id_var.set(self.request_id)
        self.deadline_token = deadline_var.set(deadline_from_context(self.context))
        self.principal_token = None
        self.t0 = time.perf_counter()
        self.owner.tracker.enter()
        self.owner.metrics.in_flight.labels(self.owner.name, self.method).inc()
        try:
            self.context.send_initial_metadata((("x-request-id", self.request_id),))
        except ValueError:  # metadata already sent by the servicer
            pass
        return self

    def authenticate(self) -> None:
        """Run the service's authenticator (if any); its ReenactError becomes the call's status."""
        auth = self.owner.authenticator
        if auth is None:
            return
        md = {k: v for k, v in (self.context.invocation_metadata() or ()) if isinstance(v, str)}
        principal = auth.authenticate(self.full_method, md)
        self.principal_token = principal_var.set(principal)

    def fail(self, exc: BaseException) -> None:
        """Map an exception to a status and abort the RPC (re-raises)."""
        if isinstance(exc, ReenactError):
            self.code = exc.kind
            log.info("rpc failed", extra={"method": self.method, "code": exc.kind, "error": exc.message})
            status.abort(self.context, exc)
        code = _context_code(self.context)
        if code is not None:  # the servicer aborted itself with a status
            self.code = code.name
            raise exc
        self.code = "INTERNAL"
        log.exception("unhandled error", extra={"method": self.method})
        self.context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    def __exit__(self, *exc) -> None:
        m = self.owner.metrics
        m.in_flight.labels(self.owner.name, self.method).dec()
        m.latency.labels(self.owner.name, self.method).observe(time.perf_counter() - self.t0)
        m.requests.labels(self.owner.name, self.method, self.code).inc()
        if self.code != "OK":
            m.errors.labels(self.owner.name, self.method, self.code).inc()
        self.owner.tracker.leave()
        if self.principal_token is not None:
            principal_var.reset(self.principal_token)
        deadline_var.reset(self.deadline_token)
        request_id_var.reset(self.token)


def _context_code(context) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except (AttributeError, NotImplementedError):
        return None
    return code if code not in (None, grpc.StatusCode.OK) else None


class _Malformed:
    """A request message that did not parse (the deserializer's result instead of raising, which grpc would
    answer with INTERNAL): the handler turns it into INVALID_ARGUMENT."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def error(self) -> InvalidInputError:
        return InvalidInputError(f"malformed request message: {type(self.exc).__name__}: {self.exc}",
                                 reason="MALFORMED_REQUEST")


def _tolerant(deserializer):
    if deserializer is None:
        return None

    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the client's bad input
            return _Malformed(exc)

    return parse


def _checked(request):
    if isinstance(request, _Malformed):
        raise request.error()
    return request


def _checked_stream(request_iterator):
    """The client's messages; a malformed one raises InvalidInputError where the servicer reads it."""
    for request in request_iterator:
        yield _checked(request)


class _Interceptor(grpc.ServerInterceptor):
    def __init__(self, owner: ServiceServer) -> None:
        self.owner = owner

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        full_method = handler_call_details.method
        method = full_method.rsplit("/", 1)[-1]
        owner = self.owner
        streaming_in = handler.request_streaming

        def request_of(request):
            return _checked_stream(request) if streaming_in else _checked(request)

        if handler.response_streaming:
            behavior = handler.unary_stream or handler.stream_stream

            def streaming(request, context):
                with _Call(owner, method, context, full_method) as call:
                    try:
                        call.authenticate()
                        yield from behavior(request_of(request), context)
                    except GeneratorExit:
                        call.code = "CANCELLED"
                        raise
                    except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
                        call.fail(exc)
                    if not context.is_active():
                        call.code = "CANCELLED"

            wrapped = streaming
        else:
            behavior = handler.unary_unary or handler.stream_unary

            def unary(request, context):
                with _Call(owner, method, context, full_method) as call:
                    try:
                        call.authenticate()
                        return behavior(request_of(request), context)
                    except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
                        call.fail(exc)

            wrapped = unary
        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return factory(wrapped, request_deserializer=_tolerant(handler.request_deserializer),
                       response_serializer=handler.response_serializer)


class ServiceServer:
    """Owns one grpc.Server with everything a reenact service needs around it.

    `registrations` add servicers to the server; `service_names` are the full proto service names
    (for health and reflection). The service starts NOT_SERVING; call `set_ready(True)` once it can
    do real work (models loaded, peers reachable).

    Health names: "" and each service name report readiness (`set_ready`; Kubernetes readinessProbe).
    `LIVENESS_SERVICE` ("liveness") is SERVING from `start()` until the graceful stop, whatever the
    readiness: a livenessProbe naming it (`grpc.service: liveness`) restarts only a process whose gRPC
    server no longer answers, never one that is merely waiting for a peer or the store.
    """

    LIVENESS_SERVICE = "liveness"

    def __init__(self, name: str, config: ServiceConfig, registrations: Iterable[Registration],
                 service_names: Iterable[str], metrics: ServiceMetrics | None = None,
                 authenticator: Authenticator | None = None) -> None:
        self.name = name
        self.authenticator = authenticator
        self.config = config
        self.metrics = metrics or ServiceMetrics(name)
        self.tracker = _Tracker()
        self.service_names = list(service_names)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.port = 0
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        mb = config.max_message_mb * 1024 * 1024
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix=f"{name}-rpc"),
            interceptors=[_Interceptor(self)],
            options=[("grpc.max_receive_message_length", mb), ("grpc.max_send_message_length", mb),
                     ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=None,
        )
        for register in registrations:
            register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        self.set_ready(False)

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def start(self) -> int:
        """Bind and start; returns the gRPC port. Also starts /metrics when configured."""
        bind = f"{self.config.host}:{self.config.port}"
        creds = tls.server_credentials(self.config)
        self.port = self.server.add_secure_port(bind, creds) if creds is not None else self.server.add_insecure_port(bind)
        if self.port == 0:
            raise RuntimeError(f"could not bind {self.config.host}:{self.config.port}")
        self.server.start()
        self.health.set(self.LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        if self.config.metrics_port >= 0:
            self.metrics_port = self.metrics.serve_http(self.config.host, self.config.metrics_port)
        log.info("service started", extra={"service_name": self.name, "address": self.address,
                                           "metrics_port": self.metrics_port, "tls": tls.mode(self.config),
                                           "config": describe(self.config)})
        return self.port

    def set_ready(self, ready: bool) -> None:
        st = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for svc in ["", *self.service_names]:
            self.health.set(svc, st)
        self.metrics.ready.labels(self.name).set(1 if ready else 0)

    def stop(self, drain_seconds: float | None = None, grace_seconds: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, wait for in-flight RPCs (drain), then stop with a grace period."""
        if self._stopped.is_set():
            return
        drain = self.config.drain_seconds if drain_seconds is None else drain_seconds
        grace = self.config.grace_seconds if grace_seconds is None else grace_seconds
        self.set_ready(False)
        self.health.enter_graceful_shutdown()
        drained = self.tracker.wait_idle(drain)
        log.info("draining done" if drained else "drain timed out",
                 extra={"in_flight": self.tracker.count, "service_name": self.name})
        self.server.stop(grace).wait()
        self.metrics.close()
        self._stopped.set()
        log.info("service stopped", extra={"service_name": self.name})

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT -> graceful stop in a background thread (signal handlers must return fast)."""

        def handler(signum, _frame):
            log.info("signal received", extra={"signal": signal.Signals(signum).name})
            threading.Thread(target=self.stop, name="shutdown", daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def wait(self) -> None:
        """Block until stopped."""
        self._stopped.wait()
