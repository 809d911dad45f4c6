"""What the sync and asyncio clients share: channel options, metadata, retry policy, request builders."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np

from reenact.api.common.v1 import types_pb2
from reenact.api.gateway.v1 import gateway_pb2
from reenact.client.types import Edit

CHUNK_BYTES = 1 << 20            # the API's limit per video chunk
MAX_RECEIVE_BYTES = 64 << 20
MAX_SEND_BYTES = 16 << 20        # the services' default max message size
RAW_FRAME_LIMIT = 8 << 20        # frames larger than this as RGB8 are sent as PNG instead
USER_AGENT = "reenact-python/0.1"
ADDRESS_ENV = "REENACT_ADDRESS"
API_KEY_ENV = "REENACT_API_KEY"
# TLS files (PEM paths) when the arguments are not given: the gateway's CA, the client certificate and key
TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV = "REENACT_TLS_CA", "REENACT_TLS_CERT", "REENACT_TLS_KEY"

# Default deadlines, seconds (None = no deadline). Every method takes `timeout=` to override.
DEFAULT_TIMEOUT = 30.0           # unary calls
UPLOAD_TIMEOUT = 1800.0          # Enroll: the whole upload (<= 512 MiB)
STREAM_TIMEOUT: float | None = None   # Reenact / Render / WatchJob: as long as the work takes

_OUTPUT = {"frames": gateway_pb2.OUTPUT_KIND_FRAMES, "video": gateway_pb2.OUTPUT_KIND_VIDEO}
_ENCODING = {"png": types_pb2.IMAGE_ENCODING_PNG, "jpeg": types_pb2.IMAGE_ENCODING_JPEG,
             "jpg": types_pb2.IMAGE_ENCODING_JPEG, "rgb8": types_pb2.IMAGE_ENCODING_RGB8}

RETRY_UNAVAILABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
RETRY_IDEMPOTENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for idempotent calls.

    Attempt k (0-based) waits min(max_backoff, initial_backoff * multiplier**k) scaled by a random factor
    in [1 - jitter, 1], and at least the server's RetryInfo delay when it sent one. `timeout` of a call
    is the budget of ALL its attempts; `attempt_timeout` (None = the remaining budget) bounds one attempt,
    and only then is DEADLINE_EXCEEDED of an attempt retried (the overall deadline is never exceeded).
    """

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5
    attempt_timeout: float | None = None

    def backoff(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** attempt)
        u = (rng or random).random()
        delay = base * (1.0 - self.jitter * u)
        return max(delay, retry_after or 0.0)


NO_RETRY = RetryPolicy(max_attempts=1)


def resolve_address(address: str | None) -> str:
    address = address or os.environ.get(ADDRESS_ENV, "")
    if not address:
        raise ValueError(f"no gateway address: pass address='host:port' or set {ADDRESS_ENV}")
    return address


def resolve_api_key(api_key: str | None) -> str | None:
    return api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)


