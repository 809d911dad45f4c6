"""Edit directions in alpha space and their application inside P_beta (METHOD.md sections 6 and 8).

Notation: anchors A [N, w_dim] (rows a_i), their mean m, centered anchors A_c = A - m, the Gram matrix
K = A_c A_c^T [N, N]. A P+ point (alpha [N], delta [num_ws, N]) has layer rows x_l = alpha + delta_l
with sums s_l (about 1, kept there by L_sum), and W+_l = (x_l / s_l) @ A (before the dilation, see
reenact.models.pplus). An edit adds theta * gamma to alpha.

Why every gamma here sums to 0: then every s_l is unchanged and W+_l moves by exactly
theta * A^T gamma / s_l = theta * A_c^T gamma / s_l, the same W step for every layer and every frame.
A step along (1, ..., 1) would instead only pull every layer towards the mean anchor.

User directions (`w_direction`): MyStyle's gamma = (A A^T)^-1 A d, computed on the centered anchors:
gamma = (K + lambda I)^-1 A_c d, the least-squares solution of A_c^T gamma = d with sum(gamma) = 0,
solved by an eigendecomposition of K with a tiny ridge (lambda = 1e-6 * mean eigenvalue) and the null
space of K dropped (the minimum-norm solution). Unit strength moves W by the part of d inside the
anchors' affine span: unit_change = |A_c^T gamma| (W units), r2 = |A_c^T gamma|^2 / |d|^2 (the
fraction of d the person's space can express).

Semantic directions (`semantic_directions`): for each attribute y (over the anchors, from the
self-scan's landmarks) a linear model y ~ mean(y) + (w - m) . v is fitted by ridge regression on the
anchors' codes in its dual form: c = (K + lambda I)^-1 (y - mean(y)), v = A_c^T c, lambda chosen
among a few multiples of the mean eigenvalue of K by exact leave-one-out error (for ridge with an
unpenalized intercept the LOO residual is e_i / (1 - H_ii), H = 11^T/N + K (K + lambda I)^-1). r2 is
that leave-one-out R^2, clipped to [0, 1]: the in-sample R^2 is about 1 whenever N <= w_dim and says
nothing. When no lambda beats predicting the mean (r2 = 0, typical below ~10 anchors) the largest
lambda is used, whose direction tends to the covariance direction A_c^T (y - mean(y)); it is still
returned, but r2 = 0 says the scan does not support it.
Unit strength moves W along v by one standard deviation of the anchors' codes along v: the W step
is v * std_i(f_i) / |v|^2 with f_i = (a_i - m) . v the fitted attribute values, and unit_change =
std_i(f_i), the change the model predicts for that step, in the attribute's units (degrees for yaw
and pitch, ratios for the others). For a perfect fit that is the attribute's standard deviation over
the anchors; a weak fit predicts less (and the step stays the size of the anchors' own spread instead
of growing to make up for a shrunk slope). gamma is c restricted to the range of K (the minimum-norm
alpha step; it sums to 0, so A^T gamma = the W step), scaled by std_i(f_i) / |v|^2. The fit is plain
regression: attributes that co-vary over the scan (a wide smile often opens the mouth) are not
disentangled. An attribute that is missing, constant over the anchors, or has fewer than
MIN_ANCHORS finite values gets a zero direction (gamma 0, unit_change 0, r2 0): the key is always
present, so callers list all of SEMANTIC and show r2; an edit with it changes nothing.
Measured on a cpu-quick enrollment of the astronaut self-scan fixture (16 anchors, w_dim 64): r2 yaw
0.63, mouth_open 0.43, pitch 0.25, smile 0.20, eye_open 0.14; with 6 anchors every r2 was 0.

Staying inside P_beta (`apply_edits`): of MyStyle's options (stop at the boundary, continue, project
back) this module projects back by default (on_exit="project"): alpha' is the Euclidean projection
of alpha + step onto {sum(alpha') = sum(alpha), alpha'_i >= lo_i}, where lo_i is the largest lower
bound that keeps every layer row with x_l[i] / s_l >= -beta (delta fixed, so the sums s_l do not
move). The solution is alpha' = max(alpha + step - tau, lo) with one scalar tau, found by bisection.
Coordinates at the boundary stay there and the rest of the edit still applies; "stop"
(on_exit="stop") applies the largest fraction of the step that stays inside instead, which keeps the
direction exact but lets a single coordinate at the boundary cancel the whole edit. Points from the
optimizer can already lie slightly outside P_beta (the dilation's floor is soft): an entry that is
already below -beta * s_l may rise but never sinks further (its bound is its current value), so an
edit never moves a point further out, and a point inside stays inside. Every batch element is
handled on its own (a batch gives the same result as frame by frame).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from reenact.errors import InvalidInputError
from reenact.models import pplus as pp

SEMANTIC = ("mouth_open", "smile", "eye_open", "yaw", "pitch")
UNITS = {"mouth_open": "ratio", "smile": "ratio", "eye_open": "ratio", "yaw": "deg", "pitch": "deg"}
MAX_STRENGTH = 3.0
MIN_ANCHORS = 3
RIDGE_GRID = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # x mean eigenvalue of K
W_RIDGE = 1e-6
_EIG_TOL = 1e-9  # eigenvalues below this x the largest are treated as 0 (null space of K)


@dataclass(frozen=True, eq=False)
class Direction:
    """A direction in alpha space. theta * gamma added to alpha is an edit of strength theta.

    unit_change: the attribute's change per unit strength (ratio or degrees; `units` says which);
    for a user W direction, the W-space length of one unit step. r2: leave-one-out R^2 of the
    attribute regression on the anchors (semantic), or the fraction of |d|^2 inside the anchors'
    span (user); 0..1.
    """

    name: str
    gamma: torch.Tensor  # [N] float32
    unit_change: float
    r2: float
    units: str = ""

    @property
    def is_zero(self) -> bool:
        return self.gamma.numel() == 0 or not bool(self.gamma.abs().max() > 0)


# ----------------------------------------------------------------------------------------------------
# Anchors


def load_anchors(src: bytes | str | os.PathLike) -> dict:
    """A person's anchors.pt (bytes or path) as a dict of tensors (weights_only load)."""
    target = io.BytesIO(src) if isinstance(src, bytes | bytearray) else src
    data = torch.load(target, map_location="cpu", weights_only=True)
    if not isinstance(data, Mapping):
        raise InvalidInputError.for_field("anchors", f"expected a dict, got {type(data).__name__}")
    return dict(data)


