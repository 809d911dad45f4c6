"""Client of the generator models served by Triton (gRPC, tritonclient).

    r = TritonRenderer("127.0.0.1:8001")
    r.wait_ready(30)
    r.load_model("alice")                       # explicit model control: loads gen_alice
    frames = r.render("alice", ws)              # ws float32 [N, num_ws, w_dim] -> uint8 [N, H, W, 3]

Every failure is a `RendererError` carrying Triton's message; the subclasses say why:
`ModelNotFoundError` (no such model in the repository / not loaded), `ModelLoadError` (Triton failed
to load it), `RendererUnavailableError` (server down or not ready), `RenderInputError` (bad latents).
They are also `reenact.errors` kinds (NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE, INVALID_ARGUMENT), so
the service runtime maps them to gRPC status codes.
"""

from __future__ import annotations

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
                    "has no available versions", "is not found")
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
                 load_timeout: float = 300.0) -> None:
        import tritonclient.grpc as grpcclient

        self.url = url
        self.timeout = timeout
        self.load_timeout = load_timeout
        self._client = grpcclient.InferenceServerClient(url)
        self._grpcclient = grpcclient
        self._info: dict[str, ModelInfo] = {}
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

    def load_model(self, person_id: str) -> ModelInfo:
        """Load (or reload, picking up a newly exported version) `gen_<person_id>`; blocks until ready."""
        name = _model_name(person_id)
        try:
            self._client.load_model(name, client_timeout=self.load_timeout)
        except Exception as exc:  # noqa: BLE001 - classified below
            raise _classify(exc, f"load {name}") from exc
        with self._lock:
            self._info.pop(name, None)
        return self.model_info(person_id)

    def unload_model(self, person_id: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Unload `gen_<person_id>`; with `wait`, until Triton reports it not ready."""
        name = _model_name(person_id)
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
        """uint8 frames [N, H, W, 3] for float32 W+ latents [N, num_ws, w_dim] (chunks <= max batch)."""
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
