"""Temporal Gaussian smoothing of per-frame vectors (alignment c, x, y; keypoints), offline or streaming.

Weights: w(k) = exp(-k^2 / (2 sigma^2)) for |k| <= radius = ceil(3 sigma), sigma in frames (positions
in the sequence, not frame indices: a skipped frame number does not widen the window). Each output is
the weighted mean over the frames of its window that HAVE a value (a face); the weights are
renormalized over those frames, so the ends of a sequence and gaps are not pulled towards zero. A
frame without a value gets no output (None offline: NaN). sigma = 0 returns the values unchanged.

`StreamingSmoother` emits frame t once frame t + radius arrived (or on `flush`) and computes exactly
the same numbers as `smooth_offline`: both call `window_mean` on the same window in the same order.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np


def kernel_radius(sigma: float) -> int:
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return int(math.ceil(3.0 * sigma)) if sigma > 0 else 0


def gaussian_weights(sigma: float) -> np.ndarray:
    """Unnormalized weights for offsets -radius..radius."""
    r = kernel_radius(sigma)
    if r == 0:
        return np.ones(1)
    k = np.arange(-r, r + 1, dtype=np.float64)
    return np.exp(-0.5 * (k / sigma) ** 2)


def window_mean(values: list[np.ndarray | None], weights: np.ndarray) -> np.ndarray | None:
    """Weighted mean of the non-None values (weights renormalized over them); None if there are none."""
    acc = None
    total = 0.0
    for v, w in zip(values, weights, strict=True):
        if v is None:
            continue
        acc = w * v if acc is None else acc + w * v
        total += w
    return None if acc is None else acc / total


def smooth_offline(values: np.ndarray, valid: np.ndarray | None = None, sigma: float = 2.0) -> np.ndarray:
    """Smooth [T, ...] along axis 0; rows where `valid` is False are skipped and returned as NaN."""
    arr = np.asarray(values, dtype=np.float64)
    t_len = arr.shape[0]
    ok = np.ones(t_len, bool) if valid is None else np.asarray(valid, bool)
    if ok.shape != (t_len,):
        raise ValueError(f"valid must have shape ({t_len},), got {ok.shape}")
    rows = [arr[t] if ok[t] else None for t in range(t_len)]
    weights = gaussian_weights(sigma)
    r = len(weights) // 2
    out = np.full(arr.shape, np.nan)
    for t in range(t_len):
        if not ok[t]:
            continue
        lo, hi = max(0, t - r), min(t_len, t + r + 1)
        out[t] = window_mean(rows[lo:hi], weights[lo - (t - r):hi - (t - r)])
    return out


class StreamingSmoother:
    """Push values (or None for a frame without a face) in order; get (payload, smoothed) pairs back.

    Frame t is emitted once frame t + radius has been pushed; `flush()` emits the rest. The payload is
    any object the caller wants back with the frame (e.g. its index and pixels).
    """

    def __init__(self, sigma: float = 2.0) -> None:
        self.sigma = float(sigma)
        self.weights = gaussian_weights(self.sigma)
        self.radius = len(self.weights) // 2
        self._buf: deque[tuple[np.ndarray | None, Any]] = deque()
        self._first = 0  # position of self._buf[0]
        self._pushed = 0  # positions pushed so far
        self._next = 0  # next position to emit

    def push(self, value: np.ndarray | None, payload: Any = None) -> list[tuple[Any, np.ndarray | None]]:
        v = None if value is None else np.asarray(value, dtype=np.float64)
        self._buf.append((v, payload))
        self._pushed += 1
        out = []
        while self._next + self.radius < self._pushed:
            out.append(self._emit())
        return out

    def flush(self) -> list[tuple[Any, np.ndarray | None]]:
        out = []
        while self._next < self._pushed:
            out.append(self._emit())
        self._buf.clear()
        self._first = self._pushed = self._next = 0
        return out

    @property
    def pending(self) -> int:
        return self._pushed - self._next

    def _emit(self) -> tuple[Any, np.ndarray | None]:
        t, r = self._next, self.radius
        lo, hi = max(0, t - r), min(self._pushed, t + r + 1)
        window = [self._buf[p - self._first][0] for p in range(lo, hi)]
        payload = self._buf[t - self._first][1]
        value = None if window[t - lo] is None else window_mean(window, self.weights[lo - (t - r):hi - (t - r)])
        self._next += 1
        while self._first < self._next - r:  # keep the radius frames before the next one to emit
            self._buf.popleft()
            self._first += 1
        return payload, value
