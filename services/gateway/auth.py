"""API keys of the public gateway: the keys file, authentication of each call, per-key quotas.

Keys file (`--api-keys-file`, JSON; the secrets themselves are never stored, only their SHA-256):

    {"keys": [
      {"key_id": "acme-prod", "tenant": "acme", "secret_sha256": "<64 hex>",
       "max_streams": 2, "max_persons": 50, "requests_per_minute": 600, "admin": false, "disabled": false}
    ]}

- key_id: a name for logs and metrics (never the secret); unique.
- tenant: the owner recorded with every person the key enrolls; a key sees only its tenant's persons,
  jobs and reenactments (several keys may share a tenant). [a-z0-9-], 1..32 characters.
- secret_sha256: hex SHA-256 of the key string the client sends. Keys are random 256-bit tokens
  (`python -m services.gateway.auth new-key`), so a plain SHA-256 is enough to make a leaked file useless.
- quotas, 0 or absent = unlimited: max_streams (concurrent Reenact/Render streams of this key),
  max_persons (persons the tenant may own, checked when a key enrolls a new person),
  requests_per_minute (all RPCs of this key; a token bucket with a burst of one minute's worth).
- admin: sees and touches every person (operators); disabled: the key is refused (UNAUTHENTICATED).
- read_only: the key may only read (ListPersons, GetPerson, ListJobs, GetJob, WatchJob, ListEditDirections);
  Enroll, CancelJob, DeletePerson, Reenact and Render are PERMISSION_DENIED (reason KEY_READ_ONLY): the key
  is known and valid, it is just not allowed to do that (dashboards, monitoring, support staff).

The file is re-read when its modification time changes (checked at most every `RELOAD_CHECK_S` seconds),
so keys are added or revoked without a restart; a file that stops parsing keeps the previous keys and
logs an error.

Clients send `authorization: Bearer <key>` (what reenact.client sends) or `x-api-key: <key>`.
Missing key -> UNAUTHENTICATED (reason API_KEY_MISSING); unknown or disabled -> UNAUTHENTICATED
(API_KEY_INVALID); a read-only key calling a writing RPC -> PERMISSION_DENIED (KEY_READ_ONLY); over the
rate -> RESOURCE_EXHAUSTED (RATE_LIMITED, RetryInfo = time to the next token).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reenact.errors import ExhaustedError, PermissionDeniedError, UnauthenticatedError
from reenact.runtime.auth import Principal

log = logging.getLogger("reenact.gateway.auth")

KEY_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
RELOAD_CHECK_S = 2.0
KEY_PREFIX = "rk_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant: str
    secret_sha256: str
    max_streams: int = 0
    max_persons: int = 0
    requests_per_minute: int = 0
    admin: bool = False
    disabled: bool = False
    read_only: bool = False

    def principal(self) -> Principal:
        return Principal(key_id=self.key_id, tenant=self.tenant, sees_all=self.admin, max_streams=self.max_streams,
                         max_persons=self.max_persons, requests_per_minute=self.requests_per_minute)


def _int_field(raw: dict, name: str, where: str) -> int:
    val = raw.get(name, 0)
    if not isinstance(val, int) or isinstance(val, bool) or val < 0:
        raise ValueError(f"{where}: {name} must be an integer >= 0, got {val!r}")
    return val


_FIELDS = {"key_id", "tenant", "secret_sha256", "max_streams", "max_persons", "requests_per_minute", "admin",
           "disabled", "read_only", "comment"}
# RPCs that create, change, delete or spend compute: refused to read-only keys
WRITE_METHODS = frozenset({"Enroll", "CancelJob", "DeletePerson", "Reenact", "Render"})


def _parse_entry(raw, where: str) -> ApiKey:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: not an object")
    if "secret" in raw or "key" in raw:
        raise ValueError(f"{where}: plain secrets are not accepted; store secret_sha256")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    key_id, tenant = str(raw.get("key_id", "")), str(raw.get("tenant", ""))
    digest = str(raw.get("secret_sha256", "")).lower()
    if not KEY_ID_RE.fullmatch(key_id):
        raise ValueError(f"{where}: key_id must be 1..64 characters of [A-Za-z0-9._-]")
    if not TENANT_RE.fullmatch(tenant):
        raise ValueError(f"{where}: tenant must be 1..32 characters of [a-z0-9-]")
    if not SHA256_RE.fullmatch(digest):
        raise ValueError(f"{where}: secret_sha256 must be 64 hex digits")
    for flag in ("admin", "disabled", "read_only"):
        if not isinstance(raw.get(flag, False), bool):
            raise ValueError(f"{where}: {flag} must be true or false")
    return ApiKey(key_id=key_id, tenant=tenant, secret_sha256=digest,
                  max_streams=_int_field(raw, "max_streams", where), max_persons=_int_field(raw, "max_persons", where),
                  requests_per_minute=_int_field(raw, "requests_per_minute", where),
                  admin=bool(raw.get("admin", False)), disabled=bool(raw.get("disabled", False)),
                  read_only=bool(raw.get("read_only", False)))


def parse_keys(text: str, source: str = "keys file") -> dict[str, ApiKey]:
    """The keys of a keys file, by secret hash; ValueError naming the bad entry."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not JSON: {exc}") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'{source}: expected {{"keys": [...]}}')
    by_hash: dict[str, ApiKey] = {}
    ids: set[str] = set()
    for i, raw in enumerate(entries):
        key = _parse_entry(raw, f"{source}: keys[{i}]")
        if key.key_id in ids:
            raise ValueError(f"{source}: keys[{i}]: duplicate key_id {key.key_id!r}")
        if key.secret_sha256 in by_hash:
            raise ValueError(f"{source}: keys[{i}]: the same secret as key {by_hash[key.secret_sha256].key_id!r}")
        ids.add(key.key_id)
        by_hash[key.secret_sha256] = key
    return by_hash


