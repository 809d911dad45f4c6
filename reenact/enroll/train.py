"""Base generator from the scan alone (auto-decoding) and MyStyle tuning.

Both loops are functions with keyword-only hyper-parameters and `progress` / `should_stop` callbacks,
and both can resume from a state dict (`state=`) that `checkpoint(state)` received earlier.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from reenact.enroll.profiles import Profile
from reenact.errors import CancelledError

Progress = Callable[[int, int, dict], None]
StopFn = Callable[[], bool]
CheckpointFn = Callable[[dict], None]


def build_generator(profile: Profile, resolution: int | None = None):
    from reenact.models.stylegan2 import Generator

    return Generator(z_dim=profile.w_dim, c_dim=0, w_dim=profile.w_dim,
                     img_resolution=resolution or profile.resolution, img_channels=3,
                     channel_base=profile.channel_base, channel_max=profile.channel_max,
                     num_mapping_layers=profile.mapping_layers)


def to_images(crops_uint8, device) -> torch.Tensor:
    """[T, H, W, 3] uint8 -> [T, 3, H, W] float in [-1, 1]."""
    x = torch.as_tensor(crops_uint8, device=device).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1


def autocast_for(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def recon_loss(fake: torch.Tensor, real: torch.Tensor, perceptual, w_perc: float, w_mse: float = 1.0,
               w_l1: float = 0.0) -> tuple[torch.Tensor, dict]:
    mse = F.mse_loss(fake.float(), real)
    total = w_mse * mse
    terms = {"mse": float(mse.detach())}
    if w_l1:
        l1 = F.l1_loss(fake.float(), real)
        total = total + w_l1 * l1
    if w_perc and perceptual is not None:
        perc = perceptual(fake.float(), real).mean()
        total = total + w_perc * perc
        terms["perceptual"] = float(perc.detach())
    terms["psnr_db"] = float(10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10)))
    return total, terms


def _broadcast(codes: torch.Tensor, num_ws: int) -> torch.Tensor:
    return codes[:, None, :].expand(-1, num_ws, -1)


class _Ticker:
    """Calls `checkpoint` at most every `every_s` seconds."""

    def __init__(self, every_s: float) -> None:
        self.every_s, self.last = every_s, time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            return True
        return False


def train_base(images: torch.Tensor, profile: Profile, *, perceptual, progress: Progress, should_stop: StopFn,
               checkpoint: CheckpointFn, checkpoint_every_s: float = 120.0, state: dict | None = None,
               steps: int | None = None):
    """Auto-decoding: a generator and one W code per frame, fitted jointly to the frames.

    Returns (G, codes [T, w_dim]). METHOD.md section 10: fitting is easy, interpolation realism is not;
    the evaluation stage measures the latter (held-out P+ projection vs nearest anchor, P0 identity).
    """
    device = images.device
    steps = steps or profile.base_steps
    gen = torch.Generator(device="cpu").manual_seed(profile.seed)
    G = build_generator(profile).to(device)
    codes = (0.5 * torch.randn(len(images), profile.w_dim, generator=gen)).to(device).requires_grad_(True)
    opt_g = torch.optim.Adam(G.synthesis.parameters(), lr=profile.base_lr, betas=(0.0, 0.99))
    opt_c = torch.optim.Adam([codes], lr=profile.code_lr)
    start = 0
    if state:
        G.load_state_dict(state["G"])
        with torch.no_grad():
            codes.copy_(state["codes"].to(device))
        opt_g.load_state_dict(state["opt_g"])
        opt_c.load_state_dict(state["opt_c"])
        start = int(state["step"])
    ticker = _Ticker(checkpoint_every_s)
    terms: dict = {}
    for step in range(start, steps):
        if should_stop():
            raise CancelledError("enrollment cancelled")
        idx = torch.randint(len(images), (min(profile.base_batch, len(images)),), generator=gen).to(device)
        with autocast_for(device):
            fake = G.synthesis(_broadcast(codes[idx], G.num_ws), noise_mode="const")
        loss, terms = recon_loss(fake, images[idx], perceptual, profile.base_perceptual, 1.0, 0.5)
        opt_g.zero_grad(set_to_none=True)
        opt_c.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        opt_c.step()
        if step % 10 == 0 or step == steps - 1:
            progress(step + 1, steps, terms)
        if ticker.due():
            checkpoint({"step": step + 1, "G": G.state_dict(), "codes": codes.detach().cpu(),
                        "opt_g": opt_g.state_dict(), "opt_c": opt_c.state_dict()})
    return G, codes.detach()


def tune_generator(G, anchor_ws: torch.Tensor, images: torch.Tensor, profile: Profile, *, perceptual,
                   progress: Progress, should_stop: StopFn, checkpoint: CheckpointFn,
                   checkpoint_every_s: float = 120.0, state: dict | None = None, steps: int | None = None):
    """MyStyle tuning: all synthesis weights trainable, Adam lr 3e-4, perceptual + 1.0 * MSE.

    anchor_ws [N, num_ws, w_dim] are fixed; images [N, 3, R, R] are the anchor frames.
    """
    device = images.device
    steps = steps if steps is not None else profile.tune_steps
    gen = torch.Generator(device="cpu").manual_seed(profile.seed + 1)
    opt = torch.optim.Adam(G.synthesis.parameters(), lr=profile.tune_lr)
    start = 0
    if state:
        G.load_state_dict(state["G"])
        opt.load_state_dict(state["opt"])
        start = int(state["step"])
    ticker = _Ticker(checkpoint_every_s)
    for step in range(start, steps):
        if should_stop():
            raise CancelledError("enrollment cancelled")
        idx = torch.randperm(len(images), generator=gen)[: profile.tune_batch].to(device)
        with autocast_for(device):
            fake = G.synthesis(anchor_ws[idx], noise_mode="const")
        loss, terms = recon_loss(fake, images[idx], perceptual, 1.0, 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            progress(step + 1, steps, terms)
        if ticker.due():
            checkpoint({"step": step + 1, "G": G.state_dict(), "opt": opt.state_dict()})
    return G


def project_w(G, images: torch.Tensor, *, perceptual, steps: int, lr: float = 0.01, should_stop: StopFn,
              progress: Progress) -> torch.Tensor:
    """Anchors by projection into a user-supplied base (PTI-style, encoder-free): W codes [N, w_dim].

    Starts from w_avg; Adam with a linear ramp-up and cosine ramp-down of the learning rate; loss
    perceptual + MSE; a decaying noise on w early on helps escape poor minima.
    """
    w_avg = G.mapping.w_avg.detach().to(images.device)
    w = w_avg[None].repeat(len(images), 1).requires_grad_(True)
    opt = torch.optim.Adam([w], betas=(0.9, 0.999), lr=lr)
    for step in range(steps):
        if should_stop():
            raise CancelledError("enrollment cancelled")
        t = step / max(steps, 1)
        ramp = min(1.0, (1 - t) / 0.25)
        ramp = 0.5 - 0.5 * torch.cos(torch.tensor(ramp * torch.pi)).item()
        for g in opt.param_groups:
            g["lr"] = lr * ramp * min(1.0, t / 0.05 + 1e-3)
        noise = 0.05 * max(0.0, 1 - t / 0.75) ** 2
        w_in = w + noise * torch.randn_like(w)
        fake = G.synthesis(_broadcast(w_in, G.num_ws), noise_mode="const")
        loss, terms = recon_loss(fake, images, perceptual, 1.0, 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            progress(step + 1, steps, terms)
    return w.detach()
