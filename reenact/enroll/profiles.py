"""Training profiles: every hyper-parameter of an enrollment in one frozen record.

A profile is saved beside the artifact it produced (manifest metadata), so a person version can be
reproduced. `EnrollOptions` of a request override the fields they set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    resolution: int            # generator output size in pixels (power of two)
    channel_max: int           # widest feature map of the generator
    channel_base: int          # channels at resolution r = min(channel_base // r, channel_max)
    w_dim: int                 # latent size (512 for official checkpoints)
    mapping_layers: int
    num_anchors: int           # frames selected from the scan
    num_heldout: int           # frames kept aside for evaluation
    min_frames: int            # fewer usable frames than this: the scan is rejected
    base_steps: int            # from-scratch base training (auto-decoding) steps
    base_batch: int
    base_lr: float
    code_lr: float
    base_perceptual: float     # weight of the perceptual term during base training
    project_steps: int         # anchors by projection into a user-supplied base
    tune_steps: int            # MyStyle tuning steps
    tune_batch: int
    tune_lr: float
    eval_steps: int            # P+ projection steps per held-out frame
    eval_lr: float
    p0_samples: int            # random convex mixes of anchors for the identity check
    seed: int = 0
    init_samples: int = 0      # rendered samples for the amortized initializer (reenact.optimize.amortized)
    init_steps: int = 0        # its training steps; 0: no initializer (reenactment then starts from anchors)

    def override(self, **kw) -> Profile:
        return dataclasses.replace(self, **{k: v for k, v in kw.items() if v})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    # Tests and CPU laptops: tiny generator, minutes on 2 cores.
    "cpu-quick": Profile(
        name="cpu-quick", resolution=32, channel_max=64, channel_base=2048, w_dim=64, mapping_layers=2,
        num_anchors=16, num_heldout=4, min_frames=12, base_steps=1000, base_batch=8, base_lr=1e-2,
        code_lr=3e-2, base_perceptual=0.0, project_steps=100, tune_steps=200, tune_batch=8,
        tune_lr=3e-4, eval_steps=60, eval_lr=5e-3, p0_samples=16, init_samples=128, init_steps=300),
    # One GPU: 256 px (1024 px when a 1024 base checkpoint is given).
    "gpu": Profile(
        name="gpu", resolution=256, channel_max=256, channel_base=16384, w_dim=512, mapping_layers=8,
        num_anchors=100, num_heldout=16, min_frames=40, base_steps=3000, base_batch=16, base_lr=4e-3,
        # base_perceptual 1.0: measured on the real person on an H100 (docs/RESULTS.md, thirteenth session):
        # the anchors' renders as close to the person as the real frames, M's identity level with the warp's.
        code_lr=2e-2, base_perceptual=1.0, project_steps=450, tune_steps=600,
        tune_batch=16, tune_lr=3e-4, eval_steps=200, eval_lr=5e-3, p0_samples=200, init_samples=2048,
        init_steps=1500),
}


def get_profile(name: str) -> Profile:
    from reenact.errors import InvalidInputError

    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidInputError.for_field("profile", f"unknown profile {name!r}; one of {sorted(PROFILES)}") \
            from None
