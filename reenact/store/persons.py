"""Versioned person artifacts on top of any ArtifactStore.

Layout::

    persons/<person_id>/v<k>/<files...>
    persons/<person_id>/v<k>/MANIFEST.json   written LAST: a version exists once its manifest does
    persons/<person_id>/v<k>/_WRITER.json    claim of the writer while the version is being written

The manifest records sha256 and size of every file; reads verify them. A failure in the middle of a
version write leaves earlier versions untouched and the new one without manifest (invisible); the
writer removes what it wrote on abort, and `gc_uncommitted` removes leftovers of crashed writers.

One writer per person at a time is expected (the trainer owning the person's job). Two writers that
race for the same version number are detected at commit (VersionConflictError), not prevented.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from reenact.errors import InvalidInputError
from reenact.store.base import (
    ArtifactNotFoundError,
    ArtifactStore,
    IntegrityError,
    InvalidKeyError,
    StoreError,
    VersionConflictError,
    atomic_write_file,
    dumps_json,
    get_json,
    put_json,
    sha256_bytes,
    sha256_file,
    validate_key,
)

log = logging.getLogger(__name__)

ROOT = "persons"
MANIFEST_NAME = "MANIFEST.json"
WRITER_NAME = "_WRITER.json"
RESERVED_NAMES = frozenset({MANIFEST_NAME, WRITER_NAME})
_PERSON_ID_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
_VERSION_RE = re.compile(r"v([1-9][0-9]*)")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def validate_person_id(person_id: object) -> str:
    if not isinstance(person_id, str) or not _PERSON_ID_RE.fullmatch(person_id):
        raise InvalidKeyError.for_field(
            "person_id",
            f"invalid person id {person_id!r}: 1..64 characters of [a-z0-9-], starting with a letter",
        )
    return person_id


def validate_file_name(name: object) -> str:
    validate_key(name, what="file name")
    if name in RESERVED_NAMES:
        raise InvalidKeyError.for_field("file name", f"{name!r} is reserved for the store's own records")
    return name  # type: ignore[return-value]


def person_prefix(person_id: str) -> str:
    return f"{ROOT}/{validate_person_id(person_id)}"


def version_prefix(person_id: str, version: int) -> str:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidInputError.for_field("version", f"version must be an integer >= 1, got {version!r}")
    return f"{person_prefix(person_id)}/v{version}"


# --------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    person_id: str
    version: int
    created_at: str
    files: dict[str, FileEntry]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "version": self.version,
            "created_at": self.created_at,
            "files": {n: {"sha256": e.sha256, "size": e.size} for n, e in sorted(self.files.items())},
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, raw: Any, *, where: str) -> Manifest:
        """Parse and check a stored manifest; IntegrityError naming `where` when malformed."""
        try:
            files = {validate_file_name(n): _parse_entry(e) for n, e in raw["files"].items()}
            manifest = cls(
                person_id=validate_person_id(raw["person_id"]),
                version=int(raw["version"]),
                created_at=str(raw["created_at"]),
                files=files,
                metadata=dict(raw["metadata"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError, InvalidKeyError) as exc:
            raise IntegrityError(f"{where}: malformed manifest ({exc!r})", reason="CORRUPT_MANIFEST") from exc
        return manifest


def _parse_entry(raw: Any) -> FileEntry:
    sha, size = raw["sha256"], raw["size"]
    if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
        raise ValueError(f"bad sha256 {sha!r}")
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"bad size {size!r}")
    return FileEntry(sha256=sha, size=size)


def _check(entry: FileEntry, sha256: str, size: int, where: str) -> None:
    if sha256 != entry.sha256 or size != entry.size:
        raise IntegrityError(
            f"{where}: content does not match the manifest (sha256 {sha256[:12]}.. size {size}, "
            f"expected {entry.sha256[:12]}.. size {entry.size})",
            reason="CHECKSUM_MISMATCH",
        )


# ----------------------------------------------------------------------------------------------- writer


class VersionWriter:
    """Writes the files of one new person version; nothing is visible before `commit`.

    Use as a context manager: an exception inside the block aborts; leaving the block without
    `commit` also aborts (with a warning), so a forgotten commit never publishes a version.
    """

    def __init__(self, repo: PersonRepository, person_id: str, version: int) -> None:
        self._repo = repo
        self.person_id = person_id
        self.version = version
        self.prefix = version_prefix(person_id, version)
        self._token = secrets.token_hex(16)
        self._files: dict[str, FileEntry] = {}
        self._state = "new"

    @property
    def state(self) -> str:
        """'new' (before claim), 'open', 'committed' or 'aborted'."""
        return self._state

    def _claim(self) -> None:
        put_json(self._store, self._writer_key, {"token": self._token, "started_at": self._repo.clock()})
        self._state = "open"

    @property
    def _store(self) -> ArtifactStore:
        return self._repo.store

    @property
    def _writer_key(self) -> str:
        return f"{self.prefix}/{WRITER_NAME}"

    @property
    def _manifest_key(self) -> str:
        return f"{self.prefix}/{MANIFEST_NAME}"

    def put_bytes(self, name: str, data: bytes) -> FileEntry:
        key = self._key_for(name)
        entry = FileEntry(sha256=sha256_bytes(data), size=len(data))
        self._store.put_bytes(key, data)
        self._files[name] = entry
        return entry

    def put_file(self, name: str, path: str | os.PathLike) -> FileEntry:
        key = self._key_for(name)
        sha, size = sha256_file(path)
        self._store.put_file(key, path)
        self._files[name] = FileEntry(sha256=sha, size=size)
        return self._files[name]

    def commit(self, metadata: dict[str, Any] | None = None) -> Manifest:
        """Write the manifest (last), making the version visible. Returns it."""
        self._require_open()
        manifest = Manifest(
            person_id=self.person_id,
            version=self.version,
            created_at=datetime.fromtimestamp(self._repo.clock(), UTC).isoformat(),
            files=dict(self._files),
            metadata=dict(metadata or {}),
        )
        try:
            payload = dumps_json(manifest.to_dict())
        except (TypeError, ValueError) as exc:
            raise InvalidInputError.for_field("metadata", f"not JSON-serializable: {exc}") from exc
        self._check_claim_is_ours()
        self._store.put_bytes(self._manifest_key, payload)
        self._state = "committed"
        self._drop_claim()
        log.info("person version committed", extra={"person_id": self.person_id, "version": self.version})
        return manifest

    def abort(self) -> None:
        """Remove what this writer wrote. Idempotent; a no-op after commit."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        if not self._claim_is_ours():
            log.warning(
                "version claim taken over by another writer; leaving its files",
                extra={"person_id": self.person_id, "version": self.version},
            )
            return
        # The manifest first: a failed put may still have landed, and it would publish partial data.
        self._store.delete(self._manifest_key, missing_ok=True)
        for name in self._files:
            self._store.delete(f"{self.prefix}/{name}", missing_ok=True)
        self._store.delete(self._writer_key, missing_ok=True)

    def __enter__(self) -> VersionWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._state != "open":
            return
        if exc_type is None:
            log.warning(
                "version writer left without commit; aborting",
                extra={"person_id": self.person_id, "version": self.version},
            )
        try:
            self.abort()
        except StoreError:
            if exc_type is None:
                raise
            # The original failure matters more; gc_uncommitted cleans up what abort could not.
            log.exception("abort after a failed version write also failed")

    def _key_for(self, name: str) -> str:
        self._require_open()
        return f"{self.prefix}/{validate_file_name(name)}"

    def _require_open(self) -> None:
        if self._state != "open":
            raise StoreError(f"version writer for {self.prefix} is {self._state}", reason="WRITER_CLOSED")

    def _claim_is_ours(self) -> bool:
        try:
            claim = get_json(self._store, self._writer_key)
        except ArtifactNotFoundError:
            return False
        return isinstance(claim, dict) and claim.get("token") == self._token

    def _check_claim_is_ours(self) -> None:
        if not self._claim_is_ours() or self._store.exists(self._manifest_key):
            raise VersionConflictError(
                f"{self.prefix} was claimed or committed by another writer", reason="VERSION_CONFLICT"
            )

    def _drop_claim(self) -> None:
        try:
            self._store.delete(self._writer_key, missing_ok=True)
        except StoreError:
            # The version is committed; a stale claim is harmless and gc_uncommitted removes it.
            log.warning("could not remove the writer claim of %s", self.prefix, exc_info=True)


