"""The embedded default stack: services as child processes on loopback ports.

`Stack` starts each requested service with `python -m services.<name> --port <free port>`, waits until its
gRPC health check says SERVING, and stops them with SIGTERM (graceful drain) on exit. Used by
`reenact up`, `reenact demo` and the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger("reenact.launcher")

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_serving(address: str, timeout: float, service: str = "", proc: subprocess.Popen | None = None) -> None:
    """Poll grpc.health.v1 until SERVING; raises TimeoutError (or RuntimeError if the process died)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"service at {address} exited with code {proc.returncode}")
            try:
                st = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1).status
                if st == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not SERVING after {timeout:.0f}s")
            time.sleep(0.1)


@dataclass
class ServiceProcess:
    name: str
    port: int
    metrics_port: int
    proc: subprocess.Popen
    log_path: pathlib.Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Stack:
    """A set of reenact services on loopback. Use as a context manager."""

    workdir: pathlib.Path
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def start(self, name: str, *args: str, env: dict | None = None, timeout: float = 60.0) -> ServiceProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port, mport = free_port(), free_port()
        log_path = self.workdir / f"{name}.log"
        cmd = [sys.executable, "-m", f"services.{name}", "--port", str(port), "--metrics-port", str(mport), *args]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    **(env or {})}
        with open(log_path, "ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=str(ROOT))
        sp = ServiceProcess(name, port, mport, proc, log_path)
        self.services[name] = sp
        try:
            wait_serving(sp.address, timeout, proc=proc)
        except (TimeoutError, RuntimeError) as exc:
            sp.stop()
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} failed to start: {exc}\n--- {log_path} ---\n{tail}") from exc
        log.info("service up", extra={"service_name": name, "address": sp.address, "metrics_port": mport})
        return sp

    def address(self, name: str) -> str:
        return self.services[name].address

    def stop(self) -> None:
        for sp in reversed(list(self.services.values())):
            sp.stop()
        self.services.clear()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