def _anchor_codes(anchors: Mapping) -> torch.Tensor:
    if "anchor_w" not in anchors:
        raise InvalidInputError.for_field("anchors.anchor_w", "missing")
    return _codes(anchors["anchor_w"], "anchors.anchor_w")


def _codes(anchor_w, field: str) -> torch.Tensor:
    a = torch.as_tensor(anchor_w).detach().cpu().double()
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise InvalidInputError.for_field(field, f"expected [N, w_dim], got {list(a.shape)}")
    if not torch.isfinite(a).all():
        raise InvalidInputError.for_field(field, "contains NaN or infinite values")
    return a


def anchor_attributes(anchors: Mapping) -> dict[str, np.ndarray | None]:
    """Per-anchor value of each SEMANTIC attribute (float64 [N], NaN where unknown), None if absent.

    yaw, pitch, mouth_open, eye_open are stored in anchors.pt; smile (mouth width / inter-ocular,
    reenact.face.attributes) is measured from `anchor_points` [N, 478, 3] unless stored as `smile`.
    """
    n = _anchor_codes(anchors).shape[0]
    out: dict[str, np.ndarray | None] = {}
    for name in SEMANTIC:
        values = anchors.get(name)
        if values is None and name == "smile" and anchors.get("anchor_points") is not None:
            values = _smile(anchors["anchor_points"])
        if values is None:
            out[name] = None
            continue
        y = np.asarray(torch.as_tensor(values).detach().cpu().double().numpy(), dtype=np.float64).reshape(-1)
        if y.shape[0] != n:
            raise InvalidInputError.for_field(f"anchors.{name}", f"{y.shape[0]} values for {n} anchors")
        out[name] = y
    return out


