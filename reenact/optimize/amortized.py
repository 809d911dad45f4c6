"""Amortized initialization: a small per-person regressor from driving keypoints to a point of P+.

The optimizer's expensive part is finding a good start: the paper optimizes every frame for hundreds of
steps. Enrollment already knows the person's generator and anchors, so it can learn the map

    keypoints [478, 3] (aligned-crop pixels at the generator's resolution)  ->  alpha [N]  (delta = 0)

once, and reenactment predicts the start point of every frame in one tiny forward pass; the optimizer
then refines it with a few steps.

Training data (all from the person's own generator, nothing else):
  * the anchors themselves: the self-scan frames' keypoints -> one-hot alpha (their optimized latents);
  * "augmented keypoints": random sparse convex mixes of anchors that are neighbours in W (1-3 anchors,
    flat Dirichlet weights), rendered by the generator and measured by the same differentiable MediaPipe
    net the optimizer uses; plus small Gaussian jitter of every input point.
The loss is in W space, ||A^T a_hat(pred) - A^T a_hat(true)||^2 / var(A), so two mixes that give the same
latent are equally good (the alpha of a sample is not unique). The output is a softmax over anchors: a
convex mix, inside P_beta by construction.

Input features: the (x, y) of all 478 points and their z, centred on the crop and divided by the
resolution, then standardized with the training set's mean / std (stored in the module).
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from reenact.models import pplus as pp

from . import losses
from .keypoints import NUM_POINTS

FILE_NAME = "init.pt"  # in a person version, beside generator.pt and anchors.pt
FORMAT = "reenact.amortized/1"


def keypoint_features(points: torch.Tensor, resolution: int) -> torch.Tensor:
    """[B, 478, 3] aligned-crop pixels at `resolution` -> [B, 1434] raw features (before standardizing)."""
    half = resolution / 2.0
    centred = torch.cat([points[..., :2] - half, points[..., 2:]], -1)  # no constant copied from the host
    return (centred / float(resolution)).reshape(points.shape[0], -1)


class KeypointRegressor(nn.Module):
    """MLP: standardized keypoint features -> alpha [N] (softmax, a convex mix of the anchors)."""

    def __init__(self, num_anchors: int, resolution: int, hidden: int = 512, depth: int = 3) -> None:
        super().__init__()
        self.num_anchors, self.resolution, self.hidden, self.depth = int(num_anchors), int(resolution), hidden, depth
        dim = NUM_POINTS * 3
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.Linear(dim, hidden), nn.SiLU()]
            dim = hidden
        layers.append(nn.Linear(dim, num_anchors))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(NUM_POINTS * 3))
        self.register_buffer("std", torch.ones(NUM_POINTS * 3))

    def logits(self, points: torch.Tensor) -> torch.Tensor:
        x = (keypoint_features(points, self.resolution) - self.mean) / self.std
        return self.mlp(x)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points [B, 478, 3] -> alpha [B, N] (rows sum to 1)."""
        return torch.softmax(self.logits(points.float()), dim=-1)

    # --------------------------------------------------------------------------------- persistence

    def to_bytes(self, stats: dict | None = None) -> bytes:
        buf = io.BytesIO()
        torch.save({"format": FORMAT, "num_anchors": self.num_anchors, "resolution": self.resolution,
                    "hidden": self.hidden, "depth": self.depth,
                    "state": {k: v.detach().cpu() for k, v in self.state_dict().items()},
                    "stats": dict(stats or {})}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, device="cpu") -> KeypointRegressor:
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format {raw.get('format') if isinstance(raw, dict) else None!r})")
        model = cls(raw["num_anchors"], raw["resolution"], raw["hidden"], raw["depth"])
        model.load_state_dict(raw["state"])
        return model.to(device).eval().requires_grad_(False)


@dataclass
class TrainStats:
    samples: int
    steps: int
    seconds: float
    render_seconds: float
    train_w_error: float      # final mean W-space error on the training set (relative to var(A))
    heldout_w_error: float    # on the last 10% of the rendered samples, never trained on
    nearest_w_error: float    # the same held-out samples' error of the nearest-anchor start, for scale

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _mixes(anchor_w: torch.Tensor, count: int, gen: torch.Generator, neighbours: int = 6) -> torch.Tensor:
    """`count` sparse convex mixes [count, N]: an anchor plus 0-2 of its W neighbours, flat Dirichlet."""
    n = anchor_w.shape[0]
    d = torch.cdist(anchor_w, anchor_w)
    near = d.argsort(dim=1)[:, 1:neighbours + 1] if n > 1 else torch.zeros(n, 0, dtype=torch.long)
    out = torch.zeros(count, n)
    for i in range(count):
        a = int(torch.randint(n, (1,), generator=gen))
        k = int(torch.randint(min(3, near.shape[1] + 1), (1,), generator=gen)) + 1
        others = near[a][torch.randperm(near.shape[1], generator=gen)[:k - 1]] if k > 1 else near[a][:0]
        idx = torch.cat([torch.tensor([a]), others])
        e = -torch.log(torch.rand(len(idx), generator=gen).clamp_min(1e-12))
        out[i, idx] = e / e.sum()
    return out


