"""The artifact store interface, its errors, key rules and small helpers shared by the backends.

Keys are '/'-separated relative paths such as ``persons/alice/v3/G.safetensors``. Every segment is
1..255 characters of ``[A-Za-z0-9._-]`` and is neither ``.`` nor ``..``; the whole key is at most 1024
characters. The same key means the same object on every backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from reenact.errors import (
    AbortedError,
    InvalidInputError,
    NotFoundError,
    ReenactError,
    UnavailableError,
)

MAX_KEY_LENGTH = 1024
MAX_SEGMENT_LENGTH = 255
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_CHUNK = 1 << 20


# ----------------------------------------------------------------------------------------------- errors


class StoreError(ReenactError):
    """Base of every artifact store error (I/O failures of a backend included)."""

    kind = "INTERNAL"


class InvalidKeyError(StoreError, InvalidInputError):
    """A key, prefix, file name or person id breaks the naming rules."""

    kind = "INVALID_ARGUMENT"


class StoreConfigError(StoreError, InvalidInputError):
    """A store URL or backend setting is malformed."""

    kind = "INVALID_ARGUMENT"


class ArtifactNotFoundError(StoreError, NotFoundError, KeyError):
    """The key (or the person version) does not exist."""

    kind = "NOT_FOUND"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class IntegrityError(StoreError):
    """Stored bytes do not match their manifest, or a stored record is malformed."""

    kind = "DATA_LOSS"


class StoreUnavailableError(StoreError, UnavailableError):
    """The backend cannot be reached (after the backend's own retries)."""

    kind = "UNAVAILABLE"


class VersionConflictError(StoreError, AbortedError):
    """Another writer claimed or committed the same person version."""

    kind = "ABORTED"


# ------------------------------------------------------------------------------------------------- keys


def is_valid_key(key: object) -> bool:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        return False
    return all(_is_valid_segment(seg) for seg in key.split("/"))


def _is_valid_segment(seg: str) -> bool:
    return (
        0 < len(seg) <= MAX_SEGMENT_LENGTH
        and seg not in (".", "..")
        and _SEGMENT_RE.fullmatch(seg) is not None
    )


def validate_key(key: object, *, what: str = "key") -> str:
    """Return `key` unchanged when valid, else raise InvalidKeyError naming `what`."""
    if not is_valid_key(key):
        raise InvalidKeyError.for_field(
            what,
            f"invalid {what} {key!r}: expected '/'-separated segments of [A-Za-z0-9._-] "
            f"(no empty, '.' or '..' segments, no leading '/', at most {MAX_KEY_LENGTH} characters)",
        )
    return key  # type: ignore[return-value]


def normalize_prefix(prefix: str) -> str:
    """A listing prefix: '' (everything) or a valid key, one trailing '/' allowed. Returns it without '/'."""
    if prefix == "":
        return ""
    if isinstance(prefix, str) and prefix.endswith("/"):
        prefix = prefix[:-1]
    return validate_key(prefix, what="prefix")


def join_key(*parts: str) -> str:
    """Join non-empty key parts with '/'."""
    return "/".join(p for p in parts if p)


# ------------------------------------------------------------------------------------------- interface


class ArtifactStore(ABC):
    """A flat namespace of immutable-ish blobs addressed by keys.

    Writes of one key are atomic: a reader sees the old bytes or the new bytes, never a mix.
    Listing and deleting by prefix treat the prefix as a directory: ``list("persons/al")`` does not
    return keys under ``persons/alice/``.
    """

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing any previous content atomically."""

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike) -> None:
        """Store the content of the local file `path` under `key` (streamed, atomic)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Content of `key`; ArtifactNotFoundError when missing."""

    @abstractmethod
    def get_file(self, key: str, path: str | os.PathLike) -> None:
        """Write the content of `key` to the local file `path` (parents created, atomic replace)."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether `key` holds an object."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys under the directory `prefix` ('' lists everything)."""

    @abstractmethod
    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        """Remove `key`; ArtifactNotFoundError when missing unless `missing_ok`."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every key under the directory `prefix`; returns how many were removed."""

    @abstractmethod
    def url(self) -> str:
        """Where this store points, for logs (never contains credentials); `open_store` accepts it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url()!r})"


# ----------------------------------------------------------------------------------------------- helpers


def atomic_write_file(target: Path, fill: Callable[[BinaryIO], None], *, fsync: bool = True) -> None:
    """Create/replace the local file `target` with what `fill` writes, never leaving a partial file.

    The data goes to a temporary file beside `target` (its name contains '~', which no key may
    contain, so listings never show it), is flushed and fsynced, then renamed over `target`.
    On any failure the temporary file is removed and the previous `target` is untouched.
    """
    fd, tmp = _make_temp_beside(target)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(target.parent)


def _make_temp_beside(target: Path, attempts: int = 3) -> tuple[int, str]:
    # A concurrent prune of empty directories may remove the parent between mkdir and mkstemp.
    for attempt in range(attempts):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}~", suffix=".tmp")
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def fsync_dir(path: Path) -> None:
    """Persist a rename in `path` (best effort where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself already happened
    finally:
        os.close(fd)


def copy_stream(src: BinaryIO, dst: BinaryIO) -> None:
    while chunk := src.read(_CHUNK):
        dst.write(chunk)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    """(hex sha256, size in bytes) of a local file, streamed."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def dumps_json(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no NaN); TypeError/ValueError when not representable."""
    return (json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n").encode("utf-8")


def put_json(store: ArtifactStore, key: str, obj: Any) -> None:
    """Store a JSON record (e.g. a job state) atomically."""
    store.put_bytes(key, dumps_json(obj))


def get_json(store: ArtifactStore, key: str) -> Any:
    """Read a JSON record; ArtifactNotFoundError when missing, IntegrityError when not valid JSON."""
    raw = store.get_bytes(key)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{key}: not a valid JSON record ({exc})", reason="CORRUPT_RECORD") from exc
