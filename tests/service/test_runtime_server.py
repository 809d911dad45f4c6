"""The shared service runtime on a real gRPC server on port 0: error mapping, health, reflection, metrics."""

import threading
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from reenact.api.landmarks.v1 import landmarks_pb2, landmarks_pb2_grpc
from reenact.errors import ExhaustedError, InvalidInputError, NotFoundError
from reenact.runtime import ServiceServer
from reenact.runtime.config import ServiceConfig
from reenact.runtime.status import details_of

SERVICE = "reenact.api.landmarks.v1.LandmarksService"


class ScriptedServicer(landmarks_pb2_grpc.LandmarksServiceServicer):
    """A test servicer whose behaviour is chosen by crop_size, to exercise the runtime's mapping."""

    def __init__(self):
        self.release = threading.Event()

    def DetectImage(self, request, context):
        match request.crop_size:
            case 1:
                raise InvalidInputError.for_field("image.data", "corrupt")
            case 2:
                raise NotFoundError("no such person")
            case 3:
                raise ExhaustedError("too many streams", retry_after_s=1.5, reason="QUOTA")
            case 4:
                raise RuntimeError("boom")
            case 5:
                self.release.wait(10)
        return landmarks_pb2.DetectImageResponse()

    def TrackFrames(self, request_iterator, context):
        for i, _ in enumerate(request_iterator):
            if i == 2:
                raise InvalidInputError.for_field("frame", "bad frame")
            yield landmarks_pb2.TrackFramesResponse(index=i)


@pytest.fixture()
def server():
    servicer = ScriptedServicer()
    cfg = ServiceConfig(port=0, metrics_port=0, drain_seconds=5, grace_seconds=1)
    srv = ServiceServer("test", cfg, [lambda s: landmarks_pb2_grpc.add_LandmarksServiceServicer_to_server(
        servicer, s)], [SERVICE])
    srv.start()
    srv.servicer = servicer
    yield srv
    servicer.release.set()
    srv.stop(drain_seconds=1, grace_seconds=0)


@pytest.fixture()
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def test_health_reflects_readiness(server, channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        assert stub.Check(health_pb2.HealthCheckRequest(service=name)).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING
    server.set_ready(True)
    assert stub.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status == \
        health_pb2.HealthCheckResponse.SERVING


def test_liveness_is_independent_of_readiness(server, channel):
    """The livenessProbe's health name: SERVING while the server runs, even while NOT ready (a peer or the
    store down must take the pod out of rotation, never restart it); NOT_SERVING once it shuts down."""
    stub = health_pb2_grpc.HealthStub(channel)

    def status(name):
        return stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status

    live = server.LIVENESS_SERVICE
    assert live == "liveness"
    assert status("") == health_pb2.HealthCheckResponse.NOT_SERVING  # not ready yet (e.g. a peer down)
    assert status(live) == health_pb2.HealthCheckResponse.SERVING
    server.set_ready(True)
    server.set_ready(False)  # ready, then a peer goes away: readiness drops, liveness stays
    assert (status(""), status(SERVICE), status(live)) == (health_pb2.HealthCheckResponse.NOT_SERVING,
                                                            health_pb2.HealthCheckResponse.NOT_SERVING,
                                                            health_pb2.HealthCheckResponse.SERVING)
    stopper = threading.Thread(target=server.stop, kwargs={"drain_seconds": 2, "grace_seconds": 1})
    fut = landmarks_pb2_grpc.LandmarksServiceStub(channel).DetectImage.future(
        landmarks_pb2.DetectImageRequest(crop_size=5), timeout=10)  # keeps the server draining for a moment
    while server.tracker.count == 0:
        threading.Event().wait(0.01)
    stopper.start()
    threading.Event().wait(0.2)
    assert status(live) == health_pb2.HealthCheckResponse.NOT_SERVING  # shutting down: liveness goes too
    server.servicer.release.set()
    fut.result()
    stopper.join(10)


def test_reflection_lists_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in resp.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


@pytest.mark.parametrize("size,code", [(1, grpc.StatusCode.INVALID_ARGUMENT), (2, grpc.StatusCode.NOT_FOUND),
                                       (3, grpc.StatusCode.RESOURCE_EXHAUSTED), (4, grpc.StatusCode.INTERNAL)])
def test_domain_errors_map_to_status_with_details(channel, size, code):
    stub = landmarks_pb2_grpc.LandmarksServiceStub(channel)
    with pytest.raises(grpc.RpcError) as ei:
        stub.DetectImage(landmarks_pb2.DetectImageRequest(crop_size=size), timeout=5)
    assert ei.value.code() == code
    det = details_of(ei.value)
    if size == 1:
        assert det["violations"] == [("image.data", "corrupt")]
    if size == 3:
        assert det["retry_after_s"] == pytest.approx(1.5) and det["reason"] == "QUOTA"
    if size == 4:
        assert "boom" in ei.value.details()


def test_streaming_error_after_partial_results(channel):
    stub = landmarks_pb2_grpc.LandmarksServiceStub(channel)
    reqs = iter([landmarks_pb2.TrackFramesRequest()] * 5)
    got = []
    with pytest.raises(grpc.RpcError) as ei:
        for r in stub.TrackFrames(reqs, timeout=5):
            got.append(r.index)
    assert got == [0, 1] and ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_request_id_echoed_and_metrics_exported(server, channel):
    stub = landmarks_pb2_grpc.LandmarksServiceStub(channel)
    _, call = stub.DetectImage.with_call(landmarks_pb2.DetectImageRequest(crop_size=0),
                                         metadata=(("x-request-id", "abc123"),), timeout=5)
    assert ("x-request-id", "abc123") in tuple(call.initial_metadata())
    with pytest.raises(grpc.RpcError):
        stub.DetectImage(landmarks_pb2.DetectImageRequest(crop_size=2), timeout=5)
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    assert 'reenact_grpc_requests_total{code="OK",method="DetectImage",service="test"} 1.0' in text
    assert 'reenact_grpc_errors_total{code="NOT_FOUND",method="DetectImage",service="test"} 1.0' in text
    assert "reenact_grpc_request_duration_seconds_bucket" in text
    assert 'reenact_grpc_in_flight_requests{method="DetectImage",service="test"} 0.0' in text


def test_graceful_stop_drains_in_flight_rpc(server, channel):
    server.set_ready(True)
    stub = landmarks_pb2_grpc.LandmarksServiceStub(channel)
    fut = stub.DetectImage.future(landmarks_pb2.DetectImageRequest(crop_size=5), timeout=10)
    while server.tracker.count == 0:
        threading.Event().wait(0.01)
    stopper = threading.Thread(target=server.stop, kwargs={"drain_seconds": 5, "grace_seconds": 1})
    stopper.start()
    threading.Event().wait(0.2)
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status == \
        health_pb2.HealthCheckResponse.NOT_SERVING
    server.servicer.release.set()
    assert fut.result() == landmarks_pb2.DetectImageResponse()  # the in-flight call finished normally
    stopper.join(10)
    assert not stopper.is_alive()
