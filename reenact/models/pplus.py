"""The personalized latent space P+ (MyStyle; METHOD.md section 6).

Anchors A [N, w_dim] (one W code per selected frame). A point of P+ is (alpha [N], delta [num_ws, N]):

    A_raw = alpha + delta                                  # [num_ws, N] (alpha broadcast to every layer)
    A_dil = softplus(A_raw + beta; sharpness) - beta      # entries >= about -beta (the dilation)
    A_hat = A_dil / A_dil.sum(-1, keepdim=True)           # each layer's weights sum to 1
    W+    = A_hat @ A                                     # [num_ws, w_dim] -> G.synthesis

Every function takes leading batch dimensions: alpha [..., N], delta [..., num_ws, N], so B frames
optimize as one batch (alpha [B, N], delta [B, num_ws, N] -> W+ [B, num_ws, w_dim]).

Entries of A_hat are >= -beta / sum(A_dil row), so >= -beta wherever the raw row sums to >= 1 (the
dilation never lowers a row sum; L_sum keeps raw rows near 1). The dilation also leaks
softplus(beta) - beta (= 4.9e-4 at beta 0.03, sharpness 100) to every zero coefficient, so a one-hot
alpha gives W+ = the anchor only up to a mix of about N * 4.9e-4 of the others (5% at N = 100).

Regularizers (per batch element): L_delta = 10 * sum over the first 12 layers of ||delta_l||_2;
L_sum = 10 * mean_l (sum_i A_raw[l, i] - 1)^2. `anchor_entropy` (the optimizer's optional
`alpha_entropy` term) measures how many anchors a point blends. Edits: gamma = (A A^T)^-1 A d for a W direction d,
alpha' = alpha + theta * gamma, kept inside P_beta = {rows x: x / sum(x) >= -beta}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BETA = 0.03
SHARPNESS = 100.0
DELTA_LAYERS = 12
REG_WEIGHT = 10.0


def init_alpha(num_anchors: int, *, index: int | Sequence[int] | torch.Tensor | None = None,
               smoothing: float = 0.0, batch_size: int | None = None) -> torch.Tensor:
    """Uniform 1/N, or one-hot at `index` mixed with uniform by `smoothing`: (1 - s) onehot + s / N.

    `index` may be one int (shared) or one per batch element; `batch_size` adds a leading dimension.
    """
    uniform = torch.full([num_anchors], 1.0 / num_anchors)
    if index is None:
        alpha = uniform if batch_size is None else uniform.expand(batch_size, -1)
        return alpha.clone()
    idx = torch.as_tensor(index, dtype=torch.long)
    if batch_size is not None and idx.ndim == 0:
        idx = idx.expand(batch_size)
    if batch_size is not None and idx.numel() != batch_size:
        raise ValueError(f"{idx.numel()} anchor indices for batch_size {batch_size}")
    if ((idx < 0) | (idx >= num_anchors)).any():
        raise ValueError(f"anchor index out of range [0, {num_anchors})")
    onehot = F.one_hot(idx, num_anchors).float()
    return (1 - smoothing) * onehot + smoothing * uniform


def raw_coefficients(alpha: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """A_raw = alpha (shared by all layers) + delta: [..., num_ws, N]."""
    return alpha.unsqueeze(-2) + delta


def dilate(raw: torch.Tensor, *, beta: float = BETA, sharpness: float = SHARPNESS) -> torch.Tensor:
    """softplus(raw + beta; sharpness) - beta: a smooth floor at about -beta."""
    return F.softplus(raw + beta, beta=sharpness) - beta


def coefficients(alpha: torch.Tensor, delta: torch.Tensor, *, beta: float = BETA,
                 sharpness: float = SHARPNESS) -> torch.Tensor:
    """A_hat [..., num_ws, N]: dilated raw coefficients, each layer's row normalized to sum 1."""
    dil = dilate(raw_coefficients(alpha, delta), beta=beta, sharpness=sharpness)
    return dil / dil.sum(dim=-1, keepdim=True)


