"""The embedded default stack: services as child processes on loopback ports.

`Stack` starts each requested service with `python -m services.<name> --port <free port>`, waits until its
gRPC health check says SERVING, and stops them with SIGTERM (graceful drain) on exit. Used by the CLI's
demo and the end-to-end tests.

`start_local_stack(workdir)` starts the whole product on loopback: the real tritonserver (from the
nvidia-pytriton wheel, `python -m reenact.tritonserve`), landmarks, trainer, optimizer and gateway, with a
local artifact store and a Triton model repository under `workdir`, and returns once the gateway is
SERVING (which it is only when all its peers and Triton are). `LocalStack.stop()` stops them in reverse
order (SIGTERM, drain, then SIGKILL after a timeout); `LocalStack.kill(name)` / `LocalStack.restart(name)`
crash and restart one process on its own ports (fault tests). `write_state` / `read_state` / `stop_from_state`
let another process (`reenact down`) stop a stack started with `detach=True` (`reenact up --detach`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reenact.pdeathsig import with_parent_death_signal
from reenact.ports import free_port, free_ports, is_bind_failure  # noqa: F401 - free_port: re-exported

log = logging.getLogger("reenact.launcher")

ROOT = pathlib.Path(__file__).resolve().parent.parent
STATE_FILE = "stack.json"
STATE_SCHEMA = 1
# Start order; stop order is the reverse (the gateway drains first, Triton goes last).
STACK_ORDER = ("triton", "landmarks", "trainer", "optimizer", "gateway")
START_ATTEMPTS = 3   # tries of start_local_stack when a port was taken before its process bound it


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


def wait_triton_ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll Triton's server-ready over gRPC; TimeoutError / RuntimeError (process died) like wait_serving."""
    import tritonclient.grpc as grpcclient

    deadline = time.monotonic() + timeout
    client = grpcclient.InferenceServerClient(url)
    try:
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"tritonserver at {url} exited with code {proc.returncode}")
            try:
                if client.is_server_ready(client_timeout=1.0):
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"tritonserver at {url} not ready after {timeout:.0f}s")
            time.sleep(0.1)
    finally:
        client.close()


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def default_threads() -> int:
    """CPU threads per torch process of the local stack: half the cores, at least 1.

    The stack runs several torch processes at once (trainer, optimizer, Triton's python backend). Each
    with torch's default (all cores) oversubscribes the CPU, and torch's OpenMP barriers then collapse:
    measured on a loaded 2-core machine, a 32 px generator step took 1400 ms with 2 threads and 14 ms
    with 1.
    """
    return max(1, (os.cpu_count() or 1) // 2)


def thread_env(threads: int | None = None) -> dict[str, str]:
    """OMP/MKL thread counts for child processes, unless the caller's environment already sets them."""
    n = str(threads or default_threads())
    return {k: n for k in THREAD_VARS if threads is not None or k not in os.environ}


def _child_env(extra: dict | None = None) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(extra or {})}


def _spawn(cmd: list[str], log_path: pathlib.Path, env: dict | None, detach: bool) -> subprocess.Popen:
    """A child in its own session (Ctrl-C in a terminal reaches only the parent, which stops the stack in
    order). Not detached: it also gets SIGTERM when the parent dies (when started from the main thread)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pdeathsig = not detach and sys.platform == "linux" and threading.current_thread() is threading.main_thread()
    if pdeathsig:  # not a preexec_fn: see reenact.pdeathsig (gRPC's fork handlers can abort the child)
        cmd = with_parent_death_signal(cmd)
    with open(log_path, "ab") as fh:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                env=_child_env(env), cwd=str(ROOT), start_new_session=True)


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

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.name, self.proc.pid, timeout)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Stack:
    """A set of reenact services on loopback. Use as a context manager."""

    workdir: pathlib.Path
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    detach: bool = False

    def launch(self, name: str, *args: str, env: dict | None = None, port: int | None = None,
               metrics_port: int | None = None) -> ServiceProcess:
        """Start `python -m services.<name>` without waiting for it (see `wait`)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        port, mport = port or free_port(), metrics_port or free_port()
        log_path = self.workdir / f"{name}.log"
        cmd = [sys.executable, "-m", f"services.{name}", "--port", str(port), "--metrics-port", str(mport), *args]
        sp = ServiceProcess(name, port, mport, _spawn(cmd, log_path, env, self.detach), log_path)
        self.services[name] = sp
        return sp

    def wait(self, name: str, timeout: float = 60.0) -> ServiceProcess:
        """Wait until a launched service is SERVING; on failure stop it and raise with its log tail."""
        sp = self.services[name]
        try:
            wait_serving(sp.address, timeout, proc=sp.proc)
        except (TimeoutError, RuntimeError) as exc:
            sp.stop()
            raise RuntimeError(f"{name} failed to start: {exc}\n--- {sp.log_path} ---\n{sp.log_tail()}") from exc
        log.info("service up", extra={"service_name": name, "address": sp.address, "metrics_port": sp.metrics_port})
        return sp

    def start(self, name: str, *args: str, env: dict | None = None, timeout: float = 60.0) -> ServiceProcess:
        self.launch(name, *args, env=env)
        return self.wait(name, timeout)

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


