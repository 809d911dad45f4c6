"""Stored reenactments: the latents of every frame, so Render can re-render with edits without optimizing.

Layout (one directory per reenactment, `meta.json` written LAST: a reenactment exists once it does)::

    reenactments/<person_id>/<reenactment_id>/index.npy      int64 [T] frame indices (as the client sent them)
                                             /alpha.npy      float32 [T, N]
                                             /delta.npy      float32 [T, num_ws, N]
                                             /ws.npy         float32 [T, num_ws, w_dim]  (the optimizer's, unedited)
                                             /affines.npy    float64 [T, 2, 3] crop_to_source of each frame
                                                             (aligned-crop pixels of crop_size -> driving
                                                             pixels; NaN rows where the frame had no face)
                                             /has_face.npy   bool [T]
                                             /lip_src.npy    float32 [T, 40, 2] } only with lip_warp > 0: each
                                             /lip_dst.npy    float32 [T, 40, 2] } frame's residual lip warp at
                                                             the generator's resolution (reenact.lipwarp;
                                                             NaN rows: none)
                                             /driving.video  the driving video (the uploaded container, or H.264 of driving frames)
                                             /meta.json      person, version, fps, sizes, sha256 per file

While a stream runs, rows are appended to local temporary files (memory stays bounded whatever the
video's length); `commit` uploads them as .npy files, then meta.json. Any failure before the commit
removes what was uploaded (`abort`), so a failed or cancelled stream leaves nothing in the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from reenact.errors import NotFoundError
from reenact.lipwarp import NUM_LIP_POINTS
from reenact.store import ArtifactNotFoundError, ArtifactStore, get_json
from reenact.store.base import dumps_json, sha256_file
from services.gateway.registry import REENACTMENTS_PREFIX

log = logging.getLogger("reenact.gateway.reenactments")

REENACTMENT_ID_RE = re.compile(r"re-[0-9a-f]{32}")
META = "meta.json"
DRIVING = "driving.video"
ARRAYS = ("index", "alpha", "delta", "ws", "affines", "has_face")
LIP_ARRAYS = ("lip_src", "lip_dst")  # stored only for a reenactment made with lip_warp > 0


def new_reenactment_id() -> str:
    return "re-" + uuid.uuid4().hex


def prefix_of(person_id: str, reenactment_id: str) -> str:
    return f"{REENACTMENTS_PREFIX}/{person_id}/{reenactment_id}"


class _RowFile:
    """Rows of a fixed dtype and row shape appended to a raw file; `to_npy` writes the .npy at the end."""

    def __init__(self, path: pathlib.Path, dtype: str, row_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), tuple(row_shape)
        self.rows = 0
        self._f = open(path, "wb")  # noqa: SIM115 - closed in to_npy/close

    def append(self, row) -> None:
        arr = np.ascontiguousarray(np.asarray(row, dtype=self.dtype).reshape(self.row_shape))
        self._f.write(arr.tobytes())
        self.rows += 1

    def to_npy(self, dest: pathlib.Path) -> None:
        self._f.close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.rows, *self.row_shape)}
        with open(dest, "wb") as out, open(self.path, "rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, 1 << 20)

    def close(self) -> None:
        self._f.close()


class ReenactmentWriter:
    """Collects one reenactment's per-frame latents locally, then commits them to the store."""

    def __init__(self, store: ArtifactStore, person_id: str, reenactment_id: str, *, num_anchors: int,
                 num_ws: int, w_dim: int, lips: bool = False) -> None:
        self.store, self.person_id, self.reenactment_id = store, person_id, reenactment_id
        self.prefix = prefix_of(person_id, reenactment_id)
        self._tmp = pathlib.Path(tempfile.mkdtemp(prefix="reenact-gw-"))
        n = num_anchors
        self._files = {
            "index": _RowFile(self._tmp / "index.raw", "<i8", ()),
            "alpha": _RowFile(self._tmp / "alpha.raw", "<f4", (n,)),
            "delta": _RowFile(self._tmp / "delta.raw", "<f4", (num_ws, n)),
            "ws": _RowFile(self._tmp / "ws.raw", "<f4", (num_ws, w_dim)),
            "affines": _RowFile(self._tmp / "affines.raw", "<f8", (2, 3)),
            "has_face": _RowFile(self._tmp / "has_face.raw", "|b1", ()),
        }
        if lips:
            for name in LIP_ARRAYS:
                self._files[name] = _RowFile(self._tmp / f"{name}.raw", "<f4", (NUM_LIP_POINTS, 2))
        self.driving_path: pathlib.Path | None = None
        self._uploaded: list[str] = []
        self.committed = False

    @property
    def frames(self) -> int:
        return self._files["ws"].rows

    @property
    def tmp_dir(self) -> pathlib.Path:
        return self._tmp

    def add(self, *, index: int, alpha, delta, ws, affine, has_face: bool, lips=None) -> None:
        """One frame's row; `lips` = (lip_src, lip_dst) [40, 2] each or None (stored as NaN when the
        writer keeps lips)."""
        f = self._files
        if "lip_src" in f:
            none = np.full((NUM_LIP_POINTS, 2), np.nan, np.float32)
            f["lip_src"].append(none if lips is None else lips[0])
            f["lip_dst"].append(none if lips is None else lips[1])
        f["index"].append(int(index))
        f["alpha"].append(alpha)
        f["delta"].append(delta)
        f["ws"].append(ws)
        f["affines"].append(np.full((2, 3), np.nan) if affine is None else affine)
        f["has_face"].append(bool(has_face))

    def commit(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Upload the arrays (and the driving video when set), then meta.json. Returns the meta written."""
        files = {}
        try:
            for name, rf in self._files.items():
                path = self._tmp / f"{name}.npy"
                rf.to_npy(path)
                files[f"{name}.npy"] = path
            if self.driving_path is not None and self.driving_path.is_file():
                files[DRIVING] = self.driving_path
            entries = {}
            for name, path in files.items():
                sha, size = sha256_file(path)
                key = f"{self.prefix}/{name}"
                self._uploaded.append(key)
                self.store.put_file(key, path)
                entries[name] = {"sha256": sha, "size": size}
            full = {**meta, "person_id": self.person_id, "reenactment_id": self.reenactment_id,
                    "frames": self.frames, "has_driving": DRIVING in entries, "files": entries,
                    "create_time": time.time()}
            self._uploaded.append(f"{self.prefix}/{META}")
            self.store.put_bytes(f"{self.prefix}/{META}", dumps_json(full))
        except BaseException:
            self.abort()
            raise
        self.committed = True
        self._cleanup()
        return full

    def abort(self) -> None:
        """Remove what was uploaded (meta first) and the local files. Idempotent; no-op after commit."""
        if self.committed:
            return
        if self._uploaded:
            with contextlib.suppress(Exception):
                self.store.delete(f"{self.prefix}/{META}", missing_ok=True)
            try:
                self.store.delete_prefix(self.prefix)
            except Exception:  # noqa: BLE001 - best effort; an uncommitted directory has no meta.json
                log.warning("could not remove an aborted reenactment", exc_info=True,
                            extra={"prefix": self.prefix})
            self._uploaded.clear()
        self._cleanup()

    def _cleanup(self) -> None:
        for rf in self._files.values():
            rf.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


@dataclass
class StoredReenactment:
    meta: dict[str, Any]
    index: np.ndarray      # [T]
    alpha: np.ndarray      # [T, N]
    delta: np.ndarray      # [T, num_ws, N]
    ws: np.ndarray         # [T, num_ws, w_dim]
    affines: np.ndarray    # [T, 2, 3]
    has_face: np.ndarray   # [T]
    driving_path: pathlib.Path | None
    tmp_dir: pathlib.Path
    lip_src: np.ndarray | None = None  # [T, 40, 2] (NaN rows: no warp), None: made without lip_warp
    lip_dst: np.ndarray | None = None

    def close(self) -> None:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> StoredReenactment:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_meta(store: ArtifactStore, person_id: str, reenactment_id: str) -> dict[str, Any]:
    if not REENACTMENT_ID_RE.fullmatch(reenactment_id or ""):
        raise NotFoundError(f"no reenactment {reenactment_id!r} of person {person_id!r}",
                            reason="REENACTMENT_NOT_FOUND")
    try:
        return get_json(store, f"{prefix_of(person_id, reenactment_id)}/{META}")
    except ArtifactNotFoundError:
        raise NotFoundError(f"no reenactment {reenactment_id!r} of person {person_id!r}",
                            reason="REENACTMENT_NOT_FOUND") from None


def open_reenactment(store: ArtifactStore, person_id: str, reenactment_id: str, *,
                     with_driving: bool = False) -> StoredReenactment:
    """Fetch a stored reenactment into a local temporary directory; arrays are memory-mapped."""
    meta = read_meta(store, person_id, reenactment_id)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="reenact-gw-render-"))
    try:
        prefix = prefix_of(person_id, reenactment_id)
        arrays = {}
        stored = meta.get("files", {})
        for name in ARRAYS + tuple(n for n in LIP_ARRAYS if f"{n}.npy" in stored):
            path = tmp / f"{name}.npy"
            store.get_file(f"{prefix}/{name}.npy", path)
            arrays[name] = np.load(path, mmap_mode="r")
        driving = None
        if with_driving and meta.get("has_driving"):
            driving = tmp / DRIVING
            store.get_file(f"{prefix}/{DRIVING}", driving)
        return StoredReenactment(meta=meta, driving_path=driving, tmp_dir=tmp, **arrays)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def describe(meta: dict[str, Any]) -> str:
    return json.dumps({k: meta.get(k) for k in ("person_id", "reenactment_id", "frames", "fps")})
