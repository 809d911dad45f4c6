"""A real Triton Inference Server (the `tritonserver` 2.51 binary inside the nvidia-pytriton wheel).

Preparing the install (`prepare_install`, once per machine, idempotent and safe across processes):
  * `pytriton/tritonserver/` (binary, python backend, caches) is copied out of site-packages into
    `$REENACT_TRITON_HOME`, else `$XDG_CACHE_HOME/reenact/tritonserver-<pytriton>-py<X.Y>` (default
    `~/.cache/reenact/...`), under an exclusive `fcntl` lock on `<dir>.lock`; it is assembled in a temporary
    sibling directory and renamed into place, with a `.stamp` file naming its source, so a concurrent or
    interrupted preparation never leaves a half-copied install behind;
  * the python backend stub built for the running interpreter (`python_backend_stubs/<X.Y>/`) is put in
    `backends/python/triton_python_backend_stub`.

Environment of the server process (`server_env`):
  * LD_LIBRARY_PATH = <the interpreter's sysconfig LIBDIR> : <site-packages/nvidia_pytriton.libs> : old.
    The wheel's own libs folder also holds a libpython 3.13; without LIBDIR first the stub loads the wrong
    libpython and dies ("'_thread.RLock' object has no attribute '_recursion_count'").
  * PATH starts with the directory of `sys.executable`: the stub's embedded Python finds `python3` there,
    reads the venv's `pyvenv.cfg` and so sees the same site-packages (torch, numpy).
  * REENACT_PYTHONPATH = the directory holding the `reenact` package (+ `extra_pythonpath`): the stub runs
    its Python isolated (`-I`: PYTHONPATH is ignored), so model.py puts these entries on sys.path itself.

Server flags: explicit model control, gRPC / HTTP / metrics bound to `host` (127.0.0.1 by default),
`--backend-directory`/`--cache-directory` of the install, and a unique python-backend shared-memory prefix
per server (two servers on one machine would otherwise collide in /dev/shm).

TLS (`tls_cert_file` + `tls_key_file`, optional `tls_ca_file`): the gRPC endpoint serves TLS only
(`--grpc-use-ssl`); with a CA it requires client certificates signed by it (`--grpc-use-ssl-mutual`, unless
`tls_require_client_cert=False`). tritonserver's HTTP endpoint has no TLS, so it is off with TLS (it would
be a plaintext way around it); metrics (read-only, no inference) stay as configured. The readiness probe
of `start` dials with the server's own certificate as client certificate (it then needs the clientAuth
usage too) and checks Triton's certificate for `tls_server_name`, else the host of `grpc_url`.

Ports given as 0 or None are picked free by binding port 0; if Triton still loses the race for one of
them, the start is retried with fresh ports.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import fcntl
import glob
import importlib.metadata
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

from reenact.errors import UnavailableError
from reenact.pdeathsig import with_parent_death_signal
from reenact.ports import free_port, free_ports, is_bind_failure  # noqa: F401 - free_port: re-exported

log = logging.getLogger("reenact.tritonserve")

TRITON_VERSION = "2.51.0"
_PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent  # the directory holding `reenact/`
_STAMP = ".stamp"


class TritonStartError(UnavailableError):
    """tritonserver could not be prepared or did not become ready; the message ends with its log tail."""


# ----------------------------------------------------------------------------------------------------
# install


def _pytriton_dir() -> pathlib.Path:
    import pytriton  # only to locate the wheel; nothing of pytriton runs

    return pathlib.Path(pytriton.__file__).resolve().parent


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def default_install_dir() -> pathlib.Path:
    if os.environ.get("REENACT_TRITON_HOME"):
        return pathlib.Path(os.environ["REENACT_TRITON_HOME"])
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    try:
        pytriton_version = importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        pytriton_version = "unknown"
    return cache / "reenact" / f"tritonserver-{TRITON_VERSION}-pytriton{pytriton_version}-py{_python_version()}"


def libs_dir() -> pathlib.Path:
    """The shared libraries the wheel's tritonserver links against (`site-packages/nvidia_pytriton.libs`)."""
    pkg = _pytriton_dir()
    for cand in (pkg.parent / "nvidia_pytriton.libs", pkg / "tritonserver" / "external_libs"):
        if cand.is_dir():
            return cand
    raise TritonStartError(f"no nvidia_pytriton.libs next to {pkg}: is nvidia-pytriton installed from a wheel?")


