"""Property-based fuzzing (hypothesis) of the proto inputs of the gateway and the landmarks service, through
REAL servers on loopback: random well-formed messages (every field of the request type drawn at random:
unknown enum values, NaN/inf, huge ints, oversized strings, random bytes, images with random or huge
declared sizes) and malformed bytes, unary and streamed, for every RPC of both services. Each call must
end with a clean status - never INTERNAL or UNKNOWN, never a hang (every call has a deadline) - and
afterwards both servers still answer health checks and real calls, with bounded memory.

The gateway runs with auth off (to reach the deepest validation), without a trainer, optimizer or Triton
(calls that get past validation end as UNAVAILABLE, a clean status); the landmarks service is the real
one with MediaPipe. Derandomized and small (FUZZ_EXAMPLES, default 100 per service), FUZZ_RANDOM=1 for new
inputs each run.
"""

from __future__ import annotations

import datetime
import os
import resource
import struct
import zlib

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor as _descriptor
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reenact.api.common.v1 import types_pb2
from reenact.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from reenact.api.landmarks.v1 import landmarks_pb2
from reenact.launcher import free_port
from reenact.store import LocalStore

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=datetime.timedelta(seconds=30), database=None,
                derandomize=not os.environ.get("FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
CALL_TIMEOUT = 20.0
MAX_RSS_GROWTH_MB = 600

pytestmark = pytest.mark.timeout(300)

F = _descriptor.FieldDescriptor
_INT_RANGES = {F.TYPE_INT32: (-2**31, 2**31 - 1), F.TYPE_SINT32: (-2**31, 2**31 - 1),
               F.TYPE_SFIXED32: (-2**31, 2**31 - 1), F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1),
               F.TYPE_INT64: (-2**63, 2**63 - 1), F.TYPE_SINT64: (-2**63, 2**63 - 1),
               F.TYPE_SFIXED64: (-2**63, 2**63 - 1), F.TYPE_UINT64: (0, 2**64 - 1), F.TYPE_FIXED64: (0, 2**64 - 1)}


def _png(width: int, height: int, body: bytes = b"\0" * 64) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


def _images():
    """types_pb2.Image: random fields, plus real small images and decompression bombs."""
    def rgb8(w, h, ok):  # ok: data of the declared size, when that is small enough to send
        ok = ok and w * h * 3 <= 2 << 20
        return types_pb2.Image(encoding=types_pb2.IMAGE_ENCODING_RGB8, width=w, height=h,
                               data=bytes(w * h * 3) if ok else b"\x01" * 17)

    def real(w, h, enc):
        from reenact.wire import image_to_proto

        img = np.random.default_rng(w * h).integers(0, 255, (h, w, 3), dtype=np.uint8)
        return image_to_proto(img, enc)

    sides = st.sampled_from([0, 1, 15, 16, 17, 64, 4096, 8193, 30000, 65535])
    return st.one_of(
        st.builds(rgb8, sides, sides, st.booleans()),
        st.builds(real, st.integers(8, 96), st.integers(8, 96),
                  st.sampled_from([types_pb2.IMAGE_ENCODING_PNG, types_pb2.IMAGE_ENCODING_JPEG])),
        st.builds(lambda w, h: types_pb2.Image(encoding=types_pb2.IMAGE_ENCODING_PNG, data=_png(w, h)), sides, sides),
        # a real decompression bomb: 20000 x 20000 zeros, 1.2 GB decoded, ~1.2 MB sent
        st.just(types_pb2.Image(encoding=types_pb2.IMAGE_ENCODING_PNG,
                                data=_png(20000, 20000, bytes(20000 * 3 + 1) * 20))),
        message(types_pb2.Image.DESCRIPTOR, 2, special=False),
    )


def _scalar(f):
    if f.type == F.TYPE_BOOL:
        return st.booleans()
    if f.type in _INT_RANGES:
        lo, hi = _INT_RANGES[f.type]
        return st.one_of(st.sampled_from([0, 1, -1 if lo < 0 else 2, lo, hi]), st.integers(lo, hi))
    if f.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if f.type == F.TYPE_FLOAT else 64)
    if f.type == F.TYPE_STRING:
        return st.one_of(st.text(max_size=40), st.sampled_from(["alice", "astro", "a" * 300, "../etc/passwd",
                                                                  "req-1", "person-\u00e9"]))
    if f.type == F.TYPE_BYTES:
        return st.binary(max_size=512)
    if f.type == F.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in f.enum_type.values]), st.integers(-3, 50))
    raise TypeError(f.type)


