"""Artifact store in a local directory (the embedded default).

Each key is a file under `root`. Writes go to a temporary file in the destination directory, are
fsynced and renamed into place, so concurrent writers of one key never leave a partial file (the last
rename wins). Deleting removes directories left empty, up to (not including) `root`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from reenact.store.base import (
    ArtifactNotFoundError,
    ArtifactStore,
    StoreError,
    atomic_write_file,
    copy_stream,
    is_valid_key,
    normalize_prefix,
    validate_key,
)


class LocalStore(ArtifactStore):
    def __init__(self, root: str | os.PathLike, *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self._fsync = fsync

    def url(self) -> str:
        return self.root.as_uri()

    # ------------------------------------------------------------------------------------ writes

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        view = memoryview(data)
        with _os_errors("put", key):
            atomic_write_file(target, lambda f: f.write(view), fsync=self._fsync)

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        target = self._path(key)
        with open(path, "rb") as src, _os_errors("put", key):
            atomic_write_file(target, lambda f: copy_stream(src, f), fsync=self._fsync)

    # ------------------------------------------------------------------------------------- reads

    def get_bytes(self, key: str) -> bytes:
        target = self._path(key)
        with _os_errors("get", key):
            with self._open_existing(key, target) as f:
                return f.read()

    def get_file(self, key: str, path: str | os.PathLike) -> None:
        target = self._path(key)
        with _os_errors("get", key):
            with self._open_existing(key, target) as src:
                atomic_write_file(Path(path), lambda f: copy_stream(src, f), fsync=self._fsync)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._dir(prefix)
        with _os_errors("list", prefix):
            return sorted(self._walk_keys(base))

    # ----------------------------------------------------------------------------------- deletes

    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        target = self._path(key)
        with _os_errors("delete", key):
            try:
                target.unlink()
            except (FileNotFoundError, NotADirectoryError):
                if not missing_ok:
                    raise ArtifactNotFoundError(f"no artifact {key!r} in {self.url()}") from None
                return
            self._prune_empty_parents(target.parent)

    def delete_prefix(self, prefix: str) -> int:
        base = self._dir(prefix)
        with _os_errors("delete", prefix):
            keys = sorted(self._walk_keys(base))
            for key in keys:
                with contextlib.suppress(FileNotFoundError):  # a concurrent delete got there first
                    (self.root / key).unlink()
            self._remove_empty_dirs(base)
            return len(keys)

    # ----------------------------------------------------------------------------------- helpers

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _dir(self, prefix: str) -> Path:
        norm = normalize_prefix(prefix)
        return self.root / norm if norm else self.root

    def _open_existing(self, key: str, target: Path):
        try:
            return open(target, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ArtifactNotFoundError(f"no artifact {key!r} in {self.url()}") from None

    def _walk_keys(self, base: Path) -> Iterator[str]:
        if not base.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(base):
            rel = Path(dirpath).relative_to(self.root)
            for name in filenames:
                key = (rel / name).as_posix()
                if is_valid_key(key):  # skips temporary files ('~' in their names)
                    yield key

    def _remove_empty_dirs(self, base: Path) -> None:
        if not base.is_dir():
            return
        for dirpath, _dirnames, _filenames in os.walk(base, topdown=False):
            if Path(dirpath) != self.root:
                with contextlib.suppress(OSError):  # not empty: a concurrent writer is active
                    os.rmdir(dirpath)
        self._prune_empty_parents(base.parent)

    def _prune_empty_parents(self, directory: Path) -> None:
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


@contextlib.contextmanager
def _os_errors(op: str, key: str) -> Iterator[None]:
    """Turn OS failures (disk full, permission, a file where a directory should be) into StoreError."""
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"local store: {op} {key!r} failed: {exc}", reason="LOCAL_IO") from exc
