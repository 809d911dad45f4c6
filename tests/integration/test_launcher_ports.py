"""The embedded stack's ports: picked distinct, outside the range outgoing connections draw from, and a port
taken before its service binds it (CI once lost tritonserver's gRPC port that way: "Address already in use")
makes the launcher start the stack again on new ports instead of failing. Real tritonserver and real service
processes on loopback."""

from __future__ import annotations

import socket

import grpc
import pytest

from reenact import launcher
from reenact import ports as ports_mod


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    ports = launcher.free_ports(40)
    assert len(set(ports)) == 40
    lo, _hi = ports_mod._ephemeral_range()
    if lo - 20000 > 1000:   # Linux defaults (32768-60999): there is room below the range
        assert all(20000 <= p < lo for p in ports), ports
    for p in ports[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", p))


def test_is_bind_failure_reads_the_childrens_messages():
    assert launcher.is_bind_failure("triton failed to start: ...\nE1208 ... Address already in use {syscall...")
    assert launcher.is_bind_failure("RuntimeError: Failed to bind to address 127.0.0.1:5000")
    assert launcher.is_bind_failure("OSError: [Errno 98] Address already in use")
    assert not launcher.is_bind_failure("landmarks failed to start: ModuleNotFoundError: No module named 'cv2'")


def test_stack_starts_again_on_new_ports_when_a_port_was_taken(tmp_path, monkeypatch):
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)   # holds the port given to tritonserver
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real = launcher.free_ports
    calls: list[list[int]] = []

    def first_try_gets_a_taken_port(n, host="127.0.0.1"):
        ports = real(n, host)
        if not calls:
            ports[8] = taken   # Triton's gRPC port (after the four services' gRPC and metrics ports)
        calls.append(ports)
        return ports

    monkeypatch.setattr(launcher, "free_ports", first_try_gets_a_taken_port)
    try:
        st = launcher.start_local_stack(tmp_path / "stack", device="cpu", timeout=180, threads=1)
    finally:
        squatter.close()
    try:
        assert len(calls) == 2, calls
        assert st.triton_url != f"127.0.0.1:{taken}"
        first_log = (tmp_path / "stack/logs/attempt-1/triton.log").read_text()
        assert launcher.is_bind_failure(first_log), first_log[-2000:]
        assert not launcher.is_bind_failure((tmp_path / "stack/logs/triton.log").read_text())
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        for name in ("landmarks", "trainer", "optimizer", "gateway"):   # the gateway serves once Triton is up
            with grpc.insecure_channel(st.address(name)) as ch:
                status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
                assert status == health_pb2.HealthCheckResponse.SERVING, name
    finally:
        st.stop()


def test_stack_does_not_retry_a_failure_that_is_not_a_port(tmp_path, monkeypatch):
    calls = []
    real = launcher.free_ports
    monkeypatch.setattr(launcher, "free_ports", lambda n, host="127.0.0.1": calls.append(n) or real(n, host))
    with pytest.raises(RuntimeError, match="optimizer failed to start"):
        launcher.start_local_stack(tmp_path / "stack", device="cpu", triton=False, triton_url="127.0.0.1:1",
                                   timeout=60, threads=1, extra_args={"optimizer": ["--no-such-flag"]})
    assert len(calls) == 1
