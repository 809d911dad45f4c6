"""S3Store against a real S3 API (`moto_server` on loopback): the shared contract + S3 specifics."""

from __future__ import annotations

import uuid
from collections import Counter

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from reenact.store import (
    ArtifactNotFoundError,
    PersonRepository,
    S3Store,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from reenact.store.s3 import make_s3_client
from tests.unit.test_store_local import PersonsContract, StoreContract, commit_version

ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    "<Error><Code>{code}</Code><Message>injected by the test</Message><RequestId>t</RequestId></Error>"
)


def _bucket() -> str:
    return f"t-{uuid.uuid4().hex[:20]}"


@pytest.fixture(scope="session")
def boto_session(aws_env):
    return boto3.session.Session()


def make_store(endpoint: str, prefix: str = "", *, session=None) -> S3Store:
    """A store on a fresh bucket, with its own client (tests register event hooks on it)."""
    client = make_s3_client(endpoint_url=endpoint, max_attempts=2, session=session)
    store = S3Store(_bucket(), prefix, client=client, endpoint_url=endpoint)
    store.ensure_bucket()
    return store


@pytest.fixture
def store(moto_endpoint, boto_session) -> S3Store:
    return make_store(moto_endpoint, "tenant-a/artifacts", session=boto_session)


class TestS3StoreContract(StoreContract):
    pass


class TestS3StorePersons(PersonsContract):
    pass


class _Raw:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_kwargs):
        yield self._data


def inject_errors(store: S3Store, operation: str, *, match: str = "", status: int = 500,
                  code: str = "InternalError", times: int | None = None) -> Counter:
    """Make `operation` requests whose URL contains `match` fail with an S3 error response.

    The fake response goes through botocore's normal parsing and retry logic (standard mode).
    Fails `times` times (forever when None); returns a counter of attempts seen / failed.
    """
    seen: Counter = Counter()

    def before_send(request, **_kwargs):
        if match not in request.url:
            return None
        seen["attempts"] += 1
        if times is not None and seen["failed"] >= times:
            return None
        seen["failed"] += 1
        body = ERROR_XML.format(code=code).encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))

    store.client.meta.events.register(f"before-send.s3.{operation}", before_send)
    return seen


def count_calls(store: S3Store, operation: str) -> Counter:
    seen: Counter = Counter()
    store.client.meta.events.register(
        f"before-send.s3.{operation}", lambda **_kw: seen.update(["calls"])
    )
    return seen


def test_transient_error_is_retried(store):
    seen = inject_errors(store, "PutObject", match="flaky", times=1)
    store.put_bytes("flaky", b"eventually")
    assert seen == Counter(attempts=2, failed=1)
    assert store.get_bytes("flaky") == b"eventually"


@pytest.mark.parametrize(
    ("failing", "status", "code"),
    [("v2/b.bin", 500, "InternalError"), ("v2/MANIFEST.json", 503, "ServiceUnavailable"),
     ("v2/b.bin", 403, "AccessDenied")],
)
def test_s3_error_during_version_write(store, failing, status, code):
    repo = PersonRepository(store)
    commit_version(repo, "alice", {"a.bin": b"a1", "b.bin": b"b1"}, steps=1)
    inject_errors(store, "PutObject", match=failing, status=status, code=code)
    with pytest.raises(StoreError) as info, repo.begin_version("alice") as writer:
        writer.put_bytes("a.bin", b"a2")
        writer.put_bytes("b.bin", b"b2")
        writer.commit({"steps": 2})
    assert code in str(info.value)
    assert repo.versions("alice") == [1] and repo.latest_version("alice") == 1
    assert repo.read("alice", 1, "a.bin") == b"a1" and repo.read("alice", 1, "b.bin") == b"b1"
    assert not store.exists("persons/alice/v2/MANIFEST.json")
    assert store.list("persons/alice/v2") == []


