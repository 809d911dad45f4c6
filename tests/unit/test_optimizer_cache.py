"""ModelCache: LRU order, byte budget, single-flight loads, latest-version resolution, counters.

The loaded "models" here are small stand-ins with an `nbytes()` (the cache only needs that); the loader
is a recording function, so every load is counted exactly.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from reenact.errors import InvalidInputError, NotFoundError
from services.optimizer.cache import ModelCache


class Blob:
    """Stand-in for a loaded PersonModel: only its size matters to the cache."""

    def __init__(self, key, size):
        self.key, self.size = key, size

    def nbytes(self):
        return self.size


class Loader:
    def __init__(self, sizes=None, latest=None, delay=0.0, fail=()):
        self.sizes = sizes or {}
        self.latest_versions = latest or {}
        self.delay = delay
        self.fail = set(fail)
        self.calls = []
        self.lock = threading.Lock()

    def load(self, person_id, version):
        with self.lock:
            self.calls.append((person_id, version))
        time.sleep(self.delay)
        if (person_id, version) in self.fail:
            raise NotFoundError(f"no {person_id} v{version}")
        return Blob((person_id, version), self.sizes.get(person_id, 100))

    def latest(self, person_id):
        return self.latest_versions.get(person_id)


def make(max_bytes=1000, **kw):
    loader = Loader(**kw)
    return ModelCache(loader.load, loader.latest, max_bytes), loader


def test_hit_after_miss_returns_the_same_object():
    cache, loader = make()
    a = cache.get("alice", 1)
    assert cache.get("alice", 1) is a and loader.calls == [("alice", 1)]
    s = cache.stats()
    assert (s.hits, s.misses, s.evictions, s.entries, s.bytes) == (1, 1, 0, 1, 100)


def test_lru_order_and_eviction_by_bytes():
    cache, loader = make(max_bytes=300)
    for pid in ("a", "b", "c"):
        cache.get(pid, 1)
    cache.get("a", 1)  # a becomes most recently used
    assert cache.keys() == [("b", 1), ("c", 1), ("a", 1)]
    cache.get("d", 1)  # 400 > 300: the least recently used (b) goes
    assert cache.keys() == [("c", 1), ("a", 1), ("d", 1)]
    assert cache.stats().evictions == 1 and cache.stats().bytes == 300
    cache.get("b", 1)  # loaded again
    assert loader.calls.count(("b", 1)) == 2


def test_large_model_evicts_several_and_oversized_one_stays_alone():
    cache, _ = make(max_bytes=400, sizes={"big": 250, "huge": 5000})
    for pid in ("a", "b", "c"):
        cache.get(pid, 1)
    cache.get("big", 1)  # 300 + 250 > 400: a and b go, c stays (100 + 250 <= 400)
    assert cache.keys() == [("c", 1), ("big", 1)] and cache.stats().evictions == 2
    huge = cache.get("huge", 1)  # larger than the budget: everything else goes, it stays alone
    assert cache.keys() == [("huge", 1)] and cache.stats().bytes == 5000 and cache.stats().evictions == 4
    assert cache.get("huge", 1) is huge


def test_versions_are_separate_entries_and_zero_means_latest():
    cache, loader = make(latest={"alice": 3})
    v3 = cache.get("alice", 0)
    assert v3.key == ("alice", 3) and cache.get("alice") is v3 and cache.get("alice", 3) is v3
    v1 = cache.get("alice", 1)
    assert v1 is not v3 and loader.calls == [("alice", 3), ("alice", 1)]
    loader.latest_versions["alice"] = 4  # a new version committed: the next "latest" picks it up
    assert cache.get("alice").key == ("alice", 4)


def test_unknown_person_and_bad_version():
    cache, loader = make()
    with pytest.raises(NotFoundError):
        cache.get("nobody")
    with pytest.raises(InvalidInputError) as ei:
        cache.get("alice", -1)
    assert ei.value.violations[0].field == "person_version"
    assert loader.calls == []


def test_concurrent_gets_of_one_key_load_once():
    cache, loader = make(delay=0.2)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: cache.get("alice", 1), range(8)))
    assert loader.calls == [("alice", 1)]
    assert all(g is got[0] for g in got)
    s = cache.stats()
    assert s.misses == 1 and s.hits == 7


def test_concurrent_gets_of_different_keys_load_in_parallel():
    cache, loader = make(delay=0.3)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda pid: cache.get(pid, 1), ["a", "b", "c", "d"]))
    assert time.perf_counter() - t0 < 0.9  # 4 x 0.3 s sequentially; the lock is not held while loading
    assert sorted(loader.calls) == [("a", 1), ("b", 1), ("c", 1), ("d", 1)]


def test_failed_load_is_shared_by_waiters_and_not_cached():
    cache, loader = make(delay=0.2, fail={("alice", 2)})
    errors = []

    def get():
        try:
            cache.get("alice", 2)
        except NotFoundError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=get) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4 and loader.calls == [("alice", 2)]
    assert cache.stats().load_failures == 1 and cache.keys() == []
    loader.fail.clear()
    assert cache.get("alice", 2).key == ("alice", 2)  # tried again
    assert len(loader.calls) == 2


def test_invalidate():
    cache, _ = make(latest={"alice": 2})
    cache.get("alice", 1)
    cache.get("alice", 2)
    cache.get("bob", 1)
    assert cache.invalidate("alice", 1) == 1 and ("alice", 1) not in cache
    assert cache.invalidate("alice") == 1
    assert cache.keys() == [("bob", 1)] and cache.stats().bytes == 100