def channel_options(extra: Iterable[tuple[str, object]] = ()) -> list[tuple[str, object]]:
    return [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.primary_user_agent", USER_AGENT), *extra]


Pem = bytes | str | os.PathLike | None


def _pem(value: Pem) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as fh:
        return fh.read()


def tls_credentials(root_certificates: Pem, private_key: Pem = None,
                    certificate_chain: Pem = None) -> grpc.ChannelCredentials:
    """TLS channel credentials: the CA of the gateway's certificate (None = system roots) and, for a gateway
    that requires client certificates (mTLS), this client's certificate chain and private key."""
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("a client certificate needs both certificate_chain and private_key")
    return grpc.ssl_channel_credentials(root_certificates=_pem(root_certificates), private_key=_pem(private_key),
                                        certificate_chain=_pem(certificate_chain))


def resolve_tls(tls: bool, root_certificates: Pem, certificate_chain: Pem,
                private_key: Pem) -> grpc.ChannelCredentials | None:
    """Credentials of the client's channel, None = plaintext. Arguments not given come from $REENACT_TLS_CA,
    $REENACT_TLS_CERT and $REENACT_TLS_KEY (paths); any of them (or tls=True) makes the channel TLS."""
    root_certificates = root_certificates if root_certificates is not None else os.environ.get(TLS_CA_ENV) or None
    certificate_chain = certificate_chain if certificate_chain is not None else os.environ.get(TLS_CERT_ENV) or None
    private_key = private_key if private_key is not None else os.environ.get(TLS_KEY_ENV) or None
    if not (tls or root_certificates is not None or certificate_chain is not None or private_key is not None):
        return None
    return tls_credentials(root_certificates, private_key, certificate_chain)


def new_request_id(prefix: str = "req") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def call_metadata(api_key: str | None, request_id: str) -> tuple[tuple[str, str], ...]:
    md = [("x-request-id", request_id)]
    if api_key:
        md.append(("authorization", f"Bearer {api_key}"))
    return tuple(md)


def output_kind(output: str) -> int:
    try:
        return _OUTPUT[output]
    except KeyError:
        raise ValueError(f"output must be one of {sorted(_OUTPUT)}, got {output!r}") from None


def image_encoding(name: str) -> int:
    try:
        return _ENCODING[name.lower()]
    except KeyError:
        raise ValueError(f"frame_encoding must be one of png, jpeg, rgb8; got {name!r}") from None


def edits_to_proto(edits) -> list[gateway_pb2.Edit]:
    return [Edit.coerce(e).to_proto() for e in (edits or ())]


def check_chunk_size(chunk_size: int) -> int:
    if not 1 <= chunk_size <= CHUNK_BYTES:
        raise ValueError(f"chunk_size must be 1..{CHUNK_BYTES} bytes, got {chunk_size}")
    return chunk_size


def check_video_source(source) -> None:
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ValueError("the video is empty (0 bytes)")
        return
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"video must be a path or bytes, got {type(source).__name__}")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no such video file: {source}")


