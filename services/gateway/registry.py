"""The gateway's person registry (pure core, no grpc): what the gateway knows about a person beyond the
committed versions the trainer writes.

Layout in the artifact store (the gateway owns these prefixes; `persons/` belongs to the trainer):

    gateway/persons/<person_id>.json      {person_id, display_name, create_time, owner, jobs: [{job_id,
                                           request_id, create_time}]}  (rewritten atomically on each new
                                           enrollment; owner = the tenant of the API key that created the
                                           person, "" when auth was off; it never changes)
    uploads/<person_id>/<sha256>.video    uploaded self-scans, content-addressed (a retry re-uses the key)
    reenactments/<person_id>/<id>/...     stored reenactments (services/gateway/reenactments.py)

A person exists for the gateway when it has a registry record or a committed version.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from reenact.errors import FieldViolation, InvalidInputError, NotFoundError
from reenact.store import ArtifactNotFoundError, ArtifactStore, PersonRepository, get_json, put_json

REGISTRY_PREFIX = "gateway/persons"
UPLOADS_PREFIX = "uploads"
REENACTMENTS_PREFIX = "reenactments"

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
PERSON_ID_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
MAX_DISPLAY_NAME = 256


def validate_person_id(person_id: str, field_name: str = "person_id") -> str:
    if not PERSON_ID_RE.fullmatch(person_id or ""):
        raise InvalidInputError.for_field(field_name, "must be 1..64 characters of [a-z0-9-], starting with a letter")
    return person_id


def person_not_found(person_id: str) -> NotFoundError:
    return NotFoundError(f"no person {person_id!r}", reason="PERSON_NOT_FOUND")


def assigned_person_id(request_id: str) -> str:
    """Server-assigned person id of an enrollment that names none: derived from request_id (idempotent)."""
    return "person-" + hashlib.sha256(request_id.encode()).hexdigest()[:12]


def enroll_header_violations(request_id: str, person_id: str, display_name: str, profile: str) -> list[FieldViolation]:
    out = []
    if not REQUEST_ID_RE.fullmatch(request_id or ""):
        out.append(FieldViolation("header.request_id", "must be 1..128 characters of [A-Za-z0-9._-]"))
    if person_id and not PERSON_ID_RE.fullmatch(person_id):
        out.append(FieldViolation("header.person_id",
                                  "must be 1..64 characters of [a-z0-9-], starting with a letter (or empty)"))
    if len(display_name) > MAX_DISPLAY_NAME:
        out.append(FieldViolation("header.display_name", f"at most {MAX_DISPLAY_NAME} characters"))
    if profile not in ("", "cpu-quick", "gpu"):
        out.append(FieldViolation("header.profile", "must be 'cpu-quick', 'gpu' or empty"))
    return out


def upload_key(person_id: str, sha256: str) -> str:
    return f"{UPLOADS_PREFIX}/{person_id}/{sha256}.video"


def record_key(person_id: str) -> str:
    return f"{REGISTRY_PREFIX}/{person_id}.json"


@dataclass
class PersonRecord:
    person_id: str
    display_name: str = ""
    create_time: float = 0.0
    jobs: list[dict[str, Any]] = field(default_factory=list)
    owner: str = ""

    @property
    def latest_job_id(self) -> str:
        return self.jobs[-1]["job_id"] if self.jobs else ""

    def to_dict(self) -> dict[str, Any]:
        return {"person_id": self.person_id, "display_name": self.display_name, "create_time": self.create_time,
                "owner": self.owner, "jobs": self.jobs}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PersonRecord:
        return cls(person_id=str(raw["person_id"]), display_name=str(raw.get("display_name", "")),
                   create_time=float(raw.get("create_time", 0.0)), jobs=list(raw.get("jobs", [])),
                   owner=str(raw.get("owner", "")))

    def has_job(self, job_id: str) -> bool:
        return any(j.get("job_id") == job_id for j in self.jobs)


@dataclass(frozen=True)
class VersionInfo:
    """What the latest committed version's manifest says."""

    version: int
    created_at: str
    resolution: int
    num_anchors: int
    profile: str
    metrics: dict[str, float]


