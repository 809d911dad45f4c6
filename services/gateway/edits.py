"""Edits of reenactment latents: the person's anchors and semantic directions (cached), request edits
validated into (Direction, strength) pairs, and W+ of edited frames (pure core on top of `reenact.edit`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from reenact.errors import FieldViolation, InvalidInputError
from reenact.store import PersonRepository
from reenact.wire import tensor_from_proto

MAX_STRENGTH = 3.0
MAX_EDITS = 16


@dataclass
class PersonAnchors:
    """anchors.pt of one person version plus its semantic directions."""

    person_id: str
    version: int
    raw: dict[str, Any]          # the anchors.pt dict (torch tensors)
    anchor_w: np.ndarray         # float32 [N, w_dim]
    directions: dict[str, Any]   # name -> reenact.edit.Direction

    @property
    def num_anchors(self) -> int:
        return int(self.anchor_w.shape[0])

    @property
    def w_dim(self) -> int:
        return int(self.anchor_w.shape[1])


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class AnchorCache:
    """LRU of PersonAnchors by (person, version); small (anchors are N x w_dim floats)."""

    def __init__(self, repo: PersonRepository, capacity: int = 64) -> None:
        self.repo = repo
        self.capacity = capacity
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, int], PersonAnchors] = OrderedDict()

    def get(self, person_id: str, version: int) -> PersonAnchors:
        key = (person_id, version)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        anchors = self._load(person_id, version)
        with self._lock:
            self._items[key] = anchors
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return anchors

    def _load(self, person_id: str, version: int) -> PersonAnchors:
        from reenact.edit import load_anchors, semantic_directions

        raw = load_anchors(self.repo.read(person_id, version, "anchors.pt"))
        directions = dict(semantic_directions(raw))
        return PersonAnchors(person_id, version, raw, _np(raw["anchor_w"]).astype(np.float32), directions)

    def invalidate(self, person_id: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == person_id]:
                del self._items[key]


def parse_edits(edits, anchors: PersonAnchors, field: str = "edits") -> list[tuple[Any, float]]:
    """Request edits -> [(Direction, strength)]; one INVALID_ARGUMENT listing every bad edit."""
    from reenact.edit import w_direction

    out, bad = [], []
    if len(edits) > MAX_EDITS:
        raise InvalidInputError.for_field(field, f"at most {MAX_EDITS} edits")
    for i, e in enumerate(edits):
        f = f"{field}[{i}]"
        strength = float(e.strength)
        if not np.isfinite(strength) or abs(strength) > MAX_STRENGTH:
            bad.append(FieldViolation(f"{f}.strength", f"{strength} outside -{MAX_STRENGTH}..{MAX_STRENGTH}"))
        kind = e.WhichOneof("direction")
        if kind == "semantic":
            d = anchors.directions.get(e.semantic)
            if d is None:
                bad.append(FieldViolation(f"{f}.semantic", f"unknown direction {e.semantic!r}; this person has "
                                                           f"{sorted(anchors.directions)}"))
                continue
            out.append((d, strength))
        elif kind == "w_direction":
            try:
                vec = tensor_from_proto(e.w_direction, field=f"{f}.w_direction", shape=(anchors.w_dim,))
            except InvalidInputError as exc:
                bad += exc.violations
                continue
            vec = vec.astype(np.float32)
            if not np.isfinite(vec).all() or not np.any(vec):
                bad.append(FieldViolation(f"{f}.w_direction", "must be finite and non-zero"))
                continue
            out.append((w_direction(anchors.anchor_w, vec, f"w_direction[{i}]"), strength))
        else:
            bad.append(FieldViolation(f, "set either semantic or w_direction"))
    if bad:
        raise InvalidInputError("; ".join(f"{v.field}: {v.description}" for v in bad), violations=bad)
    return out


def render_ws(alpha: np.ndarray, delta: np.ndarray, ws: np.ndarray, anchors: PersonAnchors,
              edits: list[tuple[Any, float]]) -> np.ndarray:
    """W+ [B, num_ws, w_dim] to render: the optimizer's own ws without edits, else the edited latents."""
    if not edits:
        return np.ascontiguousarray(ws, dtype=np.float32)
    from reenact.edit import edited_ws

    out = edited_ws(np.asarray(alpha, np.float32), np.asarray(delta, np.float32), anchors.anchor_w, edits)
    return np.ascontiguousarray(_np(out), dtype=np.float32)