def iter_chunks(source, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Bytes of a video (a path or bytes-like) in pieces of at most chunk_size bytes. Re-callable for retries."""
    check_chunk_size(chunk_size)
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        for i in range(0, len(view), chunk_size):
            yield bytes(view[i:i + chunk_size])
        return
    with open(source, "rb") as fh:
        while True:
            data = fh.read(chunk_size)
            if not data:
                return
            yield data


def enroll_requests(header: gateway_pb2.EnrollHeader, source, chunk_size: int) -> Iterator[gateway_pb2.EnrollRequest]:
    yield gateway_pb2.EnrollRequest(header=header)
    for data in iter_chunks(source, chunk_size):
        yield gateway_pb2.EnrollRequest(chunk=types_pb2.VideoChunk(data=data))


def enroll_header(*, request_id: str, person_id: str, display_name: str, profile: str,
                  options: dict | None) -> gateway_pb2.EnrollHeader:
    try:
        opts = types_pb2.EnrollOptions(**(options or {}))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bad enroll options {options!r}: {exc}") from None
    return gateway_pb2.EnrollHeader(request_id=request_id, person_id=person_id, display_name=display_name,
                                    profile=profile, options=opts)


def frame_to_proto(index: int, rgb: np.ndarray) -> gateway_pb2.DrivingFrame:
    from reenact.wire import image_to_proto

    rgb = np.asarray(rgb)
    enc = types_pb2.IMAGE_ENCODING_RGB8 if rgb.nbytes <= RAW_FRAME_LIMIT else types_pb2.IMAGE_ENCODING_PNG
    return gateway_pb2.DrivingFrame(index=index, image=image_to_proto(rgb, enc))


MOTIONS = ("", "absolute", "relative")
INITS = ("", "auto", "anchor", "regressor", "mixed", "uniform", "random")  # optimizer start points ("" = default)
MAX_OPENING_RANGE = 10.0  # the optimizer's bound on opening_range (0 = off; motion "relative" only)
MAX_MOUTH_STARTS = 1.5  # the optimizer's bound on mouth_starts (0 = off; eager optimizer only)
MAX_DELTA_LR_SCALE = 10.0  # the optimizer's bound on delta_lr_scale (0 = its default, 0.02)
MAX_LIP_WARP = 1.0  # the optimizer's bound on lip_warp (0 = off)


def _bounded(name: str, value, hi: float, zero: str) -> float:
    """float(value), or ValueError naming `name` when it is non-finite or outside 0..hi (`zero`: what 0 means)."""
    v = float(value)
    if not (np.isfinite(v) and 0.0 <= v <= hi):
        raise ValueError(f"{name} {v!r}: a number in 0..{hi:g} (0 = {zero})")
    return v


def reenact_header(person_id: str, *, output: str, frame_encoding: str, paste_back: bool, edits,
                   steps: int, window: int, fps: float, person_version: int, motion: str = "",
                   smoothing_sigma: float = 0.0, opening_weight: float = 0.0,
                   latent_sigma: float = 0.0, init: str | None = "",
                   opening_range: float = 0.0, mouth_starts: float = 0.0,
                   delta_lr_scale: float = 0.0, lip_warp: float = 0.0) -> gateway_pb2.ReenactHeader:
    if not person_id:
        raise ValueError("person_id is required")
    if motion not in MOTIONS:
        raise ValueError(f"motion {motion!r}: one of 'absolute', 'relative' (or '' for the server's default)")
    init = init or ""
    if init not in INITS:
        raise ValueError(f"init {init!r}: one of {', '.join(repr(i) for i in INITS[1:])} (or '' / None for the "
                         "server's default, 'auto')")
    opening_range = _bounded("opening_range", opening_range, MAX_OPENING_RANGE, "off")
    if opening_range > 0 and motion != "relative":
        raise ValueError(f"opening_range {opening_range:g} needs motion='relative'")
    mouth_starts = _bounded("mouth_starts", mouth_starts, MAX_MOUTH_STARTS, "off")
    delta_lr_scale = _bounded("delta_lr_scale", delta_lr_scale, MAX_DELTA_LR_SCALE, "the server's default, 0.02")
    lip_warp = _bounded("lip_warp", lip_warp, MAX_LIP_WARP, "off")
    return gateway_pb2.ReenactHeader(
        person_id=person_id, person_version=int(person_version), output=output_kind(output),
        frame_encoding=image_encoding(frame_encoding), paste_back=bool(paste_back),
        edits=edits_to_proto(edits), steps=int(steps), window=int(window), fps=float(fps), motion=motion,
        smoothing_sigma=float(smoothing_sigma), opening_weight=float(opening_weight),
        latent_sigma=float(latent_sigma), init=init, opening_range=opening_range,
        mouth_starts=mouth_starts, delta_lr_scale=delta_lr_scale, lip_warp=lip_warp)


def check_reenact_input(video, frames) -> None:
    if (video is None) == (frames is None):
        raise ValueError("pass exactly one of video= (path or bytes) and frames= (iterable of RGB arrays)")
    if video is not None:
        check_video_source(video)


def reenact_requests(header: gateway_pb2.ReenactHeader, *, video=None, frames=None,
                     chunk_size: int = CHUNK_BYTES) -> Iterator[gateway_pb2.ReenactRequest]:
    yield gateway_pb2.ReenactRequest(header=header)
    if video is not None:
        for data in iter_chunks(video, chunk_size):
            yield gateway_pb2.ReenactRequest(chunk=types_pb2.VideoChunk(data=data))
        return
    for i, rgb in enumerate(frames):
        yield gateway_pb2.ReenactRequest(frame=frame_to_proto(i, rgb))


class RequestErrors:
    """Remembers an exception raised while producing a request stream (grpc consumes request iterators on
    its own thread/task and reports such a failure only as CANCELLED); `reraise()` raises it to the caller."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def wrap(self, iterator):
        try:
            yield from iterator
        except Exception as exc:
            self.error = exc
            raise

    async def wrap_async(self, aiterator):
        try:
            async for item in aiterator:
                yield item
        except Exception as exc:
            self.error = exc
            raise

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error
