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
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .engine import FrameResult, OptimizerOptions, ReenactmentOptimizer, Target
from .person import PersonModel


class LiveReenactor:
    def __init__(self, person: PersonModel, options: OptimizerOptions | None = None, *, device="cpu",
                 max_batch: int = 8, bf16: bool = False, render: bool = True, compile: bool = False,
                 pad: bool | None = None) -> None:
        options = dataclasses.replace(options or OptimizerOptions(steps=2), keypoint_sigma=0.0,
                                      window=max(1, int(max_batch)), tolerance=0.0)
        self.max_batch = options.window
        self.engine = ReenactmentOptimizer(person, options, device=device, bf16=bf16, compile=compile)
        self.person, self.render, self.bf16 = person, render, self.engine.bf16
        self.device = self.engine.device
        self.pad = compile if pad is None else bool(pad)
        self._next = 0  # the engine's own frame counter (padding copies take indices too)

    def process(self, targets: list[Target]) -> list[tuple[FrameResult, np.ndarray | None]]:
        """Optimize (and render) `targets` (1..max_batch, in index order) now; results in the same order."""
        if not 1 <= len(targets) <= self.max_batch:
            raise ValueError(f"process takes 1..{self.max_batch} targets, got {len(targets)}")
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
