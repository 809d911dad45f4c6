"""Artifact store: a local directory or S3-compatible storage behind one interface, plus person versions.

    store = open_store("file:///var/lib/reenact")            # or a plain path
    store = open_store("s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000&create_bucket=1")
    repo = PersonRepository(store)
    with repo.begin_version("alice") as w:
        w.put_file("G.safetensors", path)
        w.commit({"steps": 3000})
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from reenact.store.base import (
    ArtifactNotFoundError,
    ArtifactStore,
    IntegrityError,
    InvalidKeyError,
    StoreConfigError,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
    get_json,
    is_valid_key,
    put_json,
    validate_key,
)
from reenact.store.local import LocalStore
from reenact.store.persons import FileEntry, Manifest, PersonRepository, VersionWriter, validate_person_id
from reenact.store.s3 import S3Store

__all__ = [
    "ArtifactNotFoundError",
    "ArtifactStore",
    "FileEntry",
    "IntegrityError",
    "InvalidKeyError",
    "LocalStore",
    "Manifest",
    "PersonRepository",
    "S3Store",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailableError",
    "VersionConflictError",
    "VersionWriter",
    "get_json",
    "is_valid_key",
    "open_store",
    "put_json",
    "validate_key",
    "validate_person_id",
]

ENDPOINT_ENV = "REENACT_S3_ENDPOINT"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def open_store(url: str, *, env: Mapping[str, str] | None = None) -> ArtifactStore:
    """Build a store from a URL.

    - ``file:///abs/dir`` or a plain path -> LocalStore
    - ``s3://bucket[/prefix][?endpoint_url=...&region=...&create_bucket=1&max_attempts=5]`` -> S3Store;
      the endpoint defaults to $REENACT_S3_ENDPOINT, credentials come from the usual AWS variables.
    """
    env = os.environ if env is None else env
    if not isinstance(url, str) or not url:
        raise StoreConfigError.for_field("store_url", "empty store URL")
    if "://" not in url:
        return LocalStore(url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        return _open_file(parts)
    if parts.scheme == "s3":
        return _open_s3(parts, env)
    raise StoreConfigError.for_field("store_url", f"unsupported scheme {parts.scheme!r} in {url!r}")


def _open_file(parts: SplitResult) -> LocalStore:
    if parts.netloc not in ("", "localhost") or parts.query:
        raise StoreConfigError.for_field("store_url", f"file URL must be file:///absolute/dir: {parts.geturl()!r}")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise StoreConfigError.for_field("store_url", f"file URL needs an absolute path: {parts.geturl()!r}")
    return LocalStore(path)


def _open_s3(parts: SplitResult, env: Mapping[str, str]) -> ArtifactStore:
    query = _single_values(parts.query)
    unknown = set(query) - {"endpoint_url", "region", "create_bucket", "max_attempts"}
    if unknown:
        raise StoreConfigError.for_field("store_url", f"unknown S3 URL parameter(s) {sorted(unknown)}")
    store = S3Store(
        parts.netloc,
        unquote(parts.path).strip("/"),
        endpoint_url=query.get("endpoint_url") or env.get(ENDPOINT_ENV) or None,
        region_name=query.get("region") or None,
        max_attempts=_int_param(query, "max_attempts", 5),
    )
    if _bool_param(query, "create_bucket"):
        store.ensure_bucket()
    return store


def _single_values(query: str) -> dict[str, str]:
    parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    repeated = [k for k, v in parsed.items() if len(v) > 1]
    if repeated:
        raise StoreConfigError.for_field("store_url", f"repeated S3 URL parameter(s) {repeated}")
    return {k: v[0] for k, v in parsed.items()}


def _bool_param(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise StoreConfigError.for_field("store_url", f"{name} must be a boolean, got {value!r}")


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise StoreConfigError.for_field("store_url", f"{name} must be a positive integer, got {raw!r}")
    return value
