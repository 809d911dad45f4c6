"""The live step with static shapes, replayed as one CUDA graph (issue 7, live mode).

At the batch sizes of live use the eager step is bound by kernel launches, not arithmetic
(docs/BENCHMARKS.md "Where a step goes": a full step costs the same at batch 1 and 16). `StaticStep` does
one live batch (the frames that arrived) as a fixed sequence of tensor operations on fixed buffers, so
that on CUDA it can be captured once per batch size and replayed with a single launch:

1. Two starts per frame: the warm start (the previous batch's last result; before there is one, the
   start below) and the engine's fresh start (the amortized initializer's prediction for init
   'regressor', the nearest anchor for init 'anchor'), i.e. 2 x batch points of P+.
2. `steps` evaluations of the engine's loss (ReenactmentOptimizer._terms_images: the same terms,
   weights and masks) with an Adam update between two evaluations (the engine's two learning rates and
   linear decay, torch.optim.Adam's arithmetic); every point keeps the best state it visited.
3. Per frame, the best of its two chains: alpha, delta, W+, the loss terms, the keypoint error, and the
   IMAGE generated at that point during its evaluation (uint8), so no separate render.

Differences from the eager engine, on purpose: the engine picks one start per frame with an extra forward
and optimizes it; here both starts are optimized side by side (the doubled batch costs little while the
step is launch-bound) and the result is the best point of either, so its loss is never above the engine's
start choice. The engine's last Adam update (whose point is never evaluated) is not done. Init 'anchor'
gets no long first-frame optimization (the engine's `first_frame_steps`): every batch gets `steps`.

Off CUDA (or graph=False) the same code runs eagerly; the unit tests check it against the engine there.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from reenact.models import pplus as pp

from .engine import LOSS_NAMES, FrameResult, ReenactmentOptimizer, _Batch, _Best, _Frame, _keep_best
from .keypoints import NUM_POINTS

_CAPTURE_LOCK = threading.Lock()  # one capture at a time per process (streams run in gRPC worker threads)
# CUDA graphs of dropped steps wait here and are destroyed under _CAPTURE_LOCK, never during a capture.
# A finished stream's engine and step form a reference cycle that Python's cyclic GC frees in whatever
# thread it runs, possibly the thread of another stream's capture (many allocations, so GC runs there):
# destroying a graph (its exec and memory pool) inside a capture invalidates it. In the optimizer service,
# 3-step captures failed on an H100 (cudaErrorStreamCaptureInvalidated) after an earlier stream; with
# this retirement the same runs pass there (docs/BENCHMARKS.md "Live mode").
_RETIRED: list[list] = []


def _retire(holder: list) -> None:
    """weakref.finalize callback of a StaticStep (any thread): hand its graph over, do not destroy it here."""
    if holder:
        _RETIRED.append(list(holder))
        holder.clear()


def _drain_retired_locked() -> None:
    if _RETIRED:
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()  # no replay of a retired graph still running
        _RETIRED.clear()


def release_graphs() -> None:
    """Destroy the CUDA graphs of dropped static steps now (serialized with captures)."""
    with _CAPTURE_LOCK:
        _drain_retired_locked()


PACKED = ("alpha", "delta", "ws", "terms", "error", "pick")  # the fields of the packed output row, in order
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as the engine uses them
ADAM_EPS = 1e-8


class _Point:
    """A batch of P+ points as plain tensors (what ReenactmentOptimizer._terms_images reads)."""

    def __init__(self, alpha: torch.Tensor, delta: torch.Tensor, anchors: torch.Tensor, beta: float) -> None:
        self.alpha, self.delta, self.anchors, self.beta = alpha, delta, anchors, beta

    def coefficients(self) -> torch.Tensor:
        return pp.coefficients(self.alpha, self.delta, beta=self.beta)

    def ws(self) -> torch.Tensor:
        return pp.combine(self.coefficients(), self.anchors)

    def l_delta(self) -> torch.Tensor:
        return pp.l_delta(self.delta)

    def l_sum(self) -> torch.Tensor:
        return pp.l_sum(self.alpha, self.delta)


@dataclass
class WarmStart:
    """The warm start shared by every batch size's step of one stream (device tensors)."""

    alpha: torch.Tensor   # [N]
    delta: torch.Tensor   # [num_ws, N]
    valid: torch.Tensor   # bool [] : False until the first batch is done
    started: bool = False  # host copy of `valid` (read without a device sync)

    @classmethod
    def zeros(cls, num_anchors: int, num_ws: int, device) -> WarmStart:
        return cls(torch.zeros(num_anchors, device=device), torch.zeros(num_ws, num_anchors, device=device),
                   torch.zeros((), dtype=torch.bool, device=device))


