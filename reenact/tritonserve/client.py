"""Client of the generator models served by Triton (gRPC, tritonclient).

    r = TritonRenderer("127.0.0.1:8001")
    r.wait_ready(30)
    r.load_model("alice")                       # explicit model control: loads gen_alice
                                                # (render also loads a model that is not loaded yet)
    frames = r.render("alice", ws)              # ws float32 [N, num_ws, w_dim] -> uint8 [N, H, W, 3]

Several Triton replicas (explicit model control: a model is loaded per server, not per Service):

* load on first use: `render` loads a model that the replica behind this channel reports unknown / not
  loaded (NOT_FOUND) over the same channel and retries once. A gRPC channel keeps one HTTP/2 connection
  (pick_first), so the load and the retry reach the replica that answered NOT_FOUND: every replica loads a
  person's model the first time one of its clients renders that person (a new person, a restarted or
  newly scaled replica). Concurrent renders of one missing model load it once (per-model lock).
* `dns:///host:port` URLs (a Kubernetes headless Service: one address per ready pod; also gRPC's static
  `ipv4:a:port,b:port`): the channel
  balances per RPC over every address (round_robin), so load on first use loads on every replica that
  does not have the model ready (checked per address; replicas that have it are not reloaded);
  `load_model(..., everywhere=True)` (re)loads on every address (the trainer after publishing a NEW
  version, so no replica keeps serving the old one) and `unload_model` unloads on every address (person
  deletion). `replica_urls(url)` lists them. Other URLs mean one server (or a ClusterIP Service: one
  connection, so one replica per channel). gRPC re-resolves the name only when a connection fails: a
  replica added later is used once a connection is re-established.

TLS (`TritonTLS`, the `tls=` argument): the channel (and the per-replica channels of a `dns:///` URL) use
TLS with `root_cert_file` as the CA Triton's certificate is checked against, and `cert_file`/`key_file`
as the client certificate a Triton started with `--grpc-use-ssl-mutual` requires. Per-replica channels
dial IP addresses, so their certificates are checked for `server_name`, else for the host of the
`dns:///` URL (the name the certificate has to carry). Services build it from their `--tls-*` options
with `--triton-tls` (`TritonTLS.from_config`).

Every failure is a `RendererError` carrying Triton's message; the subclasses say why:
`ModelNotFoundError` (no such model in the repository / not loaded), `ModelLoadError` (Triton failed
to load it), `RendererUnavailableError` (server down or not ready), `RenderInputError` (bad latents).
They are also `reenact.errors` kinds (NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE, INVALID_ARGUMENT), so
the service runtime maps them to gRPC status codes.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from reenact.errors import (
    InvalidInputError,
    NotFoundError,
    PreconditionError,
    ReenactError,
    UnavailableError,
)
from reenact.tritonserve.repository import model_name

log = logging.getLogger("reenact.tritonserve.client")
DNS_SCHEME = "dns:///"
IPV4_SCHEME = "ipv4:"


class RendererError(ReenactError):
    """A Triton request failed; `str(err)` contains Triton's own message."""


class ModelNotFoundError(RendererError, NotFoundError):
    """The person's model is not in the repository, or not loaded."""


class RendererUnavailableError(RendererError, UnavailableError):
    """Triton cannot be reached or is not ready."""


class RenderInputError(RendererError, InvalidInputError):
    """The latents do not fit the model (shape, dtype, non-finite values)."""


class ModelLoadError(RendererError, PreconditionError):
    """The model is in the repository but Triton failed to load it (bad checkpoint, model.py error)."""


_UNAVAILABLE_HINTS = ("failed to connect", "connection refused", "connect failed", "socket closed",
                      "server is not ready", "deadline exceeded")
_NOT_FOUND_HINTS = ("unknown model", "failed to poll", "not found in any model repository",
                    "has no available versions", "is not found", "is not ready", "unavailable model")