def _field_value(f, depth: int):
    """A strategy of one field's value (a list for repeated fields, a dict for maps); None = leave unset."""
    if f.message_type is None:
        return st.lists(_scalar(f), max_size=4) if f.label == F.LABEL_REPEATED else _scalar(f)
    if depth >= 3:
        return None
    if f.message_type.GetOptions().map_entry:
        kf, vf = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
        return None if vf.message_type is not None else st.dictionaries(_scalar(kf), _scalar(vf), max_size=3)
    sub = message(f.message_type, depth + 1)
    return st.lists(sub, max_size=3) if f.label == F.LABEL_REPEATED else sub


def message(desc, depth: int = 0, special: bool = True):
    """A strategy of random messages of `desc` (fields randomly set, recursion bounded by depth)."""
    if special and desc.full_name == types_pb2.Image.DESCRIPTOR.full_name:
        return st.deferred(_images)
    cls = message_factory.GetMessageClass(desc)
    fields = {}
    for f in desc.fields:
        value = _field_value(f, depth)
        if value is not None:
            fields[f.name] = st.one_of(st.none(), value)

    def build(values):
        msg = cls()
        for name, val in values.items():
            if val is None:
                continue
            f = desc.fields_by_name[name]
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                getattr(msg, name).update(val)
            elif f.label == F.LABEL_REPEATED:
                getattr(msg, name).extend(val)
            elif f.message_type is not None:
                getattr(msg, name).CopyFrom(val)
            else:
                setattr(msg, name, val)
        return msg

    return st.fixed_dictionaries(fields).map(build)


def payloads(method_desc):
    """Serialized requests of one call: random messages or malformed bytes (a stream: 0..4 of them)."""
    one = st.one_of(message(method_desc.input_type).map(lambda m: m.SerializeToString()),
                    st.binary(min_size=1, max_size=64))
    if method_desc.client_streaming:
        return st.lists(one, max_size=4)
    return one


def invoke(channel, service_desc, method_desc, payload) -> grpc.StatusCode:
    path = f"/{service_desc.full_name}/{method_desc.name}"
    kind = (method_desc.client_streaming, method_desc.server_streaming)
    try:
        if kind == (False, False):
            channel.unary_unary(path)(payload, timeout=CALL_TIMEOUT)
        elif kind == (False, True):
            for _ in channel.unary_stream(path)(payload, timeout=CALL_TIMEOUT):
                pass
        elif kind == (True, False):
            channel.stream_unary(path)(iter(payload), timeout=CALL_TIMEOUT)
        else:
            for _ in channel.stream_stream(path)(iter(payload), timeout=CALL_TIMEOUT):
                pass
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def calls(service_desc):
    methods = list(service_desc.methods)
    return st.sampled_from(methods).flatmap(lambda m: st.tuples(st.just(m), payloads(m)))


class NeverReadyRenderer:
    def is_ready(self):
        return False

    def close(self):
        pass


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from services.gateway.__main__ import build_server
    from services.gateway.config import GatewayConfig
    from services.gateway.peers import Peers

    root = tmp_path_factory.mktemp("fuzz-gateway")
    dead = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    cfg = GatewayConfig(port=0, store_url="unused", landmarks_address=dead[0], trainer_address=dead[1],
                        optimizer_address=dead[2], triton_url="127.0.0.1:1", precheck_frames=0, max_message_mb=4,
                        peer_timeout_s=5, drain_seconds=0.5, grace_seconds=0)
    peers = Peers(*dead, cfg.triton_url, renderer=NeverReadyRenderer(), timeout=5)
    server = build_server(cfg, store=LocalStore(root / "store", fsync=False), peers=peers)
    server.start()
    channel = grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 8 << 20)])
    yield server, channel
    channel.close()
    server.stop(drain_seconds=0.5, grace_seconds=0)
    peers.close()