@torch.no_grad()
def render_samples(G, net, anchor_w: torch.Tensor, alpha: torch.Tensor, *, batch: int = 32,
                   should_stop: Callable[[], bool] = lambda: False) -> torch.Tensor:
    """Keypoints [S, 478, 3] of the generator's images of the P+ points (alpha, delta = 0)."""
    dev = anchor_w.device
    res = int(G.img_resolution)
    affine = losses.face_affine(res, dev)
    num_ws = int(G.num_ws)
    out = []
    for s in range(0, alpha.shape[0], batch):
        if should_stop():
            from reenact.errors import CancelledError

            raise CancelledError("enrollment cancelled")
        a = alpha[s:s + batch].to(dev)
        ws = pp.combine(pp.coefficients(a, a.new_zeros(a.shape[0], num_ws, a.shape[1])), anchor_w)
        images = G.synthesis(ws, noise_mode="const").float()
        out.append(losses.generated_keypoints(net, images, affine).float())
    return torch.cat(out)


def _w_error(alpha_pred: torch.Tensor, alpha_true: torch.Tensor, anchor_w: torch.Tensor, var: torch.Tensor):
    zero = alpha_pred.new_zeros(alpha_pred.shape[0], 1, alpha_pred.shape[1])  # delta 0, one layer (all equal)
    wp = pp.combine(pp.coefficients(alpha_pred, zero), anchor_w)
    wt = pp.combine(pp.coefficients(alpha_true, zero), anchor_w)
    return (wp - wt).square().mean((-2, -1)) / var


def train_regressor(G, net, anchor_w: torch.Tensor, anchor_points: torch.Tensor, *, samples: int = 2048,
                    steps: int = 1500, batch: int = 256, lr: float = 2e-3, hidden: int = 512, jitter_px: float = 0.3,
                    seed: int = 0, render_batch: int = 32, should_stop: Callable[[], bool] = lambda: False,
                    progress: Callable[[int, int], None] = lambda s, n: None) -> tuple[KeypointRegressor, TrainStats]:
    """Fit a KeypointRegressor for one person (see the module docstring). Runs on anchor_w's device."""
    t0 = time.perf_counter()
    dev = anchor_w.device
    anchor_w = anchor_w.float()
    n, res = anchor_w.shape[0], int(G.img_resolution)
    gen = torch.Generator().manual_seed(seed)
    alpha_mix = _mixes(anchor_w.cpu(), samples, gen)
    kp_mix = render_samples(G, net, anchor_w, alpha_mix, batch=render_batch, should_stop=should_stop)
    render_s = time.perf_counter() - t0
    n_hold = max(1, samples // 10)
    kp_train = torch.cat([anchor_points.to(dev).float(), kp_mix[:-n_hold]])
    alpha_train = torch.cat([torch.eye(n), alpha_mix[:-n_hold]]).to(dev)
    kp_hold, alpha_hold = kp_mix[-n_hold:], alpha_mix[-n_hold:].to(dev)

    model = KeypointRegressor(n, res, hidden=hidden).to(dev)
    feats = keypoint_features(kp_train, res)
    model.mean.copy_(feats.mean(0))
    model.std.copy_(feats.std(0).clamp_min(1e-3))
    var = anchor_w.var(0).mean().clamp_min(1e-8)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    tgen = torch.Generator(device=dev).manual_seed(seed)
    m = kp_train.shape[0]
    loss = torch.zeros((), device=dev)
    for step in range(steps):
        if should_stop() and step % 50 == 0:
            from reenact.errors import CancelledError

            raise CancelledError("enrollment cancelled")
        idx = torch.randint(m, (min(batch, m),), device=dev, generator=tgen)
        kp = kp_train[idx]
        kp = kp + torch.randn(kp.shape, device=dev, generator=tgen) * jitter_px * kp.new_tensor([1.0, 1.0, 0.5])
        loss = _w_error(model(kp), alpha_train[idx], anchor_w, var).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            progress(step, steps)
    model.eval().requires_grad_(False)
    with torch.no_grad():
        train_err = float(_w_error(model(kp_train), alpha_train, anchor_w, var).mean())
        hold_err = float(_w_error(model(kp_hold), alpha_hold, anchor_w, var).mean())
        near = nearest_alpha(kp_hold, anchor_points.to(dev).float())
        near_err = float(_w_error(near, alpha_hold, anchor_w, var).mean())
    progress(steps, steps)
    stats = TrainStats(samples, steps, time.perf_counter() - t0, render_s, train_err, hold_err, near_err)
    return model, stats


def nearest_alpha(points: torch.Tensor, anchor_points: torch.Tensor, subset: str = "default") -> torch.Tensor:
    """One-hot alpha [B, N] of the anchor nearest to each of points [B, 478, 3] (the engine's metric)."""
    from .keypoints import get_subset

    sub = get_subset(subset)
    b, n = points.shape[0], anchor_points.shape[0]
    a = anchor_points.unsqueeze(0).expand(b, -1, -1, -1).reshape(b * n, NUM_POINTS, 3)
    t = points.unsqueeze(1).expand(-1, n, -1, -1).reshape(b * n, NUM_POINTS, 3)
    idx = losses.keypoint_loss(a, t, sub).reshape(b, n).argmin(1)
    return torch.nn.functional.one_hot(idx, n).float()


def describe(stats: TrainStats) -> str:
    gain = stats.nearest_w_error / stats.heldout_w_error if stats.heldout_w_error > 0 else math.inf
    return (f"amortized init: {stats.samples} rendered samples, {stats.steps} steps, {stats.seconds:.1f} s; "
            f"held-out W error {stats.heldout_w_error:.4f} vs nearest anchor {stats.nearest_w_error:.4f} "
            f"({gain:.1f}x lower)")


__all__ = ["FILE_NAME", "KeypointRegressor", "TrainStats", "describe", "keypoint_features", "nearest_alpha",
           "render_samples", "train_regressor"]
