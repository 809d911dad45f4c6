"""Artifact store on S3-compatible object storage (AWS S3, MinIO, moto_server, ...).

Keys live under an optional prefix inside one bucket. A PUT is atomic on S3 (an object appears whole
or not at all), so a single key needs no temporary object; multi-object consistency (person versions)
comes from writing the manifest last (see `reenact.store.persons`). Transient failures are retried by
botocore's "standard" retry mode; what still fails becomes a StoreError.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from reenact.store.base import (
    ArtifactNotFoundError,
    ArtifactStore,
    StoreConfigError,
    StoreError,
    StoreUnavailableError,
    atomic_write_file,
    join_key,
    normalize_prefix,
    validate_key,
)

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_NO_BUCKET_CODES = frozenset({"NoSuchBucket", "404", "NotFound"})
_DELETE_BATCH = 1000


def make_s3_client(
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    max_attempts: int = 5,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 60.0,
    session: Any = None,
) -> Any:
    """A boto3 S3 client with standard retries; credentials come from boto3's usual chain (env vars...).

    Pass a shared `boto3.session.Session` to build many clients cheaply (service models load once).
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        # Path-style addressing works with any endpoint (no wildcard DNS needed for MinIO/moto).
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    session = session or boto3.session.Session()  # not the default one: it is not thread-safe
    return session.client("s3", endpoint_url=endpoint_url, region_name=region_name, config=config)


class S3Store(ArtifactStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        max_attempts: int = 5,
    ) -> None:
        if not _BUCKET_RE.fullmatch(bucket or ""):
            raise StoreConfigError.for_field("bucket", f"invalid S3 bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix)
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self.client = client or make_s3_client(
            endpoint_url=endpoint_url, region_name=region_name, max_attempts=max_attempts
        )

    def url(self) -> str:
        query = {}
        if self.endpoint_url:
            query["endpoint_url"] = self.endpoint_url
        if self.region_name:
            query["region"] = self.region_name
        tail = f"?{urlencode(query)}" if query else ""
        return f"s3://{self.bucket}/{quote(self.prefix)}{tail}"

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet."""
        try:
            with _s3_errors("head bucket", self.bucket):
                self.client.head_bucket(Bucket=self.bucket)
            return
        except StoreError as exc:
            if _error_code(exc.__cause__) not in _NO_BUCKET_CODES:
                raise
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region_name and self.region_name != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region_name}
        try:
            with _s3_errors("create bucket", self.bucket):
                self.client.create_bucket(**kwargs)
        except StoreError as exc:
            if _error_code(exc.__cause__) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    # ------------------------------------------------------------------------------------ writes

    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._full(key)
        with _s3_errors("put", key):
            self.client.put_object(Bucket=self.bucket, Key=full, Body=bytes(data))

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        full = self._full(key)
        with open(path, "rb") as src, _s3_errors("put", key):
            # Multipart for large files; the object only appears when the upload completes.
            self.client.upload_fileobj(src, self.bucket, full)

    # ------------------------------------------------------------------------------------- reads

    def get_bytes(self, key: str) -> bytes:
        full = self._full(key)
        with _s3_errors("get", key):
            resp = self.client.get_object(Bucket=self.bucket, Key=full)
            with contextlib.closing(resp["Body"]) as body:
                return body.read()

    def get_file(self, key: str, path: str | os.PathLike) -> None:
        full = self._full(key)
        with _s3_errors("get", key):
            atomic_write_file(
                Path(path), lambda f: self.client.download_fileobj(self.bucket, full, f)
            )

    def exists(self, key: str) -> bool:
        full = self._full(key)
        try:
            with _s3_errors("head", key):
                self.client.head_object(Bucket=self.bucket, Key=full)
        except ArtifactNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        norm = normalize_prefix(prefix)
        with _s3_errors("list", prefix):
            return sorted(self._iter_keys(norm))

    # ----------------------------------------------------------------------------------- deletes

    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        if not missing_ok and not self.exists(key):
            raise ArtifactNotFoundError(f"no artifact {key!r} in {self.url()}")
        full = self._full(key)
        with _s3_errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def delete_prefix(self, prefix: str) -> int:
        norm = normalize_prefix(prefix)
        with _s3_errors("delete", prefix):
            keys = sorted(self._iter_keys(norm))
            for start in range(0, len(keys), _DELETE_BATCH):
                self._delete_batch(keys[start : start + _DELETE_BATCH])
        return len(keys)

    # ----------------------------------------------------------------------------------- helpers

    def _full(self, key: str) -> str:
        return join_key(self.prefix, validate_key(key))

    def _iter_keys(self, norm_prefix: str) -> Iterator[str]:
        directory = join_key(self.prefix, norm_prefix)
        s3_prefix = f"{directory}/" if directory else ""
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=s3_prefix):
            for obj in page.get("Contents", ()):
                key = obj["Key"][strip:]
                try:
                    yield validate_key(key)
                except StoreError:
                    continue  # an object written by something else, with a name no key can have

    def _delete_batch(self, keys: list[str]) -> None:
        objects = [{"Key": self._full(k)} for k in keys]
        resp = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
        errors = resp.get("Errors") or []
        if errors:
            first = errors[0]
            raise StoreError(
                f"s3: could not delete {len(errors)} object(s), first {first.get('Key')!r}: "
                f"{first.get('Code')} {first.get('Message')}",
                reason="S3_DELETE_FAILED",
            )


def _error_code(exc: BaseException | None) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _s3_errors(op: str, key: str) -> Iterator[None]:
    """Map botocore/boto3 failures (after retries) to store errors."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

    try:
        yield
    except StoreError:
        raise
    except ClientError as exc:
        code = _error_code(exc)
        if code in _NOT_FOUND_CODES:
            raise ArtifactNotFoundError(f"no artifact {key!r}", reason="NOT_FOUND") from exc
        raise StoreError(f"s3: {op} {key!r} failed: {code}: {exc}", reason=f"S3_{code}") from exc
    except (ConnectionError, HTTPClientError) as exc:
        raise StoreUnavailableError(f"s3: {op} {key!r}: endpoint unreachable: {exc}") from exc
    except (BotoCoreError, Boto3Error) as exc:
        raise StoreError(f"s3: {op} {key!r} failed: {exc}", reason="S3_CLIENT") from exc
