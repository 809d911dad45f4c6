"""Children that get SIGTERM when the process (thread) that started them dies, without a `preexec_fn`.

`subprocess.Popen(preexec_fn=...)` makes CPython fork() instead of vfork(). In a parent that uses gRPC,
fork() runs gRPC's fork handlers in the child, which restart its poller thread; `close_fds` then closes
the poller's epoll descriptor and the child can abort (SIGABRT, "Epoll1Poller ... epoll_wait error: Bad
file descriptor") before it reaches exec (grpc/grpc#43055; seen once in this project's CI as a service
that "exited with code -6" at start). Instead, the command is prefixed with a tiny Python bootstrap that
sets PR_SET_PDEATHSIG itself, checks that its parent is still the starter, and exec()s the command: the
pid stays the same, the signal setting survives exec, and Popen keeps its vfork() path.

PR_SET_PDEATHSIG fires when the starting THREAD exits: use it only from a long-lived thread (callers use
it from the main thread only). Linux only; elsewhere the command is returned unchanged.
"""

from __future__ import annotations

import os
import sys

_BOOT = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):  # the starter died before prctl: nobody would signal us\n"
    "    sys.exit(143)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def with_parent_death_signal(cmd: list[str]) -> list[str]:
    """`cmd` wrapped so that it gets SIGTERM when the calling process dies (Linux; else `cmd` itself)."""
    if sys.platform != "linux" or not cmd:
        return list(cmd)
    return [sys.executable, "-I", "-c", _BOOT, str(os.getpid()), *cmd]