def _smile(points) -> np.ndarray:
    from reenact.face.attributes import face_attributes

    p = np.asarray(torch.as_tensor(points).detach().cpu().double().numpy())
    smile = np.full(p.shape[0], np.nan)
    for i, pts in enumerate(p):
        if np.isfinite(pts).all() and np.abs(pts).sum() > 0:  # all-zero points: no face in that frame
            smile[i] = face_attributes(pts)["smile"]
    return smile


# ----------------------------------------------------------------------------------------------------
# Directions


def _zero(name: str, n: int, units: str) -> Direction:
    return Direction(name, torch.zeros(n, dtype=torch.float32), 0.0, 0.0, units)


def _eig(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(eigenvalues S, eigenvectors U, mask of the range) of a symmetric PSD matrix."""
    s, u = torch.linalg.eigh((k + k.T) / 2)
    s = s.clamp_min(0)
    keep = s > _EIG_TOL * max(float(s.max()), 1e-300)
    return s, u, keep


def semantic_directions(anchors: Mapping) -> dict[str, Direction]:
    """One Direction per name of SEMANTIC, fitted on the anchors (module doc for the math)."""
    a = _anchor_codes(anchors)
    attrs = anchor_attributes(anchors)
    return {name: _fit_attribute(a, attrs[name], name) for name in SEMANTIC}


def _fit_attribute(a: torch.Tensor, y: np.ndarray | None, name: str) -> Direction:
    n, units = a.shape[0], UNITS.get(name, "")
    if y is None:
        return _zero(name, n, units)
    valid = torch.from_numpy(np.isfinite(y))
    yv = torch.from_numpy(y)[valid]
    if yv.numel() < MIN_ANCHORS:
        return _zero(name, n, units)
    sigma = float(yv.std(unbiased=False))
    if sigma <= 1e-9 * max(1.0, float(yv.abs().max())):
        return _zero(name, n, units)
    ac = a[valid] - a[valid].mean(dim=0)
    s, u, keep = _eig(ac @ ac.T)
    if not keep.any():  # every valid anchor has the same code
        return _zero(name, n, units)
    yc = yv - yv.mean()
    lam, r2 = _loo_ridge(s, u, yc)
    c = u @ ((u.T @ yc) / (s + lam))
    c = u[:, keep] @ (u[:, keep].T @ c)  # drop the null space of K: it moves W by nothing
    c = c - c.mean()
    fitted = ac @ (ac.T @ c)  # (a_i - m) . v, mean 0
    spread = float(fitted.square().mean().sqrt())  # std of the anchors' codes along v, times |v|
    v2 = float(c @ fitted)  # |v|^2, v = A_c^T c
    if v2 <= 0 or spread <= 0:
        return _zero(name, n, units)
    gamma = torch.zeros(n, dtype=torch.float64)
    gamma[valid] = c * (spread / v2)
    return Direction(name, gamma.float(), spread, r2, units)


def _loo_ridge(s: torch.Tensor, u: torch.Tensor, yc: torch.Tensor) -> tuple[float, float]:
    """(lambda, leave-one-out R^2) of dual ridge regression with intercept, best lambda of the grid."""
    n = yc.numel()
    scale = float(s.sum()) / n
    uty = u.T @ yc
    total = float(yc @ yc)
    best = (float("inf"), scale)
    for factor in RIDGE_GRID:
        lam = factor * scale
        h = s / (s + lam)
        fitted = u @ (h * uty)
        leverage = (u.square() @ h) + 1.0 / n
        resid = (yc - fitted) / (1 - leverage).clamp_min(1e-9)
        press = float(resid @ resid)
        if press < best[0]:
            best = (press, lam)
    r2 = min(max(1.0 - best[0] / total, 0.0), 1.0)
    if r2 == 0.0:  # no lambda predicts better than the mean: take the most shrunk (most stable) fit
        return RIDGE_GRID[-1] * scale, 0.0
    return best[1], r2


def w_direction(anchor_w: torch.Tensor, d: torch.Tensor, name: str = "user", *,
                ridge: float = W_RIDGE) -> Direction:
    """gamma for a W-space direction d [w_dim]: (K + lambda I)^-1 A_c d (module doc).

    InvalidInputError (field "direction") when d is not [w_dim], not finite or zero.
    """
    a = _codes(anchor_w, "anchor_w")
    n, w_dim = a.shape
    try:
        dv = torch.as_tensor(d).detach().cpu().double()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidInputError.for_field("direction", f"not a tensor: {exc}") from exc
    if dv.shape != (w_dim,):
        raise InvalidInputError.for_field("direction", f"expected shape [{w_dim}], got {list(dv.shape)}")
    if not torch.isfinite(dv).all():
        raise InvalidInputError.for_field("direction", "contains NaN or infinite values")
    norm2 = float(dv @ dv)
    if norm2 == 0:
        raise InvalidInputError.for_field("direction", "is the zero vector")
    ac = a - a.mean(dim=0)
    s, u, keep = _eig(ac @ ac.T)
    if not keep.any():  # all anchors equal: P+ is one point
        return _zero(name, n, "w")
    lam = ridge * float(s.sum()) / n
    uk = u[:, keep]
    gamma = uk @ ((uk.T @ (ac @ dv)) / (s[keep] + lam))
    gamma = gamma - gamma.mean()
    step = ac.T @ gamma
    r2 = min(float(step @ step) / norm2, 1.0)
    return Direction(name, gamma.float(), float(step.norm()), r2, "w")


# ----------------------------------------------------------------------------------------------------
# Applying edits


def _check_point(alpha: torch.Tensor, delta: torch.Tensor) -> None:
    if alpha.ndim < 1 or delta.ndim < 2 or alpha.shape[-1] != delta.shape[-1]:
        raise InvalidInputError.for_field(
            "alpha", f"alpha [..., N] and delta [..., num_ws, N] do not match: "
                     f"{list(alpha.shape)} vs {list(delta.shape)}")
    try:
        torch.broadcast_shapes(alpha.shape[:-1], delta.shape[:-2])
    except RuntimeError as exc:
        raise InvalidInputError.for_field("delta", f"batch shapes {list(alpha.shape[:-1])} and "
                                                   f"{list(delta.shape[:-2])} do not broadcast") from exc
    if not (torch.isfinite(alpha).all() and torch.isfinite(delta).all()):
        raise InvalidInputError.for_field("alpha", "alpha or delta contains NaN or infinite values")


def _combined_step(edits: Sequence[tuple[Direction, float]], n: int) -> torch.Tensor:
    """sum_k theta_k gamma_k (float64, centered), after validating every edit."""
    step = torch.zeros(n, dtype=torch.float64)
    for k, edit in enumerate(edits):
        try:
            direction, strength = edit
        except (TypeError, ValueError) as exc:
            raise InvalidInputError.for_field(f"edits[{k}]", "expected (Direction, strength)") from exc
        if not isinstance(direction, Direction):
            raise InvalidInputError.for_field(f"edits[{k}].direction", f"not a Direction: {type(direction).__name__}")
        if direction.gamma.shape != (n,):
            raise InvalidInputError.for_field(
                f"edits[{k}].direction", f"{direction.name!r} has {list(direction.gamma.shape)} "
                                         f"coefficients for {n} anchors (another person's direction?)")
        theta = float(strength)
        if not np.isfinite(theta) or abs(theta) > MAX_STRENGTH:
            raise InvalidInputError.for_field(
                f"edits[{k}].strength", f"must be within [-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}], got {strength}")
        step += theta * direction.gamma.detach().cpu().double()
    return step - step.mean()


def _lower_bounds(alpha: torch.Tensor, delta: torch.Tensor, beta: float) -> torch.Tensor:
    """lo [..., N]: alpha'_i >= lo_i keeps every row (sum fixed) at x/s >= min(-beta, its current x/s)."""
    raw = alpha.unsqueeze(-2) + delta  # [..., L, N]
    sums = raw.sum(dim=-1, keepdim=True)
    ok = sums > 0  # a row with sum <= 0 is outside P_beta whatever alpha does; it sets no bound
    floor = torch.minimum(torch.full_like(raw, -beta), raw / sums.clamp_min(1e-300))
    bound = torch.where(ok, floor * sums - delta, torch.full_like(raw, -torch.inf))
    return torch.minimum(bound.amax(dim=-2), alpha)  # never above the current value


def _project(target: torch.Tensor, lo: torch.Tensor, total: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Euclidean projection of each row of target onto {sum(x) = total, x >= lo}: max(target - tau, lo)."""
    lo_tau = torch.zeros_like(total)
    hi_tau = (target - lo).amax(dim=-1).clamp_min(0)
    for _ in range(iters):
        mid = (lo_tau + hi_tau) / 2
        over = torch.maximum(target - mid.unsqueeze(-1), lo).sum(dim=-1) > total
        lo_tau, hi_tau = torch.where(over, mid, lo_tau), torch.where(over, hi_tau, mid)
    tau = hi_tau.unsqueeze(-1)
    free = target - tau > lo  # exact tau on the final free set
    n_free = free.sum(dim=-1, keepdim=True).clamp_min(1)
    exact = ((target * free).sum(-1, keepdim=True) + (lo * ~free).sum(-1, keepdim=True)
             - total.unsqueeze(-1)) / n_free
    tau = torch.where(free.any(dim=-1, keepdim=True), exact.clamp_min(0), tau)
    return torch.maximum(target - tau, lo)


def apply_edits(alpha: torch.Tensor, delta: torch.Tensor, edits: Sequence[tuple[Direction, float]], *,
                beta: float = pp.BETA, on_exit: str = "project") -> torch.Tensor:
    """alpha' [..., N] = alpha + sum_k strength_k gamma_k, kept inside P_beta (module doc).

    alpha [N] or [B, N]; delta [num_ws, N] or [B, num_ws, N] (batch shapes broadcast). Strengths
    must lie in [-MAX_STRENGTH, MAX_STRENGTH]. on_exit: "project" (default) or "stop".
    """
    alpha, delta = torch.as_tensor(alpha), torch.as_tensor(delta)
    _check_point(alpha, delta)
    if on_exit not in ("project", "stop"):
        raise ValueError(f"on_exit must be 'project' or 'stop', got {on_exit!r}")
    n = alpha.shape[-1]
    step = _combined_step(edits, n).to(alpha.device)
    batch = torch.broadcast_shapes(alpha.shape[:-1], delta.shape[:-2])
    a0 = alpha.detach().double().expand(*batch, n)
    if n == 0 or not bool(step.abs().max() > 0):
        return a0.to(alpha.dtype).clone()
    lo = _lower_bounds(a0, delta.detach().double(), beta)
    target = a0 + step
    if on_exit == "stop":
        room = torch.where(step < 0, (a0 - lo) / (-step).clamp_min(1e-300), torch.full_like(a0, torch.inf))
        t = room.amin(dim=-1, keepdim=True).clamp(0, 1)
        out = a0 + t * step
    else:
        inside = (target >= lo).all(dim=-1, keepdim=True)
        out = torch.where(inside, target, _project(target, lo, a0.sum(dim=-1)))
    return out.to(alpha.dtype)


def edited_ws(alpha: torch.Tensor, delta: torch.Tensor, anchor_w: torch.Tensor,
              edits: Sequence[tuple[Direction, float]], *, beta: float = pp.BETA,
              on_exit: str = "project") -> torch.Tensor:
    """W+ [..., num_ws, w_dim] of the edited points: coefficients(apply_edits(...), delta) @ anchor_w."""
    new_alpha = apply_edits(alpha, delta, edits, beta=beta, on_exit=on_exit)
    delta = torch.as_tensor(delta).to(new_alpha)
    anchors = torch.as_tensor(anchor_w).to(new_alpha)
    if anchors.ndim != 2 or anchors.shape[0] != new_alpha.shape[-1]:
        raise InvalidInputError.for_field("anchor_w", f"expected [{new_alpha.shape[-1]}, w_dim], "
                                                      f"got {list(anchors.shape)}")
    return pp.combine(pp.coefficients(new_alpha, delta, beta=beta), anchors)