# ----------------------------------------------------------------------------------------------------
# the whole product: start_local_stack


@dataclass
class LocalStack:
    """Triton + the four services on loopback (see `start_local_stack`). A context manager."""

    workdir: pathlib.Path
    store_url: str
    model_repository: pathlib.Path
    triton_url: str
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    env: dict[str, str] = field(default_factory=dict)   # the extra environment every process was started with
    detach: bool = False

    def address(self, name: str) -> str:
        """gRPC address (host:port) of a service: 'gateway', 'landmarks', 'trainer', 'optimizer' or 'triton'."""
        if name == "triton":
            return self.triton_url
        return self.processes[name].address

    @property
    def gateway_address(self) -> str:
        return self.address("gateway")

    @property
    def pids(self) -> dict[str, int]:
        return {name: sp.pid for name, sp in self.processes.items()}

    def process(self, name: str) -> ServiceProcess:
        return self.processes[name]

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int | None:
        """Send `sig` to one process (default SIGKILL: a crash, no drain) and reap it; returns its exit code
        (None if it is still running after `timeout` s, e.g. after a signal it handles).

        With SIGKILL its descendants die too (Triton: the tritonserver binary and its Python backend stubs,
        which run in their own session under the `reenact.tritonserve` wrapper): the whole service crashes.
        """
        sp = self.processes[name]
        doomed = _descendants(sp.pid) if sig == signal.SIGKILL else []
        if sp.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                sp.proc.send_signal(sig)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            return sp.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def restart(self, name: str, timeout: float = 120.0, *, wait: bool = True) -> ServiceProcess:
        """Start one process again with its original command line, ports, log and environment (after it was
        killed or crashed; a still running one is stopped first, SIGTERM then SIGKILL). With `wait`, returns
        once it is SERVING (Triton: ready); on failure the new process is stopped and RuntimeError carries
        its log tail. The gateway's peer channels reconnect by themselves: its health returns to SERVING
        within its readiness poll interval."""
        old = self.processes[name]
        if old.proc.poll() is None:
            old.stop(10)
        cmd = [str(a) for a in old.proc.args]
        with open(old.log_path, "ab") as fh:
            fh.write(f"\n----- restarted by the launcher at {time.strftime('%Y-%m-%dT%H:%M:%S')} -----\n".encode())
        sp = ServiceProcess(name, old.port, old.metrics_port, _spawn(cmd, old.log_path, self.env, self.detach),
                            old.log_path)
        self.processes[name] = sp
        if wait:
            try:
                if name == "triton":
                    wait_triton_ready(self.triton_url, timeout, proc=sp.proc)
                else:
                    wait_serving(sp.address, timeout, proc=sp.proc)
            except (TimeoutError, RuntimeError) as exc:
                sp.stop(10)
                raise RuntimeError(f"{name} failed to restart: {exc}\n--- {sp.log_path} ---\n{sp.log_tail()}") \
                    from exc
        log.info("service restarted", extra={"service_name": name, "pid": sp.pid, "port": sp.port})
        return sp

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM each process in reverse start order, wait up to `timeout` s each, then SIGKILL.
        Returns the exit codes. Idempotent."""
        codes: dict[str, int | None] = {}
        for name in reversed([n for n in STACK_ORDER if n in self.processes]):
            codes[name] = self.processes[name].stop(timeout)
        self.processes.clear()
        return codes

    def state(self) -> dict:
        return {"schema": STATE_SCHEMA, "workdir": str(self.workdir), "store_url": self.store_url,
                "model_repository": str(self.model_repository), "triton_url": self.triton_url,
                "gateway": self.address("gateway") if "gateway" in self.processes else "",
                "started_at": self.started_at,
                "processes": {name: {"pid": sp.pid, "address": sp.address if name != "triton" else self.triton_url,
                                     "port": sp.port, "metrics_port": sp.metrics_port, "log": str(sp.log_path),
                                     "cmdline": list(map(str, sp.proc.args))}
                              for name, sp in self.processes.items()}}

    def write_state(self, path: str | os.PathLike | None = None) -> pathlib.Path:
        """Write the pids and addresses (JSON, atomically) for `read_state` / `stop_from_state`."""
        return write_state(self, path)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_local_stack(workdir: str | os.PathLike, *, store_url: str | None = None, device: str = "auto",
                      profile: str | None = None, triton: bool = True, triton_url: str | None = None,
                      detach: bool = False, timeout: float = 180.0, threads: int | None = None,
                      extra_args: dict[str, list[str]] | None = None, env: dict | None = None) -> LocalStack:
    """Start tritonserver, landmarks, trainer, optimizer and gateway on loopback; return once all are ready.

    workdir: holds `store/` (the local artifact store unless `store_url` is given), `model_repository/`,
      `logs/<service>.log`, `triton/` (tritonserver's workdir).
    device: `auto`, `cpu` or `cuda` for the trainer and the optimizer.
    profile: the enrollment profile used when a request names none (`cpu-quick` or `gpu`); None = the
      trainer's choice (gpu with CUDA, else cpu-quick).
    triton: False = start no tritonserver and use the one at `triton_url` (required then).
    detach: the processes survive this one (`reenact up --detach`); write_state() so that
      `stop_from_state()` can stop them later. Otherwise they also get SIGTERM when this process dies.
    threads: CPU threads of each torch process (OMP_NUM_THREADS); None = $OMP_NUM_THREADS when set, else
      `default_threads()` (half the cores): the processes share the CPU.
    extra_args: more flags per service name, e.g. {"optimizer": ["--max-streams", "2"]}.
    env: more environment variables for every process.
    On any failure everything started is stopped and RuntimeError carries the failing service's log tail.
    """
    workdir = pathlib.Path(workdir).resolve()
    logs = workdir / "logs"
    model_repo = workdir / "model_repository"
    model_repo.mkdir(parents=True, exist_ok=True)
    if store_url is None:
        (workdir / "store").mkdir(parents=True, exist_ok=True)
        store_url = str(workdir / "store")
    if profile not in (None, "", "cpu-quick", "gpu"):
        raise ValueError(f"profile must be 'cpu-quick', 'gpu' or None, got {profile!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if not triton and not triton_url:
        raise ValueError("triton=False needs the triton_url of a running Triton")
    extra = extra_args or {}
    env = {**thread_env(threads), **(env or {})}
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            processes, url = _start_stack_once(workdir, logs, model_repo, store_url, device, profile, triton,
                                               triton_url, detach, timeout, extra, env)
            break
        except RuntimeError as exc:
            # a port handed to a child was taken before it bound (another process, an outgoing connection):
            # everything was stopped; start again on new ports
            if attempt == START_ATTEMPTS or not is_bind_failure(str(exc)):
                raise
            log.warning("a port was taken before its service bound it; starting the stack again on new ports",
                        extra={"attempt": attempt, "error": str(exc).splitlines()[0][:200]})
            # keep this try's logs apart, so that the next try's logs (and its error) hold only its own lines
            kept = logs / f"attempt-{attempt}"
            kept.mkdir(parents=True, exist_ok=True)
            for f in logs.glob("*.log"):
                f.replace(kept / f.name)
    local = LocalStack(workdir=workdir, store_url=store_url, model_repository=model_repo, triton_url=url,
                       processes={n: processes[n] for n in STACK_ORDER if n in processes}, env=env, detach=detach)
    log.info("local stack up", extra={"gateway": local.gateway_address, "triton": url, "workdir": str(workdir)})
    return local


def _start_stack_once(workdir: pathlib.Path, logs: pathlib.Path, model_repo: pathlib.Path, store_url: str,
                      device: str, profile: str | None, triton: bool, triton_url: str | None, detach: bool,
                      timeout: float, extra: dict[str, list[str]], env: dict[str, str]
                      ) -> tuple[dict[str, ServiceProcess], str]:
    """One try of start_local_stack on fresh ports: (processes, triton_url); on failure all are stopped."""
    stack = Stack(logs, detach=detach)
    names = ("landmarks", "trainer", "optimizer", "gateway")
    picked = iter(free_ports(2 * len(names) + 2))   # a gRPC and a metrics port each, Triton's two
    ports = {name: (next(picked), next(picked)) for name in names}
    addr = {name: f"127.0.0.1:{p}" for name, (p, _m) in ports.items()}
    processes: dict[str, ServiceProcess] = {}
    try:
        if triton:
            tport, tmport = next(picked), next(picked)
            triton_url = f"127.0.0.1:{tport}"
            cmd = [sys.executable, "-m", "reenact.tritonserve", "--model-repository", str(model_repo),
                   "--grpc-port", str(tport), "--http-port", "-1", "--metrics-port", str(tmport),
                   "--workdir", str(workdir / "triton"), *extra.get("triton", [])]
            processes["triton"] = ServiceProcess("triton", tport, tmport, _spawn(cmd, logs / "triton.log", env, detach),
                                                 logs / "triton.log")
        common = ["--store-url", store_url]
        args = {
            "landmarks": [],
            "trainer": [*common, "--device", device, "--model-repository", str(model_repo), "--triton-url", triton_url],
            "optimizer": [*common, "--device", device],
            "gateway": [*common, "--landmarks-address", addr["landmarks"], "--trainer-address", addr["trainer"],
                        "--optimizer-address", addr["optimizer"], "--triton-url", triton_url,
                        "--model-repository", str(model_repo), "--default-profile", profile or ""],
        }
        for name in ("landmarks", "trainer", "optimizer", "gateway"):
            processes[name] = stack.launch(name, *args[name], *extra.get(name, []), env=env, port=ports[name][0],
                                           metrics_port=ports[name][1])
        deadline = time.monotonic() + timeout
        if "triton" in processes:
            tp = processes["triton"]
            try:
                wait_triton_ready(triton_url, max(1.0, deadline - time.monotonic()), proc=tp.proc)
            except (TimeoutError, RuntimeError) as exc:
                raise RuntimeError(f"triton failed to start: {exc}\n--- {tp.log_path} ---\n{tp.log_tail()}") from exc
        for name in ("landmarks", "trainer", "optimizer", "gateway"):
            stack.wait(name, max(1.0, deadline - time.monotonic()))
    except BaseException:
        for name in reversed([n for n in STACK_ORDER if n in processes]):
            processes[name].stop(10)
        raise
    return processes, triton_url


# ----------------------------------------------------------------------------------------------------
# state file: stop a detached stack from another process


def write_state(stack: LocalStack, path: str | os.PathLike | None = None) -> pathlib.Path:
    """JSON state (pids, addresses, logs) of a stack, written atomically; default `<workdir>/stack.json`."""
    target = pathlib.Path(path) if path is not None else stack.workdir / STATE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stack.state(), indent=2) + "\n")
    os.replace(tmp, target)
    return target


def read_state(path: str | os.PathLike) -> dict:
    """The state written by `write_state`; FileNotFoundError when there is none, ValueError when unreadable."""
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / STATE_FILE
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA or "processes" not in data:
        raise ValueError(f"{p} is not a reenact stack state file")
    return data


def _pid_matches(pid: int, cmdline: list[str]) -> bool:
    """The process `pid` is still the one we started (pids are reused): same command line."""
    try:
        raw = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # /proc/PID/cmdline is NUL-terminated: drop only the final empty field, keep empty arguments
    # (e.g. `--default-profile ""`).
    parts = raw.split(b"\0")
    if parts and parts[-1] == b"":
        parts = parts[:-1]
    return [a.decode(errors="replace") for a in parts] == list(cmdline)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first, via /proc/PID/task/*/children); [] where unavailable."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in pathlib.Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(x) for x in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid not in out:
                    out.append(kid)
                    todo.append(kid)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own exited child) counts as gone
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_from_state(path: str | os.PathLike, timeout: float = 30.0, *, remove: bool = True) -> dict[str, str]:
    """Stop the processes of a state file in reverse start order: SIGTERM, wait up to `timeout` s, SIGKILL.

    Only a pid whose command line is still the recorded one is signalled. Returns name -> 'stopped',
    'killed' or 'not running'. Removes the state file afterwards (unless `remove` is False).
    """
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / STATE_FILE
    state = read_state(p)
    procs = state["processes"]
    result: dict[str, str] = {}
    for name in reversed([n for n in STACK_ORDER if n in procs] + [n for n in procs if n not in STACK_ORDER]):
        info = procs[name]
        pid = int(info["pid"])
        if not _alive(pid) or not _pid_matches(pid, info.get("cmdline", [])):
            result[name] = "not running"
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            result[name] = "killed"
        else:
            result[name] = "stopped"
    if remove:
        p.unlink(missing_ok=True)
    return result