_BAD_INPUT_HINTS = ("unexpected shape", "ws must be", "nan or inf", "unexpected datatype",
                    "exceeds maximum batch size")


def _classify(exc: Exception, what: str) -> RendererError:
    """The RendererError subclass for a tritonclient / grpc exception; keeps Triton's message."""
    status = getattr(exc, "status", None)
    status = str(status() or "") if callable(status) else ""
    text = getattr(exc, "message", None)
    text = text() if callable(text) else (text or str(exc))
    msg = f"{what}: {text}"
    low = text.lower()
    if status.endswith("UNAVAILABLE") or status.endswith("DEADLINE_EXCEEDED") or any(
            h in low for h in _UNAVAILABLE_HINTS):
        return RendererUnavailableError(msg, reason="TRITON_UNAVAILABLE")
    if any(h in low for h in _NOT_FOUND_HINTS):
        return ModelNotFoundError(msg, reason="MODEL_NOT_FOUND")
    if "load failed for model" in low:
        return ModelLoadError(msg, reason="MODEL_LOAD_FAILED")
    if any(h in low for h in _BAD_INPUT_HINTS):
        return RenderInputError(msg, reason="BAD_LATENTS")
    return RendererError(msg, reason="TRITON_ERROR")


def _model_name(person_id: str) -> str:
    try:
        return model_name(person_id)
    except InvalidInputError as exc:
        raise RenderInputError(exc.message, violations=exc.violations, reason="BAD_PERSON_ID") from None


def is_multi_replica(url: str) -> bool:
    """Whether `url` names several Triton replicas: `dns:///host:port` or gRPC's `ipv4:a:port,b:port`."""
    return url.startswith((DNS_SCHEME, IPV4_SCHEME))


def replica_urls(url: str) -> list[str]:
    """The Triton servers behind `url`: every address of `dns:///host:port` (sorted, IPv6 in brackets) or of
    `ipv4:a:port,b:port`, else `[url]`. An unresolvable name gives []."""
    if url.startswith(IPV4_SCHEME):
        return [a for a in url[len(IPV4_SCHEME):].split(",") if a]
    if not url.startswith(DNS_SCHEME):
        return [url]
    target = url[len(DNS_SCHEME):]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RendererError(f"{url}: expected dns:///host:port", reason="TRITON_ERROR")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    addrs = sorted({info[4][0] for info in infos})
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addrs]


@dataclass(frozen=True)
class TritonTLS:
    """TLS of the channels to Triton (PEM file paths). `root_cert_file` "" = the system's CAs; `cert_file` +
    `key_file`: the client certificate (mutual TLS); `server_name`: the name Triton's certificate is checked
    for when it differs from the host of the URL (and for the per-replica channels of a dns:/// URL)."""

    root_cert_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("TritonTLS: cert_file and key_file must be given together")

    @classmethod
    def from_config(cls, cfg) -> TritonTLS | None:
        """From a service config: None unless `cfg.triton_tls`; then this service's `tls_cert_file` /
        `tls_key_file` (client certificate), `tls_ca_file` (Triton's CA) and `tls_server_name`."""
        if not getattr(cfg, "triton_tls", False):
            return None
        return cls(root_cert_file=cfg.tls_ca_file, cert_file=cfg.tls_cert_file, key_file=cfg.tls_key_file,
                   server_name=cfg.tls_server_name)

    def credentials(self):
        import grpc

        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as fh:
                return fh.read()

        return grpc.ssl_channel_credentials(root_certificates=read(self.root_cert_file),
                                            private_key=read(self.key_file), certificate_chain=read(self.cert_file))


def _url_host(url: str) -> str:
    """The host name of a `dns:///host:port` URL ("" for other URLs)."""
    if not url.startswith(DNS_SCHEME):
        return ""
    return url[len(DNS_SCHEME):].rpartition(":")[0].strip("[]")