class KeysFile:
    """The parsed keys file, re-read when it changes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime = self.path.stat().st_mtime_ns
        self._keys = parse_keys(self.path.read_text(), str(self.path))  # a bad file fails the start-up
        self._checked = time.monotonic()
        log.info("api keys loaded", extra={"keys": len(self._keys), "path": str(self.path)})

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_S:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime == self._mtime:
                return
            keys = parse_keys(self.path.read_text(), str(self.path))
        except (OSError, ValueError) as exc:
            log.error("api keys file not reloaded; keeping the previous keys", extra={"error": str(exc)})
            return
        self._keys, self._mtime = keys, mtime
        log.info("api keys reloaded", extra={"keys": len(keys), "path": str(self.path)})

    def lookup(self, secret: str) -> ApiKey | None:
        with self._lock:
            self._maybe_reload()
            return self._keys.get(hash_secret(secret))

    def __len__(self) -> int:
        return len(self._keys)


class RateLimiter:
    """Token buckets per key: `rate_per_minute` tokens a minute, at most that many saved up."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key_id -> (tokens, last refill time)
        self._lock = threading.Lock()

    def take(self, key_id: str, rate_per_minute: int) -> float:
        """0.0 when the call may go ahead, else the seconds until a token is there."""
        if rate_per_minute <= 0:
            return 0.0
        per_s = rate_per_minute / 60.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(rate_per_minute), now))
            tokens = min(float(rate_per_minute), tokens + (now - last) * per_s)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / per_s


def presented_key(metadata: Mapping[str, str]) -> str | None:
    """The key of `authorization: Bearer <key>` or `x-api-key: <key>`; UnauthenticatedError when malformed."""
    bearer = None
    auth = metadata.get("authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise UnauthenticatedError("the authorization metadata must be 'Bearer <api key>'",
                                       reason="API_KEY_MALFORMED")
        bearer = value.strip()
    header = metadata.get("x-api-key")
    header = header.strip() if header is not None else None
    if bearer is not None and header is not None and bearer != header:
        raise UnauthenticatedError("authorization and x-api-key carry different keys", reason="API_KEY_MALFORMED")
    return bearer if bearer is not None else (header or None)