@pytest.fixture(scope="module")
def landmarks():
    from services.landmarks.__main__ import build_server
    from services.landmarks.config import LandmarksConfig

    server = build_server(LandmarksConfig(port=0, workers=4, drain_seconds=0.5, grace_seconds=0))
    server.start()
    server.servicer.warm_up()
    server.set_ready(True)
    channel = grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 32 << 20)])
    yield server, channel
    channel.close()
    server.stop(drain_seconds=0.5, grace_seconds=0)


GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["ReenactService"]
LANDMARKS = landmarks_pb2.DESCRIPTOR.services_by_name["LandmarksService"]


def _describe(method_desc, payload) -> str:
    cls = message_factory.GetMessageClass(method_desc.input_type)
    out = []
    for raw in payload if isinstance(payload, list) else [payload]:
        try:
            out.append(str(cls.FromString(raw))[:300].replace("\n", " "))
        except Exception:  # noqa: BLE001 - malformed on purpose
            out.append(f"<{len(raw)} malformed bytes>")
    return f"{method_desc.name}({'; '.join(out)})"


def _fuzz(channel, service_desc) -> list[str]:
    """Runs the calls; returns the calls that raised the peak RSS by more than 100 MB (for the report)."""
    growth: list[str] = []

    @FUZZ
    @given(call=calls(service_desc))
    def run(call):
        method_desc, payload = call
        before = rss_peak_mb()
        code = invoke(channel, service_desc, method_desc, payload)
        assert code not in BAD, f"{method_desc.name}: {code}"
        if rss_peak_mb() - before > 100:
            growth.append(f"+{rss_peak_mb() - before:.0f} MB {code.name} {_describe(method_desc, payload)}")
    run()
    return growth


def test_gateway_inputs_end_in_clean_statuses(gateway):
    server, channel = gateway
    before = rss_peak_mb()
    growth = _fuzz(channel, GATEWAY)
    assert rss_peak_mb() - before < MAX_RSS_GROWTH_MB, growth
    stub = gateway_pb2_grpc.ReenactServiceStub(channel)
    assert stub.ListPersons(gateway_pb2.ListPersonsRequest(), timeout=10) is not None  # still serving
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
        health_pb2.HealthCheckResponse.NOT_SERVING  # answers (its peers are down by design)
    assert server.tracker.count == 0  # no call left hanging
    assert server.servicer._slots.active == 0  # every stream slot was given back


def test_landmarks_inputs_end_in_clean_statuses(landmarks):
    server, channel = landmarks
    before = rss_peak_mb()
    growth = _fuzz(channel, LANDMARKS)
    assert rss_peak_mb() - before < MAX_RSS_GROWTH_MB, growth
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    from reenact.samples import no_face_image
    from reenact.wire import image_to_proto

    resp = channel.unary_unary(f"/{LANDMARKS.full_name}/DetectImage",
                               request_serializer=landmarks_pb2.DetectImageRequest.SerializeToString,
                               response_deserializer=landmarks_pb2.DetectImageResponse.FromString)(
        landmarks_pb2.DetectImageRequest(image=image_to_proto(no_face_image(), types_pb2.IMAGE_ENCODING_PNG)),
        timeout=30)
    assert resp.result.status == landmarks_pb2.FACE_STATUS_NO_FACE  # still does real work
    assert server.tracker.count == 0


def test_decompression_bomb_is_refused_before_decoding(landmarks):
    _, channel = landmarks
    bomb = types_pb2.Image(encoding=types_pb2.IMAGE_ENCODING_PNG, data=_png(20000, 20000, bytes(20000 * 3 + 1) * 20))
    before = rss_peak_mb()
    code = invoke(channel, LANDMARKS, LANDMARKS.methods_by_name["DetectImage"],
                  landmarks_pb2.DetectImageRequest(image=bomb).SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert rss_peak_mb() - before < 100


@pytest.mark.parametrize("sigma", [1e12, float("nan"), float("inf")])
def test_huge_smoothing_sigma_is_refused(landmarks, sigma):
    """Found by the fuzzer: the tracker buffers 3 sigma frames, so an unbounded sigma allocated gigabytes."""
    _, channel = landmarks
    first = landmarks_pb2.TrackFramesRequest(config=landmarks_pb2.TrackConfig(smoothing_sigma=sigma))
    code = invoke(channel, LANDMARKS, LANDMARKS.methods_by_name["TrackFrames"], [first.SerializeToString()])
    assert code == grpc.StatusCode.INVALID_ARGUMENT