class PersonRegistry:
    """Registry records + the person repository, one view of 'who exists'."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.repo = PersonRepository(store)
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------------- records

    def get(self, person_id: str) -> PersonRecord | None:
        try:
            return PersonRecord.from_dict(get_json(self.store, record_key(person_id)))
        except ArtifactNotFoundError:
            return None

    def add_job(self, person_id: str, display_name: str, job_id: str, request_id: str,
                owner: str = "") -> PersonRecord:
        """Record an enrollment job of a person (idempotent by job_id); creates the record (owned by `owner`)
        if needed; an existing record keeps its owner."""
        with self._lock:
            rec = self.get(person_id) or PersonRecord(person_id=person_id, create_time=time.time(), owner=owner)
            if display_name:
                rec.display_name = display_name
            if not any(j.get("job_id") == job_id for j in rec.jobs):
                rec.jobs.append({"job_id": job_id, "request_id": request_id, "create_time": time.time()})
            put_json(self.store, record_key(person_id), rec.to_dict())
            return rec

    def ids(self) -> list[str]:
        """Every person id with a registry record or a committed version, sorted."""
        found = set(self.repo.list_persons())
        for key in self.store.list(REGISTRY_PREFIX):
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".json") and PERSON_ID_RE.fullmatch(name[:-5]):
                found.add(name[:-5])
        return sorted(found)

    def owned_by(self, tenant: str) -> list[str]:
        """Ids of the persons whose record names `tenant` as owner, sorted."""
        out = []
        for key in self.store.list(REGISTRY_PREFIX):
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".json") and PERSON_ID_RE.fullmatch(name[:-5]):
                rec = self.get(name[:-5])
                if rec is not None and rec.owner == tenant:
                    out.append(rec.person_id)
        return sorted(out)

    def exists(self, person_id: str) -> bool:
        return self.get(person_id) is not None or bool(self.repo.versions(person_id))

    # -------------------------------------------------------------------------------------- versions

    def latest(self, person_id: str) -> VersionInfo | None:
        version = self.repo.latest_version(person_id)
        if version is None:
            return None
        m = self.repo.manifest(person_id, version)
        meta = m.metadata or {}
        prof = meta.get("profile") or {}
        metrics = {str(k): float(v) for k, v in (meta.get("metrics") or {}).items()
                   if isinstance(v, (int, float)) and v == v}
        return VersionInfo(version=version, created_at=m.created_at, resolution=int(meta.get("resolution", 0)),
                           num_anchors=int(meta.get("num_anchors", 0)),
                           profile=str(prof.get("name", "")) if isinstance(prof, dict) else str(prof),
                           metrics=metrics)

    def resolve_version(self, person_id: str, version: int) -> int:
        """The committed version to use (0 = latest); NOT_FOUND for an unknown person or version."""
        if version < 0:
            raise InvalidInputError.for_field("person_version", "must be >= 0 (0 = latest)")
        versions = self.repo.versions(person_id)
        if not versions:
            raise person_not_found(person_id)
        if version == 0:
            return versions[-1]
        if version not in versions:
            raise NotFoundError(f"person {person_id!r} has no version {version} (has {versions})",
                                reason="VERSION_NOT_FOUND")
        return version

    # -------------------------------------------------------------------------------------- deleting

    def delete(self, person_id: str) -> int:
        """Remove every stored object of a person (versions first); returns how many were removed."""
        n = self.repo.delete_person(person_id)
        for prefix in (f"{REENACTMENTS_PREFIX}/{person_id}", f"{UPLOADS_PREFIX}/{person_id}"):
            n += self.store.delete_prefix(prefix)
        if self.store.exists(record_key(person_id)):
            self.store.delete(record_key(person_id), missing_ok=True)
            n += 1
        return n
