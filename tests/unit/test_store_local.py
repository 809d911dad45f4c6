"""Artifact store: behaviour contract (shared with the S3 integration tests) + LocalStore specifics.

`StoreContract` and `PersonsContract` hold the tests every backend must pass; they are not collected
themselves (no `Test` prefix). Each backend subclasses them with a `store` fixture:
`TestLocalStore*` below, `TestS3Store*` in tests/integration/test_store_s3.py.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reenact.errors import InvalidInputError, NotFoundError
from reenact.store import (
    ArtifactNotFoundError,
    ArtifactStore,
    IntegrityError,
    InvalidKeyError,
    LocalStore,
    PersonRepository,
    StoreConfigError,
    StoreError,
    VersionConflictError,
    VersionWriter,
    get_json,
    is_valid_key,
    open_store,
    put_json,
    validate_key,
    validate_person_id,
)

SEGMENT = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,12}", fullmatch=True)
VALID_KEY = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)
BAD_SEGMENT = st.one_of(
    st.sampled_from(["", ".", ".."]),
    st.text(min_size=1, max_size=8).filter(
        lambda s: "/" not in s and re.fullmatch(r"[A-Za-z0-9._-]+", s) is None
    ),
)


@st.composite
def bad_keys(draw) -> str:
    """Keys with at least one forbidden segment, or a leading/trailing '/', or too long."""
    kind = draw(st.sampled_from(["segment", "leading", "trailing", "long"]))
    if kind == "long":
        return "a/" + "b" * 1023
    if kind == "leading":
        return "/" + draw(VALID_KEY)
    if kind == "trailing":
        return draw(VALID_KEY) + "/"
    before = draw(st.lists(SEGMENT, max_size=2))
    after = draw(st.lists(SEGMENT, max_size=2))
    return "/".join([*before, draw(BAD_SEGMENT), *after])


BAD_KEYS = ["", "/a", "a/", "a//b", "../a", "a/../b", "a/./b", ".", "..", "a b", "a\\b", "é", "a/b?c", "a\x00b"]


class FlakyStore(ArtifactStore):
    """Delegates to `inner`, but the put whose key matches `fail_on` raises (disk full, S3 outage...)."""

    def __init__(self, inner: ArtifactStore, fail_on) -> None:
        self.inner = inner
        self.fail_on = fail_on

    def _maybe_fail(self, key: str) -> None:
        if self.fail_on(key):
            raise StoreError(f"injected failure writing {key}")

    def put_bytes(self, key, data):
        self._maybe_fail(key)
        self.inner.put_bytes(key, data)

    def put_file(self, key, path):
        self._maybe_fail(key)
        self.inner.put_file(key, path)

    def get_bytes(self, key):
        return self.inner.get_bytes(key)

    def get_file(self, key, path):
        self.inner.get_file(key, path)

    def exists(self, key):
        return self.inner.exists(key)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def delete(self, key, *, missing_ok=False):
        self.inner.delete(key, missing_ok=missing_ok)

    def delete_prefix(self, prefix):
        return self.inner.delete_prefix(prefix)

    def url(self):
        return self.inner.url()


# ----------------------------------------------------------------------------------- pure key rules


@settings(max_examples=200, deadline=None)
@given(bad_keys())
def test_bad_keys_are_rejected(key):
    assert not is_valid_key(key)
    with pytest.raises(InvalidKeyError) as info:
        validate_key(key)
    assert isinstance(info.value, InvalidInputError) and info.value.kind == "INVALID_ARGUMENT"


@settings(max_examples=200, deadline=None)
@given(VALID_KEY)
def test_valid_keys_are_accepted(key):
    assert validate_key(key) == key


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=70))
def test_person_id_rule(text):
    ok = re.fullmatch(r"[a-z][a-z0-9-]{0,63}", text) is not None
    if ok:
        assert validate_person_id(text) == text
    else:
        with pytest.raises(InvalidKeyError):
            validate_person_id(text)


def test_person_id_edges():
    validate_person_id("a" * 64)
    for bad in ["a" * 65, "", "1abc", "-a", "Alice", "al_ice", "al.ice", None, 3]:
        with pytest.raises(InvalidKeyError):
            validate_person_id(bad)


def test_not_found_is_a_key_error_and_a_domain_error():
    err = ArtifactNotFoundError("no artifact 'x'")
    assert isinstance(err, KeyError) and isinstance(err, NotFoundError) and isinstance(err, StoreError)
    assert str(err) == "no artifact 'x'"


# ------------------------------------------------------------------------------ backend contract


class StoreContract:
    """What every ArtifactStore backend must do. Subclasses provide a `store` fixture (empty store)."""

    def test_bytes_round_trip_and_overwrite(self, store):
        store.put_bytes("a/b/c.bin", b"one")
        assert store.get_bytes("a/b/c.bin") == b"one"
        store.put_bytes("a/b/c.bin", b"two, longer")
        assert store.get_bytes("a/b/c.bin") == b"two, longer"
        store.put_bytes("empty", b"")
        assert store.get_bytes("empty") == b""

    def test_file_round_trip(self, store, tmp_path):
        src = tmp_path / "src.bin"
        payload = os.urandom(3 * 1024 * 1024 + 17)
        src.write_bytes(payload)
        store.put_file("ckpt/G.safetensors", src)
        dest = tmp_path / "out" / "deep" / "G.safetensors"
        store.get_file("ckpt/G.safetensors", dest)
        assert dest.read_bytes() == payload
        assert store.get_bytes("ckpt/G.safetensors") == payload

    def test_missing_key(self, store, tmp_path):
        with pytest.raises(ArtifactNotFoundError):
            store.get_bytes("nope/x")
        with pytest.raises(KeyError):
            store.get_bytes("nope")
        dest = tmp_path / "dest" / "x"
        with pytest.raises(ArtifactNotFoundError):
            store.get_file("nope/x", dest)
        assert not dest.exists()
        assert not any((tmp_path / "dest").glob("*"))  # no temp file left behind
        assert not store.exists("nope/x")

    def test_exists(self, store):
        assert not store.exists("k")
        store.put_bytes("k", b"1")
        assert store.exists("k")

    def test_list_is_sorted_and_directory_scoped(self, store):
        for key in ["p/b", "p/a", "p/sub/c", "pq/x", "top"]:
            store.put_bytes(key, b"x")
        assert store.list("p") == ["p/a", "p/b", "p/sub/c"]
        assert store.list("p/") == ["p/a", "p/b", "p/sub/c"]
        assert store.list("p/sub") == ["p/sub/c"]
        assert store.list("") == ["p/a", "p/b", "p/sub/c", "pq/x", "top"]
        assert store.list("missing") == []

    def test_delete(self, store):
        store.put_bytes("d/x", b"1")
        store.delete("d/x")
        assert not store.exists("d/x")
        with pytest.raises(ArtifactNotFoundError):
            store.delete("d/x")
        store.delete("d/x", missing_ok=True)

    def test_delete_prefix(self, store):
        for key in ["v/1", "v/2/a", "v/2/b", "vv/keep", "keep"]:
            store.put_bytes(key, b"x")
        assert store.delete_prefix("v") == 3
        assert store.list() == ["keep", "vv/keep"]
        assert store.delete_prefix("v") == 0

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_every_method_rejects_bad_keys(self, store, tmp_path, key):
        src = tmp_path / "f"
        src.write_bytes(b"x")
        calls = [
            lambda: store.put_bytes(key, b"x"),
            lambda: store.put_file(key, src),
            lambda: store.get_bytes(key),
            lambda: store.get_file(key, tmp_path / "o"),
            lambda: store.exists(key),
            lambda: store.delete(key),
        ]
        if not is_valid_key(key.removesuffix("/") or "x"):  # '' and 'a/' are valid prefixes
            calls += [lambda: store.list(key), lambda: store.delete_prefix(key)]
        for call in calls:
            with pytest.raises(InvalidKeyError):
                call()

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(key=bad_keys())
    def test_bad_keys_never_reach_the_backend(self, store, key):
        with pytest.raises(InvalidKeyError):
            store.put_bytes(key, b"x")
        assert store.list() == []

    def test_json_records(self, store):
        put_json(store, "jobs/j1.json", {"state": "RUNNING", "step": 3, "loss": 0.5})
        assert get_json(store, "jobs/j1.json") == {"state": "RUNNING", "step": 3, "loss": 0.5}
        store.put_bytes("jobs/bad.json", b"{not json")
        with pytest.raises(IntegrityError):
            get_json(store, "jobs/bad.json")
        with pytest.raises(ArtifactNotFoundError):
            get_json(store, "jobs/none.json")
        with pytest.raises(ValueError):
            put_json(store, "jobs/nan.json", {"x": float("nan")})

    def test_url_reopens_the_same_store(self, store):
        store.put_bytes("via/url", b"same")
        again = open_store(store.url())
        assert type(again) is type(store)
        assert again.get_bytes("via/url") == b"same"


def make_writer(repo: PersonRepository, person_id: str, files: dict[str, bytes]) -> VersionWriter:
    writer = repo.begin_version(person_id)
    for name, data in files.items():
        writer.put_bytes(name, data)
    return writer


def commit_version(repo: PersonRepository, person_id: str, files: dict[str, bytes], **metadata) -> int:
    with make_writer(repo, person_id, files) as writer:
        writer.commit(metadata)
    return writer.version


class PersonsContract:
    """Person versions on a backend. Subclasses provide a `store` fixture (empty store)."""

    @pytest.fixture
    def repo(self, store):
        return PersonRepository(store)

    def test_commit_and_read(self, repo):
        assert repo.versions("alice") == [] and repo.latest_version("alice") is None
        k = commit_version(repo, "alice", {"G.safetensors": b"weights", "pti/w.npy": b"ws"}, steps=300)
        assert k == 1 and repo.versions("alice") == [1] and repo.latest_version("alice") == 1
        m = repo.manifest("alice", 1)
        assert m.person_id == "alice" and m.version == 1 and m.metadata == {"steps": 300}
        assert set(m.files) == {"G.safetensors", "pti/w.npy"}
        assert m.files["G.safetensors"].size == 7
        assert repo.read("alice", 1, "pti/w.npy") == b"ws"
        assert m.created_at.endswith("+00:00")

    def test_layout_and_manifest_fields(self, repo, store):
        commit_version(repo, "bob", {"a.bin": b"a"}, note="x")
        assert store.list("persons/bob") == ["persons/bob/v1/MANIFEST.json", "persons/bob/v1/a.bin"]
        raw = get_json(store, "persons/bob/v1/MANIFEST.json")
        assert set(raw) == {"person_id", "version", "created_at", "files", "metadata"}
        assert set(raw["files"]["a.bin"]) == {"sha256", "size"}

    def test_versions_increase(self, repo):
        assert [commit_version(repo, "carol", {"x": bytes([i])}) for i in range(3)] == [1, 2, 3]
        assert repo.read("carol", 2, "x") == b"\x01"

    def test_writers_begun_together_get_distinct_versions(self, repo):
        w1, w2 = repo.begin_version("dan"), repo.begin_version("dan")
        assert (w1.version, w2.version) == (1, 2)
        w2.put_bytes("f", b"2")
        w2.commit()
        w1.abort()
        assert repo.versions("dan") == [2]

    def test_exception_in_block_aborts(self, repo, store):
        commit_version(repo, "erin", {"f": b"old"})
        with pytest.raises(RuntimeError), repo.begin_version("erin") as writer:
            writer.put_bytes("f", b"new")
            raise RuntimeError("training crashed")
        assert writer.state == "aborted"
        assert repo.versions("erin") == [1]
        assert store.list("persons/erin/v2") == []
        assert repo.read("erin", 1, "f") == b"old"

    def test_leaving_block_without_commit_aborts(self, repo, store):
        with repo.begin_version("fay") as writer:
            writer.put_bytes("f", b"x")
        assert writer.state == "aborted" and store.list("persons/fay") == []

    def test_writer_is_closed_after_commit(self, repo):
        with make_writer(repo, "gil", {"f": b"x"}) as writer:
            writer.commit()
        with pytest.raises(StoreError):
            writer.put_bytes("g", b"y")
        writer.abort()  # no-op after commit
        assert repo.read("gil", 1, "f") == b"x"

    def test_bad_metadata_keeps_writer_open(self, repo):
        writer = make_writer(repo, "hal", {"f": b"x"})
        with pytest.raises(InvalidInputError):
            writer.commit({"bad": object()})
        assert repo.versions("hal") == []
        writer.commit({"ok": 1})
        assert repo.versions("hal") == [1]

    @pytest.mark.parametrize("name", ["MANIFEST.json", "_WRITER.json", "../x", "", "a//b"])
    def test_reserved_and_bad_names(self, repo, name):
        writer = repo.begin_version("ivy")
        with pytest.raises(InvalidKeyError):
            writer.put_bytes(name, b"x")
        writer.abort()

    @pytest.mark.parametrize("fail_on", ["persons/jo/v2/b.bin", "persons/jo/v2/MANIFEST.json"])
    def test_failure_mid_write_keeps_previous_version(self, store, fail_on):
        repo = PersonRepository(store)
        commit_version(repo, "jo", {"a.bin": b"a1", "b.bin": b"b1"})
        flaky = PersonRepository(FlakyStore(store, lambda key: key == fail_on))
        with pytest.raises(StoreError), flaky.begin_version("jo") as writer:
            writer.put_bytes("a.bin", b"a2")
            writer.put_bytes("b.bin", b"b2")
            writer.commit()
        assert writer.state == "aborted"
        assert repo.versions("jo") == [1]
        assert repo.read("jo", 1, "a.bin") == b"a1" and repo.read("jo", 1, "b.bin") == b"b1"
        assert not store.exists("persons/jo/v2/MANIFEST.json")
        assert store.list("persons/jo/v2") == []  # the writer's abort removed its files

    def test_crashed_writer_is_invisible_then_collected(self, repo, store):
        commit_version(repo, "kim", {"f": b"1"})
        crashed = make_writer(repo, "kim", {"f": b"2"})  # never committed nor aborted: a crash
        assert repo.versions("kim") == [1] and crashed.version == 2
        assert repo.begin_version("kim").version == 3  # uncommitted versions are never reused
        assert repo.gc_uncommitted("kim", min_age_s=3600) == []  # too young: maybe still writing
        assert repo.gc_uncommitted("kim") == [2, 3]
        assert store.list("persons/kim") == ["persons/kim/v1/MANIFEST.json", "persons/kim/v1/f"]

    def test_gc_without_claim_and_stale_claim(self, repo, store):
        store.put_bytes("persons/lee/v1/orphan", b"x")  # a crashed write whose claim is gone
        assert commit_version(repo, "lee", {"f": b"1"}) == 2
        store.put_bytes("persons/lee/v2/_WRITER.json", b'{"token": "t", "started_at": 0}')  # stale
        assert repo.gc_uncommitted("lee", min_age_s=3600) == [1]
        assert store.list("persons/lee") == ["persons/lee/v2/MANIFEST.json", "persons/lee/v2/f"]

    def test_conflicting_claim_is_detected(self, repo, store):
        writer = make_writer(repo, "max", {"f": b"mine"})
        rival = VersionWriter(repo, "max", writer.version)
        rival._claim()
        with pytest.raises(VersionConflictError):
            writer.commit()
        writer.abort()
        assert store.exists("persons/max/v1/_WRITER.json")  # the rival's claim is left alone
        rival.put_bytes("f", b"theirs")
        rival.commit()
        assert repo.read("max", 1, "f") == b"theirs"

    def test_corrupt_file_is_detected(self, repo, store, tmp_path):
        commit_version(repo, "ned", {"G.pt": b"good weights"})
        store.put_bytes("persons/ned/v1/G.pt", b"evil weights")
        with pytest.raises(IntegrityError):
            repo.read("ned", 1, "G.pt")
        assert repo.read("ned", 1, "G.pt", verify=False) == b"evil weights"
        with pytest.raises(IntegrityError):
            repo.fetch_version("ned", 1, tmp_path / "out")
        assert not (tmp_path / "out" / "G.pt").exists()

    def test_corrupt_manifest_is_detected(self, repo, store):
        commit_version(repo, "oz", {"f": b"x"})
        store.put_bytes("persons/oz/v1/MANIFEST.json", b'{"person_id": "oz"}')
        with pytest.raises(IntegrityError):
            repo.manifest("oz", 1)

    def test_fetch_version(self, repo, tmp_path):
        commit_version(repo, "pam", {"G.safetensors": b"w" * 1000, "sub/mean.npy": b"m"}, steps=5)
        m = repo.fetch_version("pam", 1, tmp_path / "cache")
        assert (tmp_path / "cache" / "G.safetensors").read_bytes() == b"w" * 1000
        assert (tmp_path / "cache" / "sub" / "mean.npy").read_bytes() == b"m"
        assert (tmp_path / "cache" / "MANIFEST.json").exists() and m.metadata == {"steps": 5}

    def test_put_file_in_version(self, repo, tmp_path):
        src = tmp_path / "G.safetensors"
        src.write_bytes(b"\x00\x01" * 5000)
        with repo.begin_version("quin") as writer:
            entry = writer.put_file("G.safetensors", src)
            writer.commit()
        assert entry.size == 10000
        assert repo.read("quin", 1, "G.safetensors") == src.read_bytes()

    def test_missing_things(self, repo):
        with pytest.raises(ArtifactNotFoundError):
            repo.manifest("rob", 1)
        commit_version(repo, "rob", {"f": b"x"})
        with pytest.raises(ArtifactNotFoundError):
            repo.read("rob", 1, "other")
        with pytest.raises(ArtifactNotFoundError):
            repo.read("rob", 2, "f")
        with pytest.raises(InvalidInputError):
            repo.manifest("rob", 0)
        with pytest.raises(InvalidKeyError):
            repo.versions("Rob")

    def test_list_and_delete_persons(self, repo, store):
        commit_version(repo, "sam", {"f": b"1"})
        commit_version(repo, "sam", {"f": b"2", "g": b"3"})
        commit_version(repo, "sue", {"f": b"1"})
        make_writer(repo, "tom", {"f": b"1"})  # uncommitted only
        assert repo.list_persons() == ["sam", "sue"]
        assert repo.list_persons(include_uncommitted=True) == ["sam", "sue", "tom"]
        assert repo.delete_person("sam") == 5
        assert repo.list_persons() == ["sue"] and repo.versions("sam") == []
        assert repo.delete_person("sam") == 0


# ------------------------------------------------------------------------------- LocalStore backend


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


class TestLocalStoreContract(StoreContract):
    pass


class TestLocalStorePersons(PersonsContract):
    pass


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("target", ["os.replace", "os.fsync"])
def test_failed_write_keeps_old_content_and_no_temp(store, monkeypatch, target):
    store.put_bytes("a/k", b"old")

    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(target, boom)
    with pytest.raises(StoreError) as info:
        store.put_bytes("a/k", b"new")
    monkeypatch.undo()
    assert isinstance(info.value.__cause__, OSError)
    assert store.get_bytes("a/k") == b"old"
    assert _files_under(store.root) == ["a/k"]


def test_failure_while_copying_a_file_keeps_old_content(store, monkeypatch, tmp_path):
    store.put_bytes("k", b"old")
    src = tmp_path / "big"
    src.write_bytes(b"n" * 10_000)

    def half_then_fail(src_f, dst_f):
        dst_f.write(src_f.read(5000))
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr("reenact.store.local.copy_stream", half_then_fail)
    with pytest.raises(StoreError):
        store.put_file("k", src)
    assert store.get_bytes("k") == b"old"
    assert _files_under(store.root) == ["k"]


def test_missing_source_file_is_the_callers_error(store, tmp_path):
    with pytest.raises(FileNotFoundError):
        store.put_file("k", tmp_path / "does-not-exist")


def test_concurrent_writers_never_leave_partial_files(store):
    payloads = [bytes([i]) * 300_000 for i in range(4)]
    store.put_bytes("hot/key", payloads[0])
    seen, errors = set(), []

    def writer(data):
        for _ in range(15):
            store.put_bytes("hot/key", data)

    def reader():
        for _ in range(60):
            data = store.get_bytes("hot/key")
            if data not in payloads:
                errors.append(len(data))
            seen.add(data[:1])

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get_bytes("hot/key") in payloads
    assert _files_under(store.root) == ["hot/key"]


def test_temp_files_are_never_listed(store):
    store.put_bytes("d/real", b"x")
    (store.root / "d" / ".real~abc.tmp").write_bytes(b"partial")
    assert store.list() == ["d/real"]


def test_delete_removes_empty_directories_but_not_root(store):
    store.put_bytes("a/b/c/d", b"x")
    store.put_bytes("a/keep", b"x")
    store.delete("a/b/c/d")
    assert not (store.root / "a" / "b").exists() and (store.root / "a" / "keep").exists()
    assert store.delete_prefix("a") == 1
    assert store.root.is_dir() and list(store.root.iterdir()) == []


def test_key_below_a_file_is_a_store_error(store):
    store.put_bytes("a", b"x")
    with pytest.raises(StoreError):
        store.put_bytes("a/b", b"y")
    assert store.get_bytes("a") == b"x"
    with pytest.raises(ArtifactNotFoundError):
        store.get_bytes("a/b")


def test_disk_full_in_version_write_keeps_previous_version(store, monkeypatch):
    repo = PersonRepository(store)
    commit_version(repo, "uma", {"G.pt": b"v1"})
    real_replace = os.replace

    def full_on_second_file(src, dst):
        if str(dst).endswith("v2/second.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr("os.replace", full_on_second_file)
    with pytest.raises(StoreError), repo.begin_version("uma") as writer:
        writer.put_bytes("G.pt", b"v2")
        writer.put_bytes("second.bin", b"more")
        writer.commit()
    monkeypatch.undo()
    assert repo.versions("uma") == [1] and repo.read("uma", 1, "G.pt") == b"v1"
    assert _files_under(store.root) == ["persons/uma/v1/G.pt", "persons/uma/v1/MANIFEST.json"]


def test_corrupt_file_on_disk_is_detected(store):
    repo = PersonRepository(store)
    commit_version(repo, "vic", {"G.pt": b"0123456789"})
    path = store.root / "persons" / "vic" / "v1" / "G.pt"
    path.write_bytes(b"0123456789"[:-1] + b"X")  # same size, one byte flipped
    with pytest.raises(IntegrityError) as info:
        repo.read("vic", 1, "G.pt")
    assert info.value.kind == "DATA_LOSS"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=VALID_KEY, data=st.binary(max_size=64))
def test_any_valid_key_round_trips(tmp_path, key, data):
    store = LocalStore(tmp_path / uuid.uuid4().hex)
    store.put_bytes(key, data)
    assert store.get_bytes(key) == data and store.list() == [key]
    assert store.delete_prefix("") == 1 and store.list() == []


def test_open_store_local_forms(tmp_path, monkeypatch):
    assert open_store(str(tmp_path)).root == tmp_path.resolve()
    assert open_store(tmp_path.as_uri()).root == tmp_path.resolve()
    assert open_store(f"file://localhost{tmp_path}").root == tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    assert open_store("rel/dir").root == tmp_path.resolve() / "rel" / "dir"
    assert open_store(str(tmp_path)).url() == tmp_path.resolve().as_uri()


@pytest.mark.parametrize(
    "url",
    ["", "ftp://host/x", "file://otherhost/x", "file://relative/x", "s3://Bad_Bucket/x",
     "s3://bucket/x?nope=1", "s3://bucket/x?create_bucket=maybe", "s3://bucket/x?max_attempts=0",
     "s3://bucket/bad..//prefix"],
)
def test_open_store_rejects_bad_urls(url):
    with pytest.raises((StoreConfigError, InvalidKeyError)):
        open_store(url, env={})