class GatewayAuth:
    """The gateway's authenticator (reenact.runtime.auth.Authenticator): API key -> Principal, rate limits."""

    def __init__(self, keys: KeysFile, limiter: RateLimiter | None = None) -> None:
        self.keys = keys
        self.limiter = limiter or RateLimiter()

    def authenticate(self, method: str, metadata: Mapping[str, str]) -> Principal:
        secret = presented_key(metadata)
        if not secret:
            raise UnauthenticatedError("an API key is required: send 'authorization: Bearer <key>' or 'x-api-key'",
                                       reason="API_KEY_MISSING")
        key = self.keys.lookup(secret)
        if key is None or key.disabled:
            raise UnauthenticatedError("unknown or revoked API key", reason="API_KEY_INVALID")
        wait = self.limiter.take(key.key_id, key.requests_per_minute)
        if wait > 0:
            raise ExhaustedError(f"API key {key.key_id!r} is over its {key.requests_per_minute} requests per minute",
                                 retry_after_s=round(wait, 3), reason="RATE_LIMITED")
        name = method.rsplit("/", 1)[-1]
        if key.read_only and name in WRITE_METHODS:
            raise PermissionDeniedError(f"API key {key.key_id!r} is read-only: {name} is not allowed",
                                        reason="KEY_READ_ONLY")
        return key.principal()


class KeyStreams:
    """Concurrent Reenact/Render streams per API key (the key's max_streams; 0 = unlimited)."""

    def __init__(self, retry_after_s) -> None:
        self._retry = retry_after_s
        self._active: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, principal: Principal) -> bool:
        """Take a slot (False when this principal has no per-key limit and nothing was taken)."""
        if not principal.key_id or principal.max_streams <= 0:
            return False
        with self._lock:
            n = self._active.get(principal.key_id, 0)
            if n >= principal.max_streams:
                raise ExhaustedError(f"API key {principal.key_id!r} has {n} streams running (its max_streams is "
                                     f"{principal.max_streams})", retry_after_s=self._retry(),
                                     reason="KEY_STREAM_QUOTA")
            self._active[principal.key_id] = n + 1
        return True

    def release(self, principal: Principal) -> None:
        with self._lock:
            n = self._active.get(principal.key_id, 0) - 1
            if n > 0:
                self._active[principal.key_id] = n
            else:
                self._active.pop(principal.key_id, None)

    def active(self, key_id: str) -> int:
        with self._lock:
            return self._active.get(key_id, 0)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    """python -m services.gateway.auth new-key --key-id ID --tenant T [quotas]: print a new key and its entry."""
    p = argparse.ArgumentParser(prog="python -m services.gateway.auth",
                                description="Make a new API key: prints the secret (give it to the client, "
                                            "once) and the JSON entry for the gateway's keys file.")
    sub = p.add_subparsers(dest="cmd", required=True)
    nk = sub.add_parser("new-key")
    nk.add_argument("--key-id", required=True)
    nk.add_argument("--tenant", required=True)
    nk.add_argument("--max-streams", type=int, default=0)
    nk.add_argument("--max-persons", type=int, default=0)
    nk.add_argument("--requests-per-minute", type=int, default=0)
    nk.add_argument("--admin", action="store_true")
    nk.add_argument("--read-only", action="store_true", help="the key may only read (no Enroll, Reenact, ...)")
    nk.add_argument("--append-to", help="keys file to add the entry to (created when missing)")
    hs = sub.add_parser("hash", help="SHA-256 of a secret read from stdin")
    del hs
    ns = p.parse_args(argv)
    if ns.cmd == "hash":
        print(hash_secret(sys.stdin.read().strip()))
        return 0
    secret = new_secret()
    entry = {"key_id": ns.key_id, "tenant": ns.tenant, "secret_sha256": hash_secret(secret),
             "max_streams": ns.max_streams, "max_persons": ns.max_persons,
             "requests_per_minute": ns.requests_per_minute, "admin": ns.admin,
             **({"read_only": True} if ns.read_only else {})}
    parse_keys(json.dumps({"keys": [entry]}), "new entry")  # validates the names
    if ns.append_to:
        path = Path(ns.append_to)
        doc = json.loads(path.read_text()) if path.exists() else {"keys": []}
        doc["keys"].append(entry)
        parse_keys(json.dumps(doc), str(path))
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.chmod(tmp, 0o600)
        tmp.replace(path)
        print(f"entry added to {path}", file=sys.stderr)
    else:
        print(json.dumps(entry, indent=2))
    print(f"API key (shown once, not stored): {secret}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
