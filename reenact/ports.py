"""Free loopback ports for child processes (the local stack, tritonserver, tests), and how to tell that a
child lost its port to someone else. No dependencies: tritonserver's side (reenact.tritonserve) uses it too."""

from __future__ import annotations

import pathlib
import random
import socket

# Markers of a lost port race in a child's log: tritonserver, gRPC's add_*_port, prometheus' HTTP server.
BIND_ERRORS = ("address already in use", "failed to bind", "failed to start grpc", "failed to start metrics",
               "failed to start http")


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux); (32768, 60999) when unreadable."""
    try:
        lo, hi = (int(x) for x in pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports that are free on `host` now, all held at once while picked (so never two alike).

    They are drawn at random below the kernel's ephemeral range where it leaves room (from 20000 up): a port
    from bind(0) lies inside that range, where every outgoing loopback connection (a test's gRPC client, a
    Triton health check) also takes its local port, and such a connection can take it before the child
    that was given it binds (seen in CI: tritonserver "Address already in use"). Still a race with other
    processes: the callers (reenact.launcher.start_local_stack, TritonServer) retry on a bind failure.
    """
    lo, _hi = _ephemeral_range()
    low, high = 20000, lo - 1
    rng = random.SystemRandom()
    held: list[socket.socket] = []
    try:
        tries = 0
        while len(held) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            candidate = rng.randint(low, high) if high - low > 1000 and tries < 50 * n else 0
            tries += 1
            try:
                s.bind((host, candidate))
            except OSError:
                s.close()
                continue
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def is_bind_failure(text: str) -> bool:
    """A start failure's message (with the child's log tail) says a port was taken."""
    low = text.lower()
    return any(m in low for m in BIND_ERRORS)
