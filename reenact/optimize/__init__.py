"""Reenactment by latent optimization (pure core, no grpc): driving keypoints -> P+ latents of a person.

    from reenact.optimize import OptimizerOptions, PersonModel, ReenactmentOptimizer, Target
    person = PersonModel.load(repo, "astro")
    opt = ReenactmentOptimizer(person, OptimizerOptions(), device="cuda", should_stop=cancelled)
    for t in targets:
        for result in opt.push(t): ...     # FrameResult, in index order
    for result in opt.flush(): ...

Modules: `keypoints` (subsets, per-part normalization, smoothing), `losses` (L_kp, mouth/iris pixel
losses, masks), `engine` (options, the windowed warm-started optimizer), `person` (a loaded person).
"""

from .engine import FrameResult, OptimizerOptions, ReenactmentOptimizer, Target, landmark_net
from .keypoints import SUBSETS, KeypointSubset, get_subset
from .person import PersonModel

__all__ = [
    "SUBSETS",
    "FrameResult",
    "KeypointSubset",
    "OptimizerOptions",
    "PersonModel",
    "ReenactmentOptimizer",
    "Target",
    "get_subset",
    "landmark_net",
]