def _channel_args(url: str, server_name: str = "") -> list[tuple] | None:
    """tritonclient's default channel options, plus round_robin over the addresses of a `dns:///` URL
    (per-RPC balancing across Triton replicas) and the TLS target name override; None (tritonclient's
    defaults) when neither is needed."""
    if not is_multi_replica(url) and not server_name:
        return None
    from tritonclient.grpc import KeepAliveOptions
    from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE

    ka = KeepAliveOptions()
    return [("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", ka.keepalive_time_ms), ("grpc.keepalive_timeout_ms", ka.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", ka.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", ka.http2_max_pings_without_data),
            *([("grpc.lb_policy_name", "round_robin")] if is_multi_replica(url) else []),
            *([("grpc.ssl_target_name_override", server_name)] if server_name else [])]


def inference_client(url: str, tls: TritonTLS | None = None, *, replica_of: str = ""):
    """A tritonclient.grpc.InferenceServerClient for `url`, plaintext or with `tls`. `replica_of`: the
    dns:/// URL `url` is one address of (its host is the TLS name to check when tls.server_name is empty)."""
    import tritonclient.grpc as grpcclient

    if tls is None:
        return grpcclient.InferenceServerClient(url, channel_args=_channel_args(url))
    name = tls.server_name or _url_host(replica_of)
    return grpcclient.InferenceServerClient(url, creds=tls.credentials(), channel_args=_channel_args(url, name))


@dataclass(frozen=True)
class ModelInfo:
    name: str
    max_batch_size: int
    num_ws: int
    w_dim: int
    height: int
    width: int