@dataclass(frozen=True)
class TritonInstall:
    root: pathlib.Path

    @property
    def binary(self) -> pathlib.Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backends(self) -> pathlib.Path:
        return self.root / "backends"

    @property
    def caches(self) -> pathlib.Path:
        return self.root / "caches"


def _source_stamp(src: pathlib.Path, stub: pathlib.Path) -> str:
    parts = []
    for p in (src / "bin" / "tritonserver", src / "backends" / "python" / "libtriton_python.so", stub):
        st = p.stat()
        parts.append(f"{p}:{st.st_size}:{int(st.st_mtime)}")
    return "\n".join(parts) + "\n"


def _is_ready(dest: pathlib.Path, stamp: str) -> bool:
    try:
        return (dest / _STAMP).read_text() == stamp and os.access(dest / "bin" / "tritonserver", os.X_OK)
    except OSError:
        return False


def prepare_install(dest: str | os.PathLike | None = None) -> TritonInstall:
    """A runnable tritonserver tree (binary + python backend with this interpreter's stub + caches).

    Copies once; later calls only compare the stamp. Concurrency-safe (flock on `<dest>.lock`).
    """
    dest = pathlib.Path(dest) if dest is not None else default_install_dir()
    src = _pytriton_dir() / "tritonserver"
    stub = src / "python_backend_stubs" / _python_version() / "triton_python_backend_stub"
    if not (src / "bin" / "tritonserver").is_file():
        raise TritonStartError(f"no tritonserver binary in {src}")
    if not stub.is_file():
        raise TritonStartError(f"nvidia-pytriton ships no python backend stub for Python {_python_version()}")
    stamp = _source_stamp(src, stub)
    if _is_ready(dest, stamp):
        return TritonInstall(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_ready(dest, stamp):  # another process finished it while we waited
            return TritonInstall(dest)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            tree = tmp / "t"
            shutil.copytree(src, tree, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
            stub_dst = tree / "backends" / "python" / "triton_python_backend_stub"
            shutil.copyfile(stub, stub_dst)
            stub_dst.chmod(0o755)
            (tree / "bin" / "tritonserver").chmod(0o755)
            (tree / _STAMP).write_text(stamp)
            if dest.exists():  # stale (another wheel / Python): move aside, then drop
                old = tmp / "old"
                os.rename(dest, old)
            os.rename(tree, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("tritonserver prepared in %s", dest)
    return TritonInstall(dest)


def server_env(base: dict[str, str] | None = None, extra_pythonpath: list[str] | tuple[str, ...] = ()
               ) -> dict[str, str]:
    """Environment for tritonserver and its python-backend stubs (see the module docstring)."""
    env = dict(os.environ if base is None else base)

    def prepend(key: str, *items: str) -> None:
        old = [p for p in env.get(key, "").split(os.pathsep) if p]
        new = [p for p in items if p]
        env[key] = os.pathsep.join(new + [p for p in old if p not in new])

    prepend("LD_LIBRARY_PATH", sysconfig.get_config_var("LIBDIR") or "", str(libs_dir()))
    prepend("PATH", str(pathlib.Path(sys.executable).parent))
    # the stub's Python runs isolated (PYTHONPATH ignored): gen_model.py reads REENACT_PYTHONPATH itself
    prepend("REENACT_PYTHONPATH", *[str(p) for p in extra_pythonpath], str(_PACKAGE_ROOT))
    env.pop("PYTHONHOME", None)
    return env


# ----------------------------------------------------------------------------------------------------
# server


class TritonServer:
    """tritonserver as a child process on `host` (loopback by default), explicit model control.

        with TritonServer("model_repository") as ts:
            TritonRenderer(ts.grpc_url).load_model("alice")

    `model_repository`: a directory, or an `s3://...` URL in Triton's forms (credentials from the AWS_*
    environment / AWS_SHARED_CREDENTIALS_FILE of this process).
    Ports: None or 0 picks a free port. `http_port=-1` / `metrics_port=-1` disable that endpoint.
    `workdir` holds the log (`tritonserver.log`); a temporary one is made (and removed on stop) if None.
    `tls_*`: TLS / mutual TLS of the gRPC endpoint (see the module docstring); `client_tls()` is the
    matching `TritonTLS` of a client holding the server's own certificate.
    """

    def __init__(self, model_repository: str | os.PathLike, *, http_port: int | None = None,
                 grpc_port: int | None = None, metrics_port: int | None = None,
                 workdir: str | os.PathLike | None = None, host: str = "127.0.0.1",
                 install_dir: str | os.PathLike | None = None, load_models: list[str] | tuple[str, ...] = (),
                 startup_timeout: float = 60.0, exit_timeout: int = 10, log_verbose: int = 0,
                 echo_log: bool = False, extra_args: list[str] | tuple[str, ...] = (),
                 extra_pythonpath: list[str] | tuple[str, ...] = (), tls_cert_file: str | os.PathLike = "",
                 tls_key_file: str | os.PathLike = "", tls_ca_file: str | os.PathLike = "",
                 tls_require_client_cert: bool = True, tls_server_name: str = "") -> None:
        self.tls_cert_file, self.tls_key_file, self.tls_ca_file = (
            str(pathlib.Path(f).resolve()) if f else "" for f in (tls_cert_file, tls_key_file, tls_ca_file))
        self.tls_require_client_cert = tls_require_client_cert
        self.tls_server_name = tls_server_name
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file must be given together")
        if self.tls_ca_file and not self.tls_cert_file:
            raise ValueError("tls_ca_file needs tls_cert_file and tls_key_file (the server's certificate)")
        for f in (self.tls_cert_file, self.tls_key_file, self.tls_ca_file):
            if f and not pathlib.Path(f).is_file():
                raise ValueError(f"no such file {f!r}")
        if self.tls_cert_file:
            if http_port is not None and http_port > 0:
                raise ValueError("tritonserver's HTTP endpoint has no TLS: use http_port=-1 with tls_cert_file")
            http_port = -1
        # a local directory, or a URL tritonserver reads itself (s3://..., Triton's S3 forms; AWS_* env)
        self.model_repository: pathlib.Path | str = (
            str(model_repository) if "://" in str(model_repository) else pathlib.Path(model_repository).resolve())
        self.host = host
        self._want = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self.ports: dict[str, int] = {}
        self._own_workdir = workdir is None
        self.workdir = pathlib.Path(workdir) if workdir is not None else None
        self.install_dir = install_dir
        self.load_models = list(load_models)
        self.startup_timeout = startup_timeout
        self.exit_timeout = exit_timeout
        self.log_verbose = log_verbose
        self.echo_log = echo_log
        self.extra_args = list(extra_args)
        self.extra_pythonpath = list(extra_pythonpath)
        self.proc: subprocess.Popen | None = None
        self.install: TritonInstall | None = None
        self.startup_s: float | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=200)
        self._pump: threading.Thread | None = None
        self._shm_prefix = ""

    # -- addresses --------------------------------------------------------------------------------------

    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)

    @property
    def grpc_port(self) -> int:
        return self.ports["grpc"]

    @property
    def http_port(self) -> int | None:
        return self.ports.get("http")

    @property
    def metrics_port(self) -> int | None:
        return self.ports.get("metrics")

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host()}:{self.ports['grpc']}"

    @property
    def http_url(self) -> str | None:
        return f"http://{self._client_host()}:{self.ports['http']}" if "http" in self.ports else None

    @property
    def metrics_url(self) -> str | None:
        return (f"http://{self._client_host()}:{self.ports['metrics']}/metrics"
                if "metrics" in self.ports else None)

    @property
    def log_path(self) -> pathlib.Path:
        assert self.workdir is not None, "server not started"
        return self.workdir / "tritonserver.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def tls_mode(self) -> str:
        """'off', 'tls' or 'mtls' (client certificates required)."""
        if not self.tls_cert_file:
            return "off"
        return "mtls" if self.tls_ca_file and self.tls_require_client_cert else "tls"

    def client_tls(self):
        """The `TritonTLS` of a client that trusts `tls_ca_file` and presents the server's own certificate
        (the readiness probe); None without TLS."""
        if not self.tls_cert_file:
            return None
        from reenact.tritonserve.client import TritonTLS

        mutual = self.tls_mode == "mtls"
        return TritonTLS(root_cert_file=self.tls_ca_file, cert_file=self.tls_cert_file if mutual else "",
                         key_file=self.tls_key_file if mutual else "", server_name=self.tls_server_name)

    def log_tail(self, n: int = 40) -> str:
        return "".join(list(self._tail)[-n:])

    # -- lifecycle --------------------------------------------------------------------------------------

    def _pick_ports(self) -> None:
        wanted = {k: v for k, v in self._want.items() if v is None or v >= 0}
        auto = [k for k, v in wanted.items() if not v]
        fresh = iter(free_ports(len(auto), self.host if self.host not in ("", "::") else "127.0.0.1"))
        self.ports = {k: (v if v else next(fresh)) for k, v in wanted.items()}

    def command(self) -> list[str]:
        assert self.install is not None
        cmd = [str(self.install.binary),
               f"--model-repository={self.model_repository}",
               "--model-control-mode=explicit",
               f"--backend-directory={self.install.backends}",
               f"--cache-directory={self.install.caches}",
               f"--grpc-address={self.host}", f"--grpc-port={self.ports['grpc']}"]
        if "http" in self.ports:
            cmd += ["--allow-http=true", f"--http-address={self.host}", f"--http-port={self.ports['http']}"]
        else:
            cmd += ["--allow-http=false"]
        if "metrics" in self.ports:
            cmd += ["--allow-metrics=true", f"--metrics-address={self.host}",
                    f"--metrics-port={self.ports['metrics']}"]
        else:
            cmd += ["--allow-metrics=false"]
        if self.tls_cert_file:
            cmd += ["--grpc-use-ssl=true", f"--grpc-server-cert={self.tls_cert_file}",
                    f"--grpc-server-key={self.tls_key_file}"]
            if self.tls_ca_file:
                cmd += [f"--grpc-root-cert={self.tls_ca_file}"]
            if self.tls_mode == "mtls":
                cmd += ["--grpc-use-ssl-mutual=true"]
        cmd += [f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
                f"--exit-timeout-secs={self.exit_timeout}",
                f"--log-verbose={self.log_verbose}"]
        cmd += [f"--load-model={m}" for m in self.load_models]
        return cmd + self.extra_args

    def start(self) -> TritonServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        if isinstance(self.model_repository, pathlib.Path) and not self.model_repository.is_dir():
            raise TritonStartError(f"model repository {self.model_repository} is not a directory")
        if self.workdir is None:
            self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="reenact-triton-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.install = prepare_install(self.install_dir)
        except OSError as exc:  # e.g. read-only home: fall back to the workdir
            if self.install_dir is not None:
                raise
            log.warning("cannot prepare tritonserver in %s (%s); using the workdir", default_install_dir(), exc)
            self.install = prepare_install(self.workdir / "tritonserver")
        t0 = time.monotonic()
        retries = 3 if any(not v for v in self._want.values() if v is None or v >= 0) else 1
        for attempt in range(retries):
            try:
                self._start_once()
                break
            except TritonStartError as exc:
                bind_failure = is_bind_failure(self.log_tail(200))
                if not bind_failure or attempt == retries - 1:
                    raise
                log.warning("tritonserver lost a port race (%s); retrying with new ports", str(exc)[:200])
        self.startup_s = time.monotonic() - t0
        atexit.register(self.stop)
        log.info("tritonserver ready at %s in %.1f s (pid %d)", self.grpc_url, self.startup_s, self.proc.pid)
        return self

    def _start_once(self) -> None:
        self._pick_ports()
        self._shm_prefix = f"reenact_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self._tail.clear()
        logf = open(self.log_path, "ab")  # noqa: SIM115 - owned by the pump thread
        logf.write(f"---- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(self.command())}\n".encode())
        # SIGTERM tritonserver if the process that started it dies; not a preexec_fn (reenact.pdeathsig)
        cmd = with_parent_death_signal(self.command()) if self._pdeathsig_ok() else self.command()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=server_env(extra_pythonpath=self.extra_pythonpath),
                                     cwd=self.workdir, start_new_session=True)
        self._pump = threading.Thread(target=self._pump_log, args=(self.proc, logf), daemon=True,
                                      name="tritonserver-log")
        self._pump.start()
        try:
            self._wait_ready(self.startup_timeout)
        except BaseException:
            self._terminate(grace=5)
            raise

    @staticmethod
    def _pdeathsig_ok() -> bool:
        # PR_SET_PDEATHSIG fires when the starting *thread* exits: only safe from the main thread
        return sys.platform == "linux" and threading.current_thread() is threading.main_thread()

    def _pump_log(self, proc: subprocess.Popen, logf) -> None:
        with logf:
            for raw in iter(proc.stdout.readline, b""):
                logf.write(raw)
                logf.flush()
                line = raw.decode("utf-8", "replace")
                self._tail.append(line)
                if self.echo_log:
                    sys.stderr.write(line)
                    sys.stderr.flush()
        proc.stdout.close()

    def _wait_ready(self, timeout: float) -> None:
        from reenact.tritonserve.client import inference_client

        deadline = time.monotonic() + timeout
        client = inference_client(self.grpc_url, self.client_tls())
        try:
            while True:
                if self.proc.poll() is not None:
                    if self._pump is not None:
                        self._pump.join(2)
                    raise TritonStartError(
                        f"tritonserver exited with code {self.proc.returncode} before it was ready "
                        f"(log {self.log_path}):\n{self.log_tail()}")
                try:
                    # gRPC ready first; HTTP and metrics start a few ms later: wait for them too
                    if client.is_server_ready(client_timeout=1.0) and all(
                            self._accepts(self.ports[k]) for k in ("http", "metrics") if k in self.ports):
                        return
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                if time.monotonic() > deadline:
                    raise TritonStartError(
                        f"tritonserver not ready after {timeout:.0f} s (log {self.log_path}):\n{self.log_tail()}")
                time.sleep(0.1)
        finally:
            client.close()

    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection((self._client_host().strip("[]"), port), timeout=1.0):
                return True
        except OSError:
            return False

    def _terminate(self, grace: float) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver pid %d ignored SIGTERM for %.0f s; killing it", proc.pid, grace)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: the server and its stubs
                proc.wait()
        # stubs left behind by a killed server die with their parent check; free their shared memory
        if self._shm_prefix:
            for path in glob.glob(f"/dev/shm/{glob.escape(self._shm_prefix)}*"):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if self._pump is not None:
            self._pump.join(5)
        return proc.returncode

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait (`exit_timeout` + 5 s by default), then SIGKILL. Returns the exit code."""
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        code = self._terminate(self.exit_timeout + 5 if timeout is None else timeout)
        if self._own_workdir and self.workdir is not None and code == 0:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def wait(self) -> int:
        """Block until the server exits (foreground mode)."""
        assert self.proc is not None
        return self.proc.wait()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------------
# foreground entry point: python -m reenact.tritonserve


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m reenact.tritonserve",
                                 description="Run tritonserver (from the nvidia-pytriton wheel) in the foreground.")
    ap.add_argument("--model-repository", required=True)
    ap.add_argument("--grpc-port", type=int, default=0, help="0: pick a free port")
    ap.add_argument("--http-port", type=int, default=0, help="0: pick a free port, -1: no HTTP (always off with TLS)")
    ap.add_argument("--metrics-port", type=int, default=0, help="0: pick a free port, -1: no metrics")
    ap.add_argument("--host", default="127.0.0.1", help="bind address of all endpoints")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--install-dir", default=None, help="where the runnable tritonserver tree is prepared")
    ap.add_argument("--load-model", action="append", default=[], help="model to load at startup (repeatable)")
    ap.add_argument("--startup-timeout", type=float, default=120.0)
    ap.add_argument("--log-verbose", type=int, default=0)
    ap.add_argument("--prepare-only", action="store_true", help="prepare the install and exit")
    ap.add_argument("--tls-cert-file", default="", help="PEM certificate chain: the gRPC endpoint serves TLS only "
                    "(HTTP is then off: it has no TLS)")
    ap.add_argument("--tls-key-file", default="", help="PEM private key of --tls-cert-file")
    ap.add_argument("--tls-ca-file", default="", help="PEM CA bundle: clients must present a certificate it signed")
    ap.add_argument("--tls-require-client-cert", default="true", choices=("true", "false"),
                    help="with --tls-ca-file: refuse clients without a valid certificate (mutual TLS)")
    ap.add_argument("--tls-server-name", default="",
                    help="name the readiness probe checks the certificate for (default: the --host)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.prepare_only:
        print(prepare_install(args.install_dir).root)
        return 0
    server = TritonServer(args.model_repository, grpc_port=args.grpc_port, http_port=args.http_port,
                          metrics_port=args.metrics_port, host=args.host, workdir=args.workdir,
                          install_dir=args.install_dir, load_models=args.load_model,
                          startup_timeout=args.startup_timeout, log_verbose=args.log_verbose, echo_log=True,
                          tls_cert_file=args.tls_cert_file, tls_key_file=args.tls_key_file,
                          tls_ca_file=args.tls_ca_file, tls_require_client_cert=args.tls_require_client_cert == "true",
                          tls_server_name=args.tls_server_name)
    stopping = threading.Event()

    def on_signal(signum, _frame):
        stopping.set()
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except TritonStartError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps({"ready": True, "grpc": server.grpc_url, "tls": server.tls_mode, "http": server.http_url,
                      "metrics": server.metrics_url, "pid": server.pid, "log": str(server.log_path),
                      "startup_s": round(server.startup_s or 0.0, 2)}), flush=True)
    code = server.wait()
    server.stop()
    return 0 if stopping.is_set() and code in (0, -signal.SIGTERM) else code
