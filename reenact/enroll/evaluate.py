"""Stage 'evaluate': how well the person's generator and P+ reproduce frames it was not tuned on.

Metrics (all on [-1, 1] images converted to uint8 where PSNR is reported):
- train_psnr_db: anchors rendered from their own codes vs the anchor frames;
- heldout_psnr_db / heldout_perceptual: held-out frames projected into P+ (MyStyle settings: Adam lr
  5e-3, start from the nearest anchor, L_delta + L_sum regularizers) vs the frames;
- heldout_nearest_anchor_psnr_db: the nearest anchor's render vs the held-out frame (the baseline P+ must
  beat: METHOD.md section 10);
- p0_identity_below_0_5 / p0_identity_median: dlib identity distance of random convex mixes of anchors
  (P0 samples) to the most neutral anchor frame (only at >= 128 px, where dlib can find faces).
"""

from __future__ import annotations

import numpy as np
import torch

from reenact.enroll.train import recon_loss
from reenact.errors import CancelledError


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def psnr_db(fake: torch.Tensor, real: torch.Tensor) -> np.ndarray:
    a, b = to_uint8(fake).astype(np.float64), to_uint8(real).astype(np.float64)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


@torch.no_grad()
def render(G, ws: torch.Tensor, batch: int = 16) -> torch.Tensor:
    return torch.cat([G.synthesis(ws[i:i + batch], noise_mode="const").float() for i in range(0, len(ws), batch)])


def project_pplus(G, anchor_w: torch.Tensor, targets: torch.Tensor, start: np.ndarray, *, perceptual,
                  steps: int, lr: float, beta: float = 0.03, should_stop=lambda: False, progress=None):
    """Project targets [B, 3, R, R] into P+ (one batch), each starting from its `start` anchor index."""
    from reenact.models.pplus import PPlus

    space = PPlus(anchor_w, G.num_ws, batch_size=len(targets), beta=beta,
                  init_index=torch.as_tensor(start)).to(targets.device)
    opt = torch.optim.Adam(space.parameters(), lr=lr, betas=(0.9, 0.999))
    G.requires_grad_(False)
    for step in range(steps):
        if should_stop():
            raise CancelledError("enrollment cancelled")
        fake = G.synthesis(space.ws(), noise_mode="const")
        loss, terms = recon_loss(fake, targets, perceptual, 1.0, 1.0)
        reg = (space.l_delta() + space.l_sum()).mean()
        opt.zero_grad(set_to_none=True)
        (loss + reg).backward()
        opt.step()
        if progress is not None and (step % 10 == 0 or step == steps - 1):
            progress(step + 1, steps, {**terms, "reg": float(reg.detach())})
    G.requires_grad_(True)
    return space


def evaluate_person(G, anchor_w: torch.Tensor, anchor_images: torch.Tensor, heldout: torch.Tensor, profile, *,
                    perceptual, should_stop, progress) -> dict:
    num_ws = G.num_ws
    anchor_ws = anchor_w[:, None, :].expand(-1, num_ws, -1)
    out: dict = {}
    recon = render(G, anchor_ws)
    out["train_psnr_db"] = float(psnr_db(recon, anchor_images).mean())
    if len(heldout):
        d = perceptual.pairwise(heldout, anchor_images).cpu().numpy()
        nearest = d.argmin(1)
        out["heldout_nearest_anchor_psnr_db"] = float(psnr_db(anchor_images[nearest], heldout).mean())
        space = project_pplus(G, anchor_w, heldout, nearest, perceptual=perceptual, steps=profile.eval_steps,
                              lr=profile.eval_lr, should_stop=should_stop, progress=progress)
        with torch.no_grad():
            fake = render(G, space.ws().detach())
            out["heldout_psnr_db"] = float(psnr_db(fake, heldout).mean())
            out["heldout_perceptual"] = float(perceptual(fake, heldout).mean())
    if profile.resolution >= 128 and profile.p0_samples > 0:
        out.update(p0_identity(G, anchor_w, anchor_images[0], profile.p0_samples, profile.seed))
    return out


def p0_identity(G, anchor_w: torch.Tensor, reference: torch.Tensor, samples: int, seed: int) -> dict:
    """dlib distance of random convex mixes of anchors (Dirichlet(1)) to the reference frame."""
    from reenact.metrics.identity import FaceDescriptor

    fd = FaceDescriptor()
    ref = fd.describe(to_uint8(reference[None])[0])
    if ref is None:
        return {"p0_identity_reference_face_found": 0.0}
    rng = np.random.default_rng(seed)
    mix = torch.as_tensor(rng.dirichlet(np.ones(len(anchor_w)), samples), dtype=anchor_w.dtype,
                          device=anchor_w.device)
    ws = (mix @ anchor_w)[:, None, :].expand(-1, G.num_ws, -1)
    imgs = to_uint8(render(G, ws))
    dists = []
    for img in imgs:
        d = fd.describe(img)
        dists.append(np.nan if d is None else float(np.linalg.norm(d - ref)))
    dists = np.asarray(dists)
    found = ~np.isnan(dists)
    return {"p0_identity_below_0_5": float((dists[found] < 0.5).sum() / len(dists)),
            "p0_identity_median": float(np.median(dists[found])) if found.any() else float("nan"),
            "p0_faces_found": float(found.mean())}