# ------------------------------------------------------------------------------------------- repository


class PersonRepository:
    def __init__(self, store: ArtifactStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    # ------------------------------------------------------------------------------------ writing

    def begin_version(self, person_id: str) -> VersionWriter:
        """Claim version 1 + the highest existing one (committed or not) and return its writer."""
        existing = self._scan(person_id)
        writer = VersionWriter(self, person_id, max(existing, default=0) + 1)
        writer._claim()
        return writer

    # ------------------------------------------------------------------------------------ reading

    def versions(self, person_id: str) -> list[int]:
        """Committed versions (those with a manifest), ascending."""
        return sorted(k for k, names in self._scan(person_id).items() if MANIFEST_NAME in names)

    def latest_version(self, person_id: str) -> int | None:
        committed = self.versions(person_id)
        return committed[-1] if committed else None

    def manifest(self, person_id: str, version: int) -> Manifest:
        key = f"{version_prefix(person_id, version)}/{MANIFEST_NAME}"
        try:
            raw = get_json(self.store, key)
        except ArtifactNotFoundError:
            raise ArtifactNotFoundError(
                f"person {person_id!r} has no committed version {version}", reason="VERSION_NOT_FOUND"
            ) from None
        manifest = Manifest.from_dict(raw, where=key)
        if manifest.person_id != person_id or manifest.version != version:
            raise IntegrityError(f"{key}: manifest names {manifest.person_id} v{manifest.version}")
        return manifest

    def read(self, person_id: str, version: int, name: str, *, verify: bool = True) -> bytes:
        entry = self._entry(person_id, version, name)
        key = f"{version_prefix(person_id, version)}/{name}"
        data = self.store.get_bytes(key)
        if verify:
            _check(entry, sha256_bytes(data), len(data), key)
        return data

    def fetch_version(self, person_id: str, version: int, dest_dir: str | os.PathLike) -> Manifest:
        """Download every file of a committed version into `dest_dir`, verified, plus its MANIFEST.json."""
        manifest = self.manifest(person_id, version)
        dest = Path(dest_dir)
        prefix = version_prefix(person_id, version)
        for name, entry in sorted(manifest.files.items()):
            target = dest / name
            self.store.get_file(f"{prefix}/{name}", target)
            sha, size = sha256_file(target)
            try:
                _check(entry, sha, size, f"{prefix}/{name}")
            except IntegrityError:
                target.unlink(missing_ok=True)
                raise
        payload = dumps_json(manifest.to_dict())
        atomic_write_file(dest / MANIFEST_NAME, lambda f: f.write(payload))
        return manifest

    def list_persons(self, *, include_uncommitted: bool = False) -> list[str]:
        """Person ids with at least one committed version (or any version with `include_uncommitted`)."""
        found: set[str] = set()
        for key in self.store.list(ROOT):
            parts = key.split("/")
            if len(parts) < 4 or not _PERSON_ID_RE.fullmatch(parts[1]) or not _VERSION_RE.fullmatch(parts[2]):
                continue
            if include_uncommitted or (len(parts) == 4 and parts[3] == MANIFEST_NAME):
                found.add(parts[1])
        return sorted(found)

    # ---------------------------------------------------------------------------------- deleting

    def delete_person(self, person_id: str) -> int:
        """Remove every version of a person (manifests first); returns the number of keys removed."""
        prefix = person_prefix(person_id)
        manifests = [f"{prefix}/v{k}/{MANIFEST_NAME}" for k in self.versions(person_id)]
        for key in manifests:  # a crash from here on leaves uncommitted versions, never partial ones
            self.store.delete(key, missing_ok=True)
        return len(manifests) + self.store.delete_prefix(prefix)

    def gc_uncommitted(self, person_id: str, *, min_age_s: float = 0.0) -> list[int]:
        """Remove versions without manifest (crashed or aborted writes) and stale writer claims.

        A version whose writer claimed it less than `min_age_s` seconds ago is left alone (it may be
        an active write). Returns the removed version numbers.
        """
        removed = []
        for version, names in sorted(self._scan(person_id).items()):
            prefix = version_prefix(person_id, version)
            if MANIFEST_NAME in names:
                if WRITER_NAME in names:
                    self.store.delete(f"{prefix}/{WRITER_NAME}", missing_ok=True)
                continue
            if WRITER_NAME in names and self._claim_age_s(prefix) < min_age_s:
                continue
            self.store.delete_prefix(prefix)
            removed.append(version)
        if removed:
            log.info("removed uncommitted versions", extra={"person_id": person_id, "versions": removed})
        return removed

    # ----------------------------------------------------------------------------------- helpers

    def _scan(self, person_id: str) -> dict[int, set[str]]:
        """Every version directory of a person (committed or not) -> names of the files in it."""
        prefix = person_prefix(person_id)
        found: dict[int, set[str]] = {}
        for key in self.store.list(prefix):
            version_dir, _, name = key[len(prefix) + 1 :].partition("/")
            match = _VERSION_RE.fullmatch(version_dir)
            if match and name:
                found.setdefault(int(match.group(1)), set()).add(name)
        return found

    def _entry(self, person_id: str, version: int, name: str) -> FileEntry:
        manifest = self.manifest(person_id, version)
        try:
            return manifest.files[validate_file_name(name)]
        except KeyError:
            raise ArtifactNotFoundError(
                f"person {person_id!r} v{version} has no file {name!r}", reason="FILE_NOT_FOUND"
            ) from None

    def _claim_age_s(self, prefix: str) -> float:
        try:
            claim = get_json(self.store, f"{prefix}/{WRITER_NAME}")
            return self.clock() - float(claim["started_at"])
        except (ArtifactNotFoundError, IntegrityError, KeyError, TypeError, ValueError):
            return float("inf")  # no readable claim: treat as abandoned