class TritonRenderer:
    """W+ latents -> frames through Triton's gRPC API. Thread-safe; one channel per renderer."""

    def __init__(self, url: str = "127.0.0.1:8001", *, timeout: float = 60.0,
                 load_timeout: float = 300.0, load_on_demand: bool = True, tls: TritonTLS | None = None) -> None:
        import tritonclient.grpc as grpcclient

        self.url = url
        self.timeout = timeout
        self.load_timeout = load_timeout
        self.tls = tls
        self._client = inference_client(url, tls)
        self._grpcclient = grpcclient
        self.load_on_demand = load_on_demand
        self._info: dict[str, ModelInfo] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    # -- server -----------------------------------------------------------------------------------------

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready(client_timeout=min(self.timeout, 5.0)))
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise RendererUnavailableError(f"Triton at {self.url} not ready after {timeout:.0f} s",
                                               reason="TRITON_UNAVAILABLE")
            time.sleep(0.1)

    # -- models -----------------------------------------------------------------------------------------

    def load_model(self, person_id: str, *, everywhere: bool = False) -> ModelInfo:
        """Load (or reload, picking up a newly published version) `gen_<person_id>`; blocks until ready.

        `everywhere` with a `dns:///` URL: on every replica the name resolves to (see the module docstring);
        replicas that cannot be reached are skipped with a warning (they load on first use), a load error
        of any reachable one is raised. Otherwise on the server behind this channel.
        """
        name = _model_name(person_id)
        if everywhere and is_multi_replica(self.url):
            self._fan_out("load", name, replica_urls(self.url))
        else:
            self._load_here(name)
        with self._lock:
            self._info.pop(name, None)
        try:
            return self.model_info(person_id)
        except ModelNotFoundError:  # this channel reached a replica the fan-out did not (e.g. it just started)
            self._load_here(name)
            return self.model_info(person_id)

    def _load_here(self, name: str) -> None:
        try:
            self._client.load_model(name, client_timeout=self.load_timeout)
        except Exception as exc:  # noqa: BLE001 - classified below
            raise _classify(exc, f"load {name}") from exc

    def _fan_out(self, op: str, name: str, urls: list[str]) -> list[str]:
        """`op` ('load' / 'unload') of `name` on each url; returns those reached. Unreachable replicas are
        skipped; the first other failure is raised after every replica was tried."""
        if not urls:
            raise RendererUnavailableError(f"{op} {name}: {self.url} resolves to no address",
                                           reason="TRITON_UNAVAILABLE")
        done, errors = [], []
        for url in urls:
            client = inference_client(url, self.tls, replica_of=self.url)
            try:
                if op == "load":
                    client.load_model(name, client_timeout=self.load_timeout)
                else:
                    client.unload_model(name, client_timeout=self.timeout)
                done.append(url)
            except Exception as exc:  # noqa: BLE001 - classified below
                err = _classify(exc, f"{op} {name} on {url}")
                if isinstance(err, RendererUnavailableError) or (op == "unload" and isinstance(err, ModelNotFoundError)):
                    log.warning("triton replica skipped", extra={"op": op, "model": name, "replica": url,
                                                                 "error": err.message})
                else:
                    errors.append(err)
            finally:
                client.close()
        if errors:
            raise errors[0]
        if not done:
            raise RendererUnavailableError(f"{op} {name}: no replica of {self.url} reachable",
                                           reason="TRITON_UNAVAILABLE")
        return done

    def unload_model(self, person_id: str, *, wait: bool = True, timeout: float = 60.0,
                     everywhere: bool | None = None) -> None:
        """Unload `gen_<person_id>`; with `wait`, until this channel's Triton reports it not ready.

        `everywhere` (default: whether the URL is `dns:///`): on every replica the name resolves to.
        """
        name = _model_name(person_id)
        if everywhere is None:
            everywhere = is_multi_replica(self.url)
        if everywhere and is_multi_replica(self.url):
            self._fan_out("unload", name, replica_urls(self.url))
        else:
            try:
                self._client.unload_model(name, client_timeout=self.timeout)
            except Exception as exc:  # noqa: BLE001
                raise _classify(exc, f"unload {name}") from exc
        with self._lock:
            self._info.pop(name, None)
        deadline = time.monotonic() + timeout
        while wait and self.is_model_ready(person_id):
            if time.monotonic() > deadline:
                raise RendererError(f"unload {name}: still ready after {timeout:.0f} s", reason="TRITON_ERROR")
            time.sleep(0.05)

    def is_model_ready(self, person_id: str) -> bool:
        name = _model_name(person_id)
        try:
            return bool(self._client.is_model_ready(name, client_timeout=self.timeout))
        except Exception as exc:  # noqa: BLE001
            err = _classify(exc, f"ready {name}")
            if isinstance(err, ModelNotFoundError):
                return False
            raise err from exc

    def loaded_models(self) -> list[str]:
        """Person ids whose generator model is loaded and ready."""
        from reenact.tritonserve.repository import person_id_of

        try:
            index = self._client.get_model_repository_index(as_json=True, client_timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, "repository index") from exc
        return sorted(pid for m in index.get("models", [])
                      if m.get("state") == "READY" and (pid := person_id_of(m.get("name", ""))))

    def model_info(self, person_id: str) -> ModelInfo:
        """Shapes and max batch size of a loaded model (cached until load/unload)."""
        name = _model_name(person_id)
        with self._lock:
            if name in self._info:
                return self._info[name]
        try:
            cfg = self._client.get_model_config(name, as_json=True, client_timeout=self.timeout)["config"]
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, f"config {name}") from exc
        ws = next(i for i in cfg["input"] if i["name"] == "WS")
        img = next(o for o in cfg["output"] if o["name"] == "IMAGE")
        num_ws, w_dim = (int(d) for d in ws["dims"])
        h, w, _ = (int(d) for d in img["dims"])
        info = ModelInfo(name=name, max_batch_size=max(1, int(cfg.get("max_batch_size", 1))), num_ws=num_ws,
                         w_dim=w_dim, height=h, width=w)
        with self._lock:
            self._info[name] = info
        return info

    # -- rendering --------------------------------------------------------------------------------------

    def render(self, person_id: str, ws: np.ndarray, *, request_id: str = "") -> np.ndarray:
        """uint8 frames [N, H, W, 3] for float32 W+ latents [N, num_ws, w_dim] (chunks <= max batch).

        A model this channel's Triton does not have loaded is loaded here and the render retried once
        (`load_on_demand`; see the module docstring); a model missing from the repository stays NOT_FOUND.
        """
        try:
            return self._render(person_id, ws, request_id)
        except ModelNotFoundError:
            if not self.load_on_demand:
                raise
        self.ensure_loaded(person_id)
        return self._render(person_id, ws, request_id)

    def ensure_loaded(self, person_id: str) -> None:
        """Load `gen_<person_id>` on this channel's Triton unless it is ready there (one load per model at
        a time)."""
        name = _model_name(person_id)
        with self._lock:
            lock = self._load_locks.setdefault(name, threading.Lock())
        with lock:
            if is_multi_replica(self.url):  # round_robin: any replica may get the next request
                self._ensure_on_replicas(name)
            elif not self.is_model_ready(person_id):
                log.info("loading model on first use", extra={"model": name, "triton": self.url})
                self._load_here(name)
            with self._lock:
                self._info.pop(name, None)

    def _ensure_on_replicas(self, name: str) -> None:
        """Load `name` on each replica of the dns:/// URL that does not have it ready (no reload elsewhere)."""
        missing = []
        for url in replica_urls(self.url):
            client = inference_client(url, self.tls, replica_of=self.url)
            try:
                if not client.is_model_ready(name, client_timeout=self.timeout):
                    missing.append(url)
            except Exception as exc:  # noqa: BLE001
                err = _classify(exc, f"ready {name} on {url}")
                if isinstance(err, ModelNotFoundError):
                    missing.append(url)  # else unreachable: skipped
            finally:
                client.close()
        if missing:
            log.info("loading model on first use", extra={"model": name, "replicas": missing})
            self._fan_out("load", name, missing)

    def _render(self, person_id: str, ws: np.ndarray, request_id: str) -> np.ndarray:
        info = self.model_info(person_id)
        ws = np.asarray(ws)
        if ws.ndim != 3 or ws.shape[1:] != (info.num_ws, info.w_dim):
            raise RenderInputError(f"render {info.name}: ws must be [N, {info.num_ws}, {info.w_dim}], "
                                   f"got {list(ws.shape)}", reason="BAD_LATENTS")
        if not np.issubdtype(ws.dtype, np.floating):
            raise RenderInputError(f"render {info.name}: ws must be floating point, got {ws.dtype}",
                                   reason="BAD_LATENTS")
        ws = np.ascontiguousarray(ws, dtype=np.float32)
        if not np.isfinite(ws).all():
            raise RenderInputError(f"render {info.name}: ws contains NaN or Inf", reason="BAD_LATENTS")
        if ws.shape[0] == 0:
            return np.zeros((0, info.height, info.width, 3), np.uint8)
        out = [self._infer(info, ws[i:i + info.max_batch_size], request_id)
               for i in range(0, ws.shape[0], info.max_batch_size)]
        return out[0] if len(out) == 1 else np.concatenate(out, axis=0)

    def _infer(self, info: ModelInfo, ws: np.ndarray, request_id: str) -> np.ndarray:
        gc = self._grpcclient
        inp = gc.InferInput("WS", list(ws.shape), "FP32")
        inp.set_data_from_numpy(ws)
        try:
            res = self._client.infer(info.name, [inp], outputs=[gc.InferRequestedOutput("IMAGE")],
                                     request_id=request_id, client_timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001
            err = _classify(exc, f"render {info.name}")
            if isinstance(err, ModelNotFoundError):
                with self._lock:
                    self._info.pop(info.name, None)
            raise err from exc
        img = res.as_numpy("IMAGE")
        if img is None or img.shape != (ws.shape[0], info.height, info.width, 3):
            raise RendererError(f"render {info.name}: unexpected output "
                                f"{None if img is None else list(img.shape)}", reason="TRITON_ERROR")
        return img

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