def test_s3_error_in_multipart_upload_keeps_previous_version(store, tmp_path):
    repo = PersonRepository(store)
    commit_version(repo, "bob", {"G.safetensors": b"small v1"})
    big = tmp_path / "G.safetensors"
    big.write_bytes(b"\x07" * (9 * 1024 * 1024))  # above boto3's 8 MiB multipart threshold
    seen = inject_errors(store, "UploadPart", status=403, code="AccessDenied")
    with pytest.raises(StoreError), repo.begin_version("bob") as writer:
        writer.put_file("G.safetensors", big)
        writer.commit()
    assert seen["failed"] >= 1
    assert repo.versions("bob") == [1] and repo.read("bob", 1, "G.safetensors") == b"small v1"
    assert store.list("persons/bob/v2") == []
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    assert uploads == []  # the failed multipart upload was aborted, no hidden parts left


def test_large_file_multipart_round_trip(store, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(bytes(range(256)) * (9 * 4096))
    store.put_file("ckpt/big", big)
    store.get_file("ckpt/big", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == big.read_bytes()


def test_listing_and_batch_delete_span_pages(store, monkeypatch):
    keys = [f"many/k{i:02d}" for i in range(7)]
    for key in keys:
        store.put_bytes(key, b"x")
    store.client.meta.events.register(
        "provide-client-params.s3.ListObjectsV2", lambda params, **_kw: params.update(MaxKeys=2)
    )
    lists = count_calls(store, "ListObjectsV2")
    assert store.list("many") == keys
    assert lists["calls"] == 4
    monkeypatch.setattr("reenact.store.s3._DELETE_BATCH", 3)
    deletes = count_calls(store, "DeleteObjects")
    assert store.delete_prefix("many") == 7
    assert deletes["calls"] == 3 and store.list() == []


def test_prefixes_isolate_stores(moto_endpoint):
    whole = make_store(moto_endpoint)
    a = S3Store(whole.bucket, "a", endpoint_url=moto_endpoint)
    b = S3Store(whole.bucket, "b/", endpoint_url=moto_endpoint)
    a.put_bytes("k", b"A")
    b.put_bytes("k", b"B")
    assert (a.list(), b.list()) == (["k"], ["k"])
    assert whole.list() == ["a/k", "b/k"]
    assert a.delete_prefix("") == 1 and whole.list() == ["b/k"]


def test_foreign_object_names_are_skipped(store):
    store.client.put_object(Bucket=store.bucket, Key=f"{store.prefix}/odd name!", Body=b"x")
    store.put_bytes("ok", b"x")
    assert store.list() == ["ok"]


def test_missing_bucket_is_a_store_error_not_a_missing_key(moto_endpoint):
    store = S3Store(_bucket(), endpoint_url=moto_endpoint, max_attempts=1)
    with pytest.raises(StoreError) as info:
        store.put_bytes("k", b"x")
    assert "NoSuchBucket" in str(info.value)
    with pytest.raises(StoreError) as info:
        store.get_bytes("k")
    assert not isinstance(info.value, ArtifactNotFoundError)


def test_unreachable_endpoint_is_unavailable(aws_env):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    store = S3Store("some-bucket", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1)
    with pytest.raises(StoreUnavailableError) as info:
        store.get_bytes("k")
    assert info.value.kind == "UNAVAILABLE"


def test_open_store_from_url_and_env(moto_endpoint):
    bucket = _bucket()
    store = open_store(f"s3://{bucket}/jobs?create_bucket=1", env={"REENACT_S3_ENDPOINT": moto_endpoint})
    assert isinstance(store, S3Store) and store.prefix == "jobs" and store.endpoint_url == moto_endpoint
    store.put_bytes("j1.json", b"{}")
    explicit = open_store(f"s3://{bucket}/?endpoint_url={moto_endpoint}&max_attempts=1", env={})
    assert explicit.list() == ["jobs/j1.json"]
    assert "testing" not in store.url() and store.url().startswith(f"s3://{bucket}/jobs?endpoint_url=")
    store.ensure_bucket()  # idempotent
