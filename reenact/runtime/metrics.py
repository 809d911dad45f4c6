"""Prometheus metrics of a gRPC service (per-server registry, `reenact_` prefix, base units)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class ServiceMetrics:
    """RPC counters, latency histograms, in-flight gauge and a readiness gauge.

    Services add their own metrics to `registry` (e.g. frames/s, queue depth, cache hits).
    """

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("reenact_grpc_requests", "Finished RPCs by method and status code",
                                ["service", "method", "code"], registry=r)
        self.latency = Histogram("reenact_grpc_request_duration_seconds", "RPC duration (streams: whole stream)",
                                 ["service", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("reenact_grpc_in_flight_requests", "RPCs being handled now",
                               ["service", "method"], registry=r)
        self.errors = Counter("reenact_grpc_errors", "Failed RPCs by status code (non-OK)",
                              ["service", "method", "code"], registry=r)
        self.ready = Gauge("reenact_service_ready", "1 when the service reports SERVING", ["service"], registry=r)

    def serve_http(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return server.server_port

    def close(self) -> None:
        srv = getattr(self, "_http", None)
        if srv is not None:
            srv.shutdown()
            srv.server_close()
            self._http = None