def combine(coeffs: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """W+ = A_hat @ A: [..., num_ws, N] x [N, w_dim] -> [..., num_ws, w_dim]."""
    return coeffs @ anchors.to(coeffs.dtype)


def l_delta(delta: torch.Tensor, *, num_layers: int = DELTA_LAYERS, weight: float = REG_WEIGHT) -> torch.Tensor:
    """weight * sum over the first `num_layers` layers of ||delta_l||_2, per batch element."""
    return weight * torch.linalg.vector_norm(delta[..., :num_layers, :], dim=-1).sum(dim=-1)


def l_sum(alpha: torch.Tensor, delta: torch.Tensor, *, weight: float = REG_WEIGHT) -> torch.Tensor:
    """weight * mean over layers of (sum_i A_raw[l, i] - 1)^2, per batch element."""
    return weight * (raw_coefficients(alpha, delta).sum(dim=-1) - 1).square().mean(dim=-1)


def anchor_entropy(coeffs: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """Mean over layers of the entropy (nats) of each layer's mix, per batch element: [..., num_ws, N] -> [...].

    The negative entries the dilation allows count as 0 (the mix is renormalized over the positive ones).
    0 for one anchor, log N for the uniform mix; exp of it is the effective number of anchors mixed.
    """
    p = coeffs.clamp_min(0)
    p = p / p.sum(dim=-1, keepdim=True).clamp_min(eps)
    return -(p * (p + eps).log()).sum(dim=-1).mean(dim=-1)


@torch.no_grad()
def effective_anchors(alpha: torch.Tensor, delta: torch.Tensor, *, beta: float = BETA) -> torch.Tensor:
    """exp(entropy) of a point's mix, averaged over layers: how many anchors it blends (1 = one anchor)."""
    return anchor_entropy(coefficients(alpha, delta, beta=beta)).exp()


# ----------------------------------------------------------------------------------------------------
# Edits


def edit_direction(anchors: torch.Tensor, direction: torch.Tensor, *, rcond: float = 1e-6) -> torch.Tensor:
    """gamma [N] with A^T gamma closest to d (= (A A^T)^-1 A d when A A^T is invertible), via pinv."""
    a = anchors.detach().double()
    gamma = torch.linalg.pinv(a.T, rtol=rcond) @ direction.detach().double().reshape(-1)
    return gamma.to(anchors.dtype)


def in_pbeta(alpha: torch.Tensor, delta: torch.Tensor | None = None, *, beta: float = BETA,
             atol: float = 1e-6) -> torch.Tensor:
    """Per batch element: every layer's raw row x has sum(x) > 0 and x / sum(x) >= -beta."""
    raw = alpha.unsqueeze(-2) if delta is None else raw_coefficients(alpha, delta)
    total = raw.sum(dim=-1, keepdim=True)
    ok = (total > 0) & (raw / total.clamp_min(1e-12) >= -beta - atol).all(dim=-1, keepdim=True)
    return ok.squeeze(-1).all(dim=-1)


def project_rows(x: torch.Tensor, *, beta: float = BETA) -> torch.Tensor:
    """Euclidean projection of each row onto {sum(x) = 1, x >= -beta} (shifted simplex, exact)."""
    n = x.shape[-1]
    y = x + beta
    radius = 1 + n * beta
    u = y.sort(dim=-1, descending=True).values
    css = u.cumsum(dim=-1) - radius
    ks = torch.arange(1, n + 1, device=x.device, dtype=x.dtype)
    rho = (u - css / ks > 0).sum(dim=-1, keepdim=True) - 1
    tau = css.gather(-1, rho) / (rho + 1).to(x.dtype)
    return (y - tau).clamp_min(0) - beta


@dataclass
class EditResult:
    alpha: torch.Tensor  # [..., N]
    delta: torch.Tensor  # [..., num_ws, N]
    scale: torch.Tensor  # [...] fraction of theta applied (1 unless on_exit='stop' had to stop early)
    inside: torch.Tensor  # [...] bool: the result lies in P_beta


def _stop_scale(alpha, delta, step, beta: float, iters: int = 30) -> torch.Tensor:
    """Largest t in [0, 1] per batch element with alpha + t * step inside P_beta (bisection)."""
    lo = torch.zeros(alpha.shape[:-1], dtype=alpha.dtype, device=alpha.device)
    hi = torch.ones_like(lo)
    full = in_pbeta(alpha + step, delta, beta=beta)
    for _ in range(iters):
        mid = (lo + hi) / 2
        ok = in_pbeta(alpha + mid.unsqueeze(-1) * step, delta, beta=beta)
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    return torch.where(full, torch.ones_like(lo), lo)


@torch.no_grad()
def edit_alpha(alpha: torch.Tensor, delta: torch.Tensor, gamma: torch.Tensor, theta: float, *,
               beta: float = BETA, on_exit: str = "project") -> EditResult:
    """alpha' = alpha + theta * gamma (the same step for every batch element), kept in P_beta by `on_exit`:

    'none' keeps alpha' as is; 'stop' applies the largest fraction of theta that stays inside;
    'project' projects every layer's raw row (alpha' + delta_l) and alpha' onto {sum 1, >= -beta}
    and re-expresses the rows as (alpha, delta).
    """
    step = theta * gamma.to(alpha.dtype)
    scale = torch.ones(alpha.shape[:-1], dtype=alpha.dtype, device=alpha.device)
    if on_exit == "stop":
        scale = _stop_scale(alpha, delta, step, beta)
    elif on_exit not in ("none", "project"):
        raise ValueError(f"on_exit must be 'none', 'stop' or 'project', got {on_exit!r}")
    new_alpha, new_delta = alpha + scale.unsqueeze(-1) * step, delta.clone()
    if on_exit == "project":
        outside = ~in_pbeta(new_alpha, delta, beta=beta)
        proj_alpha = project_rows(new_alpha, beta=beta)
        proj_delta = project_rows(raw_coefficients(new_alpha, delta), beta=beta) - proj_alpha.unsqueeze(-2)
        new_alpha = torch.where(outside.unsqueeze(-1), proj_alpha, new_alpha)
        new_delta = torch.where(outside[..., None, None], proj_delta, new_delta)
    return EditResult(new_alpha, new_delta, scale, in_pbeta(new_alpha, new_delta, beta=beta))


# ----------------------------------------------------------------------------------------------------
# Module


class PPlus(nn.Module):
    """Trainable point(s) of P+ over fixed anchors.

    anchors [N, w_dim] (buffer); alpha [N] or [B, N] and delta [num_ws, N] or [B, num_ws, N]
    (parameters). `ws()` -> [num_ws, w_dim] or [B, num_ws, w_dim].
    """

    def __init__(self, anchors: torch.Tensor, num_ws: int, *, batch_size: int | None = None,
                 beta: float = BETA, sharpness: float = SHARPNESS,
                 init_index: int | Sequence[int] | torch.Tensor | None = None, smoothing: float = 0.0,
                 delta_layers: int = DELTA_LAYERS, reg_weight: float = REG_WEIGHT) -> None:
        super().__init__()
        if anchors.ndim != 2:
            raise ValueError(f"anchors must be [N, w_dim], got {list(anchors.shape)}")
        if init_index is not None and batch_size is None and torch.as_tensor(init_index).ndim == 1:
            batch_size = len(init_index)
        self.beta, self.sharpness = beta, sharpness
        self.delta_layers, self.reg_weight = delta_layers, reg_weight
        self.register_buffer("anchors", anchors.detach().float().clone())
        alpha = init_alpha(anchors.shape[0], index=init_index, smoothing=smoothing, batch_size=batch_size)
        self.alpha = nn.Parameter(alpha.to(anchors.device))
        self.delta = nn.Parameter(torch.zeros([*alpha.shape[:-1], num_ws, anchors.shape[0]],
                                              device=anchors.device))

    @property
    def num_anchors(self) -> int:
        return self.anchors.shape[0]

    @property
    def num_ws(self) -> int:
        return self.delta.shape[-2]

    @property
    def batched(self) -> bool:
        return self.alpha.ndim == 2

    def raw(self) -> torch.Tensor:
        return raw_coefficients(self.alpha, self.delta)

    def coefficients(self) -> torch.Tensor:
        return coefficients(self.alpha, self.delta, beta=self.beta, sharpness=self.sharpness)

    def ws(self) -> torch.Tensor:
        return combine(self.coefficients(), self.anchors)

    def forward(self) -> torch.Tensor:
        return self.ws()

    def l_delta(self) -> torch.Tensor:
        return l_delta(self.delta, num_layers=self.delta_layers, weight=self.reg_weight)

    def l_sum(self) -> torch.Tensor:
        return l_sum(self.alpha, self.delta, weight=self.reg_weight)

    def regularization(self) -> torch.Tensor:
        """L_delta + L_sum, per batch element."""
        return self.l_delta() + self.l_sum()

    @torch.no_grad()
    def set_point(self, alpha: torch.Tensor, delta: torch.Tensor) -> None:
        """Warm start: copy (alpha, delta), broadcast to this module's batch shape."""
        self.alpha.copy_(alpha.expand_as(self.alpha))
        self.delta.copy_(delta.expand_as(self.delta))
