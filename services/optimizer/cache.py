"""A thread-safe LRU cache of loaded person generators, bounded by bytes (pure core: no grpc).

    cache = ModelCache(load=lambda pid, v: PersonModel.load(repo, pid, v, device="cuda"),
                       latest=repo.latest_version, max_bytes=2 << 30)
    person = cache.get("alice")          # version 0 / None = the latest committed version
    person = cache.get("alice", 3)

- Entries are keyed by (person_id, version); their size is `model.nbytes()`.
- After an insert, least recently used entries are evicted until the total fits `max_bytes`. The entry
  just inserted is never evicted: one model larger than the whole budget stays alone in the cache.
  A stream that still holds an evicted model keeps using it (memory is freed when it lets go).
- Single flight: concurrent `get`s of a key that is being loaded wait for that one load and share its
  result or its error; a failed load is not cached (the next `get` tries again).
- Counters: `misses` = loads started, `hits` = gets served without starting a load (waiting for another
  thread's load included), `evictions` = entries dropped to fit the budget, `load_failures`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from reenact.errors import InvalidInputError, NotFoundError

log = logging.getLogger("reenact.optimizer.cache")

Key = tuple[str, int]


class Sized(Protocol):
    def nbytes(self) -> int: ...


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    load_failures: int
    entries: int
    bytes: int
    max_bytes: int


class _Flight:
    """One load in progress: waiters block on `done` and then read `value` or `error`."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class ModelCache:
    def __init__(self, load: Callable[[str, int], Sized], latest: Callable[[str], int | None],
                 max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self._load = load
        self._latest = latest
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, tuple[Any, int]] = OrderedDict()
        self._flights: dict[Key, _Flight] = {}
        self._bytes = 0
        self.hits = self.misses = self.evictions = self.load_failures = 0

    # ------------------------------------------------------------------------------------------ reading

    def resolve(self, person_id: str, version: int | None = 0) -> Key:
        """(person_id, version) with version 0 / None replaced by the latest committed one."""
        if version is None or version == 0:
            latest = self._latest(person_id)
            if latest is None:
                raise NotFoundError(f"person {person_id!r} has no committed version", reason="PERSON_NOT_FOUND")
            return person_id, int(latest)
        if version < 0:
            raise InvalidInputError.for_field("person_version", f"must be >= 0 (0 = latest), got {version}")
        return person_id, int(version)

    def get(self, person_id: str, version: int | None = 0) -> Any:
        """The loaded model of a person version (loading it at most once at a time)."""
        key = self.resolve(person_id, version)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]
            flight = self._flights.get(key)
            owner = flight is None
            if owner:
                flight = self._flights[key] = _Flight()
                self.misses += 1
            else:
                self.hits += 1
        if owner:
            return self._load_as_owner(key, flight)
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        return flight.value

    def _load_as_owner(self, key: Key, flight: _Flight) -> Any:
        try:
            value = self._load(*key)
            size = int(value.nbytes())
        except BaseException as exc:
            with self._lock:
                self.load_failures += 1
                del self._flights[key]
            flight.error = exc
            flight.done.set()
            raise
        with self._lock:
            del self._flights[key]
            self._insert(key, value, size)
        flight.value = value
        flight.done.set()
        log.info("person model loaded", extra={"person_id": key[0], "version": key[1], "bytes": size})
        return value

    # ------------------------------------------------------------------------------------------ writing

    def _insert(self, key: Key, value: Any, size: int) -> None:
        """Called with the lock held."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._entries[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            victim, (_, vsize) = next(iter(self._entries.items()))
            if victim == key:  # only the new entry is left ahead: never evict it
                break
            del self._entries[victim]
            self._bytes -= vsize
            self.evictions += 1
            log.info("person model evicted", extra={"person_id": victim[0], "version": victim[1], "bytes": vsize})
        if size > self.max_bytes:
            log.warning("person model larger than the cache budget",
                        extra={"person_id": key[0], "version": key[1], "bytes": size, "max_bytes": self.max_bytes})

    def invalidate(self, person_id: str, version: int | None = None) -> int:
        """Drop the cached versions of a person (all, or one); returns how many were dropped."""
        with self._lock:
            keys = [k for k in self._entries if k[0] == person_id and (version is None or k[1] == version)]
            for k in keys:
                self._bytes -= self._entries.pop(k)[1]
            return len(keys)

    # ------------------------------------------------------------------------------------------ state

    def keys(self) -> list[Key]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def __contains__(self, key: Key) -> bool:
        with self._lock:
            return key in self._entries

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(hits=self.hits, misses=self.misses, evictions=self.evictions,
                              load_failures=self.load_failures, entries=len(self._entries), bytes=self._bytes,
                              max_bytes=self.max_bytes)