def adam_update(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, lr: float,
                step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One torch.optim.Adam update (no weight decay, not amsgrad), out of place: (param, m, v) after
    `step` (1-based) updates. Written out so that it is part of the captured graph with constant lr."""
    b1, b2 = ADAM_BETAS
    m = m * b1 + grad * (1 - b1)
    v = v * b2 + grad * grad * (1 - b2)
    denom = v.sqrt() / math.sqrt(1 - b2 ** step) + ADAM_EPS
    return param - (lr / (1 - b1 ** step)) * m / denom, m, v


class StaticStep:
    """One live batch of exactly `batch` frames for `engine`'s person and options (see the module docstring).

    `run(frames)` takes 1..batch frames (shorter lists are padded with copies of the last frame, whose
    results are dropped) and returns their (FrameResult, image uint8 [R, R, 3]) in order, and moves the
    shared warm start to the last frame's result."""

    def __init__(self, engine: ReenactmentOptimizer, batch: int, warm: WarmStart, *, graph: bool | None = None) -> None:
        if engine.init not in ("regressor", "anchor"):
            raise ValueError(f"the static live step needs init 'regressor' or 'anchor', not {engine.init!r}")
        self.engine, self.batch, self.warm = engine, int(batch), warm
        o = engine.options
        self.steps = int(o.steps)
        dev, r, b = engine.device, engine.resolution, self.batch
        self.graph = (dev.type == "cuda") if graph is None else bool(graph)
        if self.graph and dev.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.photometric = o.mouth_weight > 0 or o.eye_weight > 0
        self.targets = torch.zeros(b, NUM_POINTS, 3, device=dev)
        self.pixels = torch.zeros(b, 3, r, r, device=dev) if self.photometric else None
        self.mouth = torch.zeros(b, r, r, device=dev) if self.photometric else None
        self.eye = torch.zeros(b, r, r, device=dev) if self.photometric else None
        # Host side: inputs are written into staging buffers and outputs read from them, pinned on CUDA (one
        # asynchronous copy each way per tensor, one device sync per batch; reused, so results are copied out).
        pin = dev.type == "cuda"
        self._in = {k: torch.zeros(v.shape, dtype=v.dtype, pin_memory=pin) for k, v in self._inputs().items()}
        self._host: dict[str, torch.Tensor] | None = None  # pinned copies of the packed outputs (first run)
        n_anchors, w_dim = engine.anchors.shape
        shapes = {"alpha": (n_anchors,), "delta": (engine.num_ws, n_anchors), "ws": (engine.num_ws, w_dim),
                  "terms": (len(LOSS_NAMES),), "error": (), "pick": ()}
        self._layout = [(k, shapes[k]) for k in PACKED]  # per frame: the packed row's fields and shapes
        self._graph: torch.cuda.CUDAGraph | None = None
        self._out: dict[str, torch.Tensor] | None = None
        self._holder: list = []  # the graph and its outputs, retired (not destroyed) when this step goes
        weakref.finalize(self, _retire, self._holder)

    def close(self) -> None:
        """Drop the CUDA graph (destroyed under the capture lock); the step captures again if run later."""
        self._graph = self._out = None
        _retire(self._holder)
        if _RETIRED:
            release_graphs()

    def _inputs(self) -> dict[str, torch.Tensor]:
        bufs = {"targets": self.targets}
        if self.photometric:
            bufs.update(pixels=self.pixels, mouth=self.mouth, eye=self.eye)
        return bufs

    # ------------------------------------------------------------------------------------- the step

    def _fresh_start(self) -> torch.Tensor:
        """alpha [B, N] of the engine's init mode for the static targets (device ops only)."""
        e = self.engine
        if e.init == "regressor":
            return e.person.initializer(self.targets)
        nearest = e.nearest_anchors(self.targets)  # [B] on the device
        n = e.anchors.shape[0]
        return torch.zeros(self.batch, n, device=e.device).scatter_(1, nearest[:, None], 1.0)

    def _forward(self) -> dict[str, torch.Tensor]:
        e, o, b = self.engine, self.engine.options, self.batch
        with torch.no_grad():
            fresh = self._fresh_start()
            valid = self.warm.valid
            warm_alpha = torch.where(valid, self.warm.alpha.expand(b, -1), fresh)
            warm_delta = self.warm.delta.expand(b, -1, -1) * valid.to(fresh.dtype)
            alpha = torch.cat([warm_alpha, fresh])                                # [2B, N]
            delta = torch.cat([warm_delta, torch.zeros_like(warm_delta)])         # [2B, num_ws, N]
        batch = _Batch(*(None if t is None else torch.cat([t, t]) for t in (self.targets, self.pixels,
                                                                            self.mouth, self.eye)))
        lrs = (o.learning_rate, o.learning_rate * o.delta_lr_scale)
        moments = [torch.zeros_like(alpha), torch.zeros_like(alpha), torch.zeros_like(delta), torch.zeros_like(delta)]
        best: _Best | None = None
        best_images = None
        for s in range(self.steps):
            last = s == self.steps - 1
            a = alpha.detach().requires_grad_(not last)
            d = delta.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                terms, error, images = e._terms_images(_Point(a, d, e.anchors, o.beta), batch)
            previous = None if best is None else best.total
            best = _keep_best(best, a, d, terms, error)
            with torch.no_grad():
                images = images.detach()
                best_images = images if previous is None else torch.where(
                    (best.total < previous)[:, None, None, None], images, best_images)
            if last:
                break
            grad_a, grad_d = torch.autograd.grad(terms["total"].sum(), [a, d])
            frac = 1.0 - (1.0 - o.lr_final) * s / max(1, self.steps - 1)
            with torch.no_grad():
                alpha, moments[0], moments[1] = adam_update(a, grad_a, moments[0], moments[1], lrs[0] * frac, s + 1)
                delta, moments[2], moments[3] = adam_update(d, grad_d, moments[2], moments[3], lrs[1] * frac, s + 1)
        with torch.no_grad():
            pick = best.total.reshape(2, b).argmin(0)                              # 0: warm chain, 1: fresh
            rows = pick * b + torch.arange(b, device=pick.device)
            out_alpha, out_delta = best.alpha[rows], best.delta[rows]
            image = (best_images[rows].clamp(-1, 1) * 127.5 + 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
            out = {"alpha": out_alpha, "delta": out_delta,
                   "ws": pp.combine(pp.coefficients(out_alpha, out_delta, beta=o.beta), e.anchors),
                   "terms": torch.stack([best.terms[k][rows] for k in LOSS_NAMES], 1),
                   "error": best.error[rows], "image": image.contiguous(), "pick": pick}
            # every per-frame number in one float32 row per frame: one device-to-host copy (_unpack)
            out["packed"] = torch.cat([out[k].float().reshape(b, -1) for k in PACKED], 1)
            return out

    def _capture(self) -> None:
        with _CAPTURE_LOCK:
            self._capture_locked()

    def _capture_locked(self) -> None:
        _drain_retired_locked()
        side = torch.cuda.Stream(self.engine.device)
        side.wait_stream(torch.cuda.current_stream(self.engine.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the graph: cuDNN/cuBLAS choices, autograd's first pass
                self._forward()
        torch.cuda.current_stream(self.engine.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA calls (a finished stream's engine and graph being freed, another
        # stream replaying its graph) must not invalidate this capture. In the optimizer service the default
        # 'global' mode failed a 3-step capture once on an H100 (cudaErrorStreamCaptureInvalidated).
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._out = self._forward()
        self._graph = graph
        self._holder[:] = [graph, self._out]

    # ---------------------------------------------------------------------------------------- a batch

    def _load(self, frames: list[_Frame]) -> None:
        """Write the frames (padded with copies of the last one) into the staging buffers, then copy them to
        the device buffers (asynchronously from pinned memory on CUDA)."""
        n = len(frames)
        host = self._in
        targets = host["targets"].numpy()
        targets[:n] = np.stack([f.smoothed for f in frames])
        targets[n:] = targets[n - 1]
        if self.photometric:
            pixels, mouth, eye = host["pixels"], host["mouth"].numpy(), host["eye"].numpy()
            for row, f in enumerate(frames):
                pix, mouth[row], eye[row] = self.engine._pixel_inputs(f)
                pixels[row].copy_(pix)
            pixels[n:] = pixels[n - 1]
            mouth[n:], eye[n:] = mouth[n - 1], eye[n - 1]
        for name, buf in self._inputs().items():
            buf.copy_(host[name], non_blocking=True)

    def _unpack(self, out: dict[str, torch.Tensor], n: int, images: bool) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The first n frames' outputs on the host, as arrays of their own (the buffers are reused)."""
        packed, image = out["packed"], out["image"]
        if packed.is_cuda:
            if self._host is None:
                self._host = {"packed": torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True),
                              "image": torch.empty(image.shape, dtype=image.dtype, pin_memory=True)}
            self._host["packed"].copy_(packed, non_blocking=True)
            if images:
                self._host["image"].copy_(image, non_blocking=True)
            torch.cuda.current_stream(packed.device).synchronize()  # the one host sync of a batch
            packed, image = self._host["packed"], self._host["image"]
        rows = packed[:n].detach().numpy().copy()
        pics = image[:n].detach().numpy().copy() if images else None
        fields, start = {}, 0
        for k, shape in self._layout:
            width = math.prod(shape)
            fields[k] = rows[:, start:start + width].reshape((n, *shape))
            start += width
        assert start == rows.shape[1], (start, rows.shape)
        return fields, pics

    def run(self, frames: list[_Frame], *, images: bool = True) -> list[tuple[FrameResult, np.ndarray | None]]:
        n = len(frames)
        if not 1 <= n <= self.batch or any(f.smoothed is None for f in frames):
            raise ValueError(f"run takes 1..{self.batch} frames with a face, got {n}")
        self._load(frames)
        if self.graph:
            if self._graph is None:
                self._capture()
            self._graph.replay()
            out = self._out
        else:
            out = self._forward()
        self.warm.alpha.copy_(out["alpha"][n - 1])
        self.warm.delta.copy_(out["delta"][n - 1])
        self.warm.valid.fill_(True)
        had_warm, self.warm.started = self.warm.started, True
        fields, pics = self._unpack(out, n, images)
        alpha, delta, ws, terms, error = (fields[k] for k in ("alpha", "delta", "ws", "terms", "error"))
        pick = fields["pick"].astype(np.int64)
        e = self.engine
        warm_picks = int((pick == 0).sum()) if had_warm else 0
        e.stats["warm_starts"] += warm_picks
        e.stats[f"{e.init}_starts"] += n - warm_picks
        results = []
        spread = _np_effective_anchors(alpha, delta, self.engine.options.beta)
        for i, f in enumerate(frames):
            r = FrameResult(int(f.target.index), ws[i], alpha[i], delta[i],
                            {k: float(terms[i, j]) for j, k in enumerate(LOSS_NAMES)}, self.steps, float(error[i]),
                            anchors_eff=float(spread[i]))
            results.append((r, None if pics is None else pics[i]))
        e._last_result = results[-1][0]
        return results


def _np_effective_anchors(alpha: np.ndarray, delta: np.ndarray, beta: float) -> np.ndarray:
    """pp.effective_anchors of host arrays alpha [B, N], delta [B, num_ws, N] -> [B]."""
    return pp.effective_anchors(torch.from_numpy(alpha), torch.from_numpy(delta), beta=beta).numpy()
