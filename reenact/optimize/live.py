"""Live mode: frame in -> frame out with bounded latency (webcam-like use).

`LiveReenactor.process(targets)` optimizes whatever frames have arrived since the last call as ONE batch
(adaptive window: 1 frame when the GPU keeps up, up to `max_batch` when it falls behind) and renders
them; no look-ahead smoothing (keypoint_sigma 0), the amortized initializer's start refined by `steps`
Adam steps, warm-started from the previous batch. Latency = the wait for the batch in flight + one
batch's cost, so it stays bounded as long as one batch of `max_batch` frames costs less than
`max_batch` frame intervals. Frames older than `max_batch` behind are the caller's to drop.

`pad=True` (the default with `compile`): every batch is padded to `max_batch` with copies of its last
frame (results of the copies are dropped), so the compiled step sees one batch size only; at these sizes
the step is launch-bound, so the padding costs little GPU time.

`step="static"` (the default on CUDA, `step="auto"`): each batch runs reenact.optimize.graphed.StaticStep
instead of the engine: fixed buffers per batch size (1, 2, 4, ... up to max_batch; a batch is padded to
the next size), captured as one CUDA graph per size on first use and replayed; both the warm and the
fresh start are optimized and the better kept, and the image comes from the step's own forward (no
separate render). On the CPU `step="static"` runs the same code eagerly (also `graph=False` on CUDA). `step="engine"` (the default on
the CPU) runs ReenactmentOptimizer as before.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .engine import FrameResult, OptimizerOptions, ReenactmentOptimizer, Target, _Frame
from .graphed import StaticStep, WarmStart
from .person import PersonModel

STEPS = ("auto", "engine", "static")


class LiveReenactor:
    def __init__(self, person: PersonModel, options: OptimizerOptions | None = None, *, device="cpu",
                 max_batch: int = 8, bf16: bool = False, render: bool = True, compile: bool = False,
                 pad: bool | None = None, step: str = "auto", graph: bool | None = None) -> None:
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, got {step!r}")
        if options is not None and options.lip_warp > 0:
            raise ValueError("LiveReenactor renders its frames without the residual lip warp: use lip_warp 0 here "
                             "(the optimizer service and reenact.evaluation apply it)")
        options = dataclasses.replace(options or OptimizerOptions(steps=2), keypoint_sigma=0.0, latent_sigma=0.0,
                                      window=max(1, int(max_batch)), tolerance=0.0)
        self.max_batch = options.window
        self.engine = ReenactmentOptimizer(person, options, device=device, bf16=bf16, compile=compile)
        self.person, self.render, self.bf16 = person, render, self.engine.bf16
        self.device = self.engine.device
        if step == "auto":
            step = "static" if self.device.type == "cuda" and not compile else "engine"
        if step == "static" and compile:
            raise ValueError("step 'static' (CUDA graphs) and compile exclude each other")
        self.step, self.graph = step, graph  # graph: capture the static step (None: on CUDA)
        self.pad = compile if pad is None else bool(pad)
        self._next = 0  # the engine's own frame counter (padding copies take indices too)
        self._warm = WarmStart.zeros(self.engine.anchors.shape[0], self.engine.num_ws, self.device)
        self._static: dict[int, StaticStep] = {}
        self._last_image: np.ndarray | None = None

    def batch_size_for(self, n: int) -> int:
        """The static step's batch size for n frames: the next power of two, at most max_batch."""
        return min(self.max_batch, 1 << max(0, int(n) - 1).bit_length())

    def process(self, targets: list[Target]) -> list[tuple[FrameResult, np.ndarray | None]]:
        """Optimize (and render) `targets` (1..max_batch, in index order) now; results in the same order."""
        if not 1 <= len(targets) <= self.max_batch:
            raise ValueError(f"process takes 1..{self.max_batch} targets, got {len(targets)}")
        if self.step == "static":
            return self._process_static(targets)
        batch = list(targets) + ([targets[-1]] * (self.max_batch - len(targets)) if self.pad else [])
        own = {}
        done: list[FrameResult] = []
        for t in batch:
            own[self._next] = t.index if len(own) < len(targets) else None
            done += self.engine.push(Target(self._next, t.keypoints, t.crop_size, t.crop))
            self._next += 1
        results: list[FrameResult] = []
        for r in done + self.engine.flush():
            if own.get(r.index) is not None:
                results.append(dataclasses.replace(r, index=own[r.index]))
        images: list[np.ndarray | None] = [None] * len(results)
        if self.render and results:
            images = list(render_results(self.person, results, self.device, bf16=self.bf16))
        return list(zip(results, images, strict=True))

    def _process_static(self, targets: list[Target]) -> list[tuple[FrameResult, np.ndarray | None]]:
        frames = []
        for t in targets:
            raw, goal = self.engine.accept(t)
            frames.append(_Frame(t, goal, raw))
        faces = [f for f in frames if f.smoothed is not None]
        done: dict[int, tuple[FrameResult, np.ndarray | None]] = {}
        if faces:
            size = self.batch_size_for(len(faces))
            step = self._static.get(size)
            if step is None:
                step = self._static[size] = StaticStep(self.engine, size, self._warm, graph=self.graph)
            for r, img in step.run(faces, images=self.render):
                done[r.index] = (r, img)
        out = []
        for f in frames:  # in order: a frame without a face repeats the result (and image) before it
            index = int(f.target.index)
            if index in done:
                r, img = done[index]
            else:
                r = self.engine._repeat(index)
                img = self._last_image
                if self.render and img is None:
                    img = render_results(self.person, [r], self.device, bf16=self.bf16)[0]
            self.engine._last_result = r
            self._last_image = img if self.render else None
            out.append((r, img))
        return out


@torch.no_grad()
def render_results(person: PersonModel, results: list[FrameResult], device, *, bf16: bool = False,
                   batch: int = 16) -> np.ndarray:
    """uint8 frames [B, R, R, 3] of the results' W+ (one generator forward per `batch`)."""
    dev = torch.device(device)
    out = []
    for s in range(0, len(results), batch):
        ws = torch.from_numpy(np.stack([r.ws for r in results[s:s + batch]])).to(dev)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and dev.type == "cuda"):
            img = person.G.synthesis(ws, noise_mode="const")
        img = (img.float().clamp(-1, 1) * 127.5 + 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        out.append(img.cpu().numpy())
    return np.concatenate(out)
