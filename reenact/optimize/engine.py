"""The reenactment optimizer: driving keypoints in, latents of the person's generator out (METHOD.md s. 7).

Per driving frame t the engine finds a point (alpha_t, delta_t) of the person's P+ space minimizing

    L = keypoint_weight * (L_kp + opening_weight * L_open) + mouth_weight * L_mouth + eye_weight * L_eye
        + L_delta + L_sum + alpha_entropy * L_ent

(reenact.optimize.losses). Streaming: `push(target)` buffers frames; keypoints are Gaussian smoothed over
time (sigma `keypoint_sigma` frames, look-ahead ceil(3 sigma)), then frames are optimized `window` at a
time as one batch (PPlus batch_size = window). init 'anchor': the first frame starts from the anchor whose
keypoints are closest (per-part normalized) and gets `first_frame_steps`; every later window starts each
of its frames from the better of the last finished frame and its own nearest anchor, and gets `steps`.
init 'regressor' (the default 'auto' when the person was enrolled with an amortized initializer,
reenact.optimize.amortized): every frame, the first included, starts from the better of the warm start
and the initializer's prediction for its keypoints and gets `steps` (no long first-frame optimization).
init 'mixed' (needs the initializer): as 'regressor', with the frame's nearest anchor as a third candidate
start (lets a window jump to an expression of the scan that the warm start and the prediction are far
from, e.g. a wide-open mouth). mouth_starts s > 0 adds the warm start moved by -2s, -s, +s, +2s along the
person's mouth-opening edit direction (reenact.edit.directions) as four more candidates (an open mouth is
one jump from closed; docs/RESULTS.md "fifth session": cross mouth r 0.34 -> 0.74). A window stops early
when the relative change of
its summed loss falls below `tolerance`. Each frame keeps the best point it visited. A frame without a
face repeats the previous frame's latent (steps 0). motion 'relative' (reenact.optimize.retarget) replaces each
frame's keypoints, before smoothing, by the person's reference keypoints moved by the driver's motion;
opening_range > 0 (relative only) keeps their mouth opening inside the person's scan range.
latent_sigma > 0 smooths the returned latents over time (a Gaussian over the face frames' alpha and delta,
ws recomputed: still points of P+; look-ahead ceil(3 latent_sigma) more frames). Results come back in
index order, `latency` frames after their target was pushed at most; `flush()` returns the rest.

`should_stop()` is polled before every optimization step; True raises CancelledError at once.
Deterministic on the CPU for a given seed (the seed only matters for init='random'); on CUDA,
grid_sample's backward uses atomics, so the last bits can differ between runs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from reenact import lipwarp
from reenact.errors import CancelledError, InvalidInputError, PreconditionError
from reenact.face.smooth import StreamingSmoother
from reenact.models import pplus as pp

from . import losses
from .keypoints import NUM_POINTS, SUBSETS, KeypointSmoother, get_subset, keypoint_error, scale_keypoints
from .person import PersonModel
from .retarget import MAX_OPENING_RANGE, Retargeter

INITS = ("auto", "anchor", "regressor", "mixed", "uniform", "random")
PREDICTED_STARTS = ("regressor", "mixed")  # inits whose frames may start from the initializer's prediction
ANCHOR_STARTS = ("anchor", "mixed")        # inits whose frames may start from their nearest anchor
MOTIONS = ("absolute", "relative")
MAX_ALPHA_ENTROPY = 100.0
LOSS_NAMES = ("keypoint", "mouth", "eye", "delta", "sum", "entropy", "total")
MAX_STEPS = 100_000
MAX_WINDOW = 1024
MAX_MOUTH_STEP = 1.5  # mouth_starts' largest s: the candidates' 2s stays inside the edits' strength bound (3)
CHECK_EVERY = 5  # steps between two host reads of the loss for the tolerance test


@dataclass(frozen=True)
class OptimizerOptions:
    first_frame_steps: int = 200
    steps: int = 30
    # Measured on an H100 at 100 anchors (docs/BENCHMARKS.md, "optimizer: step size"): with one learning
    # rate for alpha and delta, Adam's per-coordinate steps in the 100x18 delta and the L_sum penalty swamp
    # the small keypoint gradient and the kept-best never leaves its start. A 50x smaller step for delta and
    # a linear decay to 0.1x fit the first frames as well as 200 per-frame steps, ~23x faster.
    learning_rate: float = 5e-3
    delta_lr_scale: float = 0.02  # delta's learning rate = learning_rate * delta_lr_scale
    lr_final: float = 0.1         # learning rate decays linearly to learning_rate * lr_final over the budget
    tolerance: float = 1e-4
    keypoint_weight: float = 1.0
    mouth_weight: float = 0.5
    eye_weight: float = 0.5
    # weight of L_open (losses.opening_loss: mouth and eye opening ratios) inside the keypoint term
    opening_weight: float = 0.0
    window: int = 8
    beta: float = 0.03
    keypoint_subset: str = "default"
    keypoint_sigma: float = 2.0
    seed: int = 0
    # "auto": "regressor" when the person version carries an amortized initializer, else "anchor".
    # "mixed": the regressor's and the nearest anchor's starts both compete with the warm start.
    init: str = "auto"
    # Temporal Gaussian smoothing (sigma in frames) of the returned latents (alpha, delta; ws recomputed):
    # 0 = off. Results come back ceil(3 sigma) frames later; the optimizer's own warm starts are unsmoothed.
    latent_sigma: float = 0.0
    # "absolute": match the driving keypoints as they are. "relative": match the person's own keypoints moved
    # by the driver's motion since its first face frame (reenact.optimize.retarget; for another identity).
    motion: str = "absolute"
    # motion "relative" only: > 0 maps the target's mouth opening softly into the person's scan range
    # (reenact.optimize.retarget, "Opening range"; slope 1/opening_range at the reference). 0 = off.
    opening_range: float = 0.0
    # > 0: four more candidate starts per frame, the warm start moved by -2s, -s, +s, +2s (s = this value, in
    # unit strengths: one standard deviation of the anchors' mouth ratio) along the person's mouth-opening
    # direction (reenact.edit.directions); the loss picks, as for the other starts. 0 = off.
    mouth_starts: float = 0.0
    # > 0: each returned frame also carries a residual lip warp (reenact.lipwarp): its lips as the landmark
    # model sees them at the returned latent (lip_src) and where that fraction of the way to the target's lip
    # shape puts them (lip_dst). Whoever renders the latent applies it (the gateway, the evaluation). 0 = off.
    lip_warp: float = 0.0
    # > 0: weight of L_ent, the entropy of the point's mix of anchors (reenact.models.pplus.anchor_entropy, in
    # nats, mean over layers): pulls each frame toward blends of few anchors (frames of the scan) instead of
    # a wide average of many. 0 = off. FrameResult.anchors_eff reports exp(entropy) either way.
    alpha_entropy: float = 0.0

    def override(self, **kw) -> OptimizerOptions:
        """A copy with the given fields; 0 / empty values mean 'unset' (proto defaults) and are ignored."""
        names = {f.name for f in dataclasses.fields(self)}
        for key in kw:
            if key not in names:
                raise InvalidInputError.for_field(f"options.{key}", "unknown option")
        return dataclasses.replace(self, **{k: v for k, v in kw.items() if v})

    def validate(self) -> None:
        """InvalidInputError naming every bad field."""
        bad = [(name, why) for name, why in self._violations() if why]
        if bad:
            first = InvalidInputError.for_field(f"options.{bad[0][0]}", bad[0][1])
            for name, why in bad[1:]:
                first.violations.append(InvalidInputError.for_field(f"options.{name}", why).violations[0])
            raise first

    def _violations(self):
        def count(v, lo, hi):
            ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
            return "" if ok else f"must be an integer in [{lo}, {hi}], got {v!r}"

        def real(v, lo, hi, lo_open=False):
            ok = isinstance(v, int | float) and math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
            return "" if ok else f"must be a finite number in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}"

        yield "first_frame_steps", count(self.first_frame_steps, 1, MAX_STEPS)
        yield "steps", count(self.steps, 1, MAX_STEPS)
        yield "learning_rate", real(self.learning_rate, 0.0, 1.0, lo_open=True)
        yield "tolerance", real(self.tolerance, 0.0, 1.0)
        yield "delta_lr_scale", real(self.delta_lr_scale, 0.0, 10.0)
        yield "lr_final", real(self.lr_final, 0.0, 1.0)
        for name in ("keypoint_weight", "mouth_weight", "eye_weight", "opening_weight"):
            yield name, real(getattr(self, name), 0.0, 1e6)
        yield "window", count(self.window, 1, MAX_WINDOW)
        yield "beta", real(self.beta, 0.0, 1.0)
        yield "keypoint_subset", "" if self.keypoint_subset in SUBSETS else f"must be one of {SUBSETS}"
        yield "keypoint_sigma", real(self.keypoint_sigma, 0.0, 10.0)
        yield "latent_sigma", real(self.latent_sigma, 0.0, 10.0)
        yield "seed", count(self.seed, 0, 2**63 - 1)
        yield "init", "" if self.init in INITS else f"must be one of {INITS}"
        yield "motion", "" if self.motion in MOTIONS else f"must be one of {MOTIONS}"
        range_ok = real(self.opening_range, 0.0, MAX_OPENING_RANGE)
        if not range_ok and self.opening_range > 0 and self.motion != "relative":
            range_ok = "needs motion 'relative' (the scan's range is mapped around the person's reference)"
        yield "opening_range", range_ok
        yield "mouth_starts", real(self.mouth_starts, 0.0, MAX_MOUTH_STEP)
        yield "lip_warp", real(self.lip_warp, 0.0, lipwarp.MAX_GAIN)
        yield "alpha_entropy", real(self.alpha_entropy, 0.0, MAX_ALPHA_ENTROPY)


@dataclass
class Target:
    index: int
    keypoints: np.ndarray        # float32 [478, 3] in aligned-crop pixels of crop_size
    crop_size: int
    crop: np.ndarray | None      # uint8 [crop_size, crop_size, 3] aligned driving crop, or None
    has_face: bool = True


@dataclass
class FrameResult:
    index: int
    ws: np.ndarray               # float32 [num_ws, w_dim]
    alpha: np.ndarray            # float32 [N]
    delta: np.ndarray            # float32 [num_ws, N]
    losses: dict[str, float]     # LOSS_NAMES at the returned point ({} for a frame without a face)
    steps: int
    keypoint_error: float        # mean 2-D distance over the subset / inter-ocular distance (NaN: no face)
    lip_src: np.ndarray | None = None  # float32 [40, 2] at R: the rendered lips (options.lip_warp > 0)
    lip_dst: np.ndarray | None = None  # float32 [40, 2] at R: where the residual lip warp moves them
    anchors_eff: float = float("nan")  # how many anchors the point blends: exp(entropy of its mix), layer mean


@dataclass
class _Frame:
    target: Target
    smoothed: np.ndarray | None  # [478, 3] at R, temporally smoothed (None: no face)
    raw: np.ndarray | None       # [478, 3] at R, this frame's own keypoints (for the pixel masks)


@dataclass
class _Batch:
    targets: torch.Tensor                 # [B, 478, 3]
    pixels: torch.Tensor | None = None    # [B, 3, R, R] in [-1, 1]
    mouth: torch.Tensor | None = None     # [B, R, R]
    eye: torch.Tensor | None = None       # [B, R, R]


@dataclass
class _Best:
    total: torch.Tensor                   # [B]
    alpha: torch.Tensor
    delta: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    error: torch.Tensor | None = None


@functools.cache
def landmark_net(device: str = "cpu"):
    """The differentiable MediaPipe attention mesh (478 points) on `device`, frozen; loaded once."""
    from reenact.mpdiff import FaceLandmarkNet

    return FaceLandmarkNet.from_mediapipe("attention", torch.device(device)).eval().requires_grad_(False)


def check_target(target: Target, last_index: int | None) -> None:
    if not isinstance(target.index, int | np.integer) or (last_index is not None and target.index <= last_index):
        raise InvalidInputError.for_field("target.index", f"must strictly increase (got {target.index} after "
                                                          f"{last_index})")
    if not isinstance(target.crop_size, int | np.integer) or target.crop_size < 1:
        raise InvalidInputError.for_field("target.crop_size", f"must be a positive integer, got {target.crop_size}")
    if not target.has_face:
        return
    kp = np.asarray(target.keypoints)
    if kp.shape != (NUM_POINTS, 3) or not np.issubdtype(kp.dtype, np.number) or not np.isfinite(kp).all():
        raise InvalidInputError.for_field("target.keypoints", f"must be finite float [{NUM_POINTS}, 3], got "
                                                              f"{kp.dtype} {list(kp.shape)}")
    crop = target.crop
    if crop is not None and (np.asarray(crop).dtype != np.uint8 or
                             np.asarray(crop).shape != (target.crop_size, target.crop_size, 3)):
        raise InvalidInputError.for_field("target.crop", f"must be uint8 [{target.crop_size}, "
                                                         f"{target.crop_size}, 3] or absent")


class ReenactmentOptimizer:
    """Streaming optimizer of one driving sequence for one person (see the module docstring)."""

    def __init__(self, person: PersonModel, options: OptimizerOptions, *, device="cpu",
                 should_stop: Callable[[], bool] = lambda: False, landmarks=None, bf16: bool = False,
                 compile: bool = False, static: bool = False) -> None:
        options.validate()
        self.person, self.options = person, options
        self.device = torch.device(device)
        self.should_stop = should_stop
        self.net = landmarks if landmarks is not None else landmark_net(str(self.device))
        self.bf16 = bool(bf16) and self.device.type == "cuda"
        self.subset = get_subset(options.keypoint_subset)
        self.resolution = person.resolution
        self.affine = losses.face_affine(self.resolution, self.device)
        self.anchors = person.anchor_w.to(self.device).float()
        self.anchor_points = person.anchor_points.to(self.device).float()
        self.num_ws = int(person.G.num_ws)
        self._smoother = KeypointSmoother(options.keypoint_sigma)
        self._latents = StreamingSmoother(options.latent_sigma)  # radius 0 at sigma 0: a pass-through
        self._last_out: FrameResult | None = None  # the last frame returned after latent smoothing
        self.retargeter = (Retargeter(person.anchor_points, opening_range=options.opening_range)
                           if options.motion == "relative" else None)
        self._ready: list[_Frame] = []
        self._last_index: int | None = None
        self._previous: tuple[torch.Tensor, torch.Tensor] | None = None  # (alpha [N], delta [num_ws, N])
        self._last_result: FrameResult | None = None
        self.init = self.resolve_init(options.init, person)
        self.stats = {"anchor_starts": 0, "warm_starts": 0, "regressor_starts": 0, "mouth_starts": 0}
        self.mouth_direction = self._mouth_direction() if options.mouth_starts > 0 else None
        self.trace: list[list[dict]] | None = None  # set to [] to record each window's mean terms per step
        # compile: the forward of a step (W+ -> image -> keypoints) under torch.compile (fewer, fused kernels:
        # the step is launch-bound at small batches); the first call per batch size compiles.
        self.compiled = bool(compile)
        # static: every window runs as reenact.optimize.graphed.StaticStep (fixed buffers of `window` frames,
        # one CUDA graph on CUDA, eager elsewhere): fixed `steps` (no tolerance stop, no long first frame),
        # both the warm and the fresh start optimized. Needs init 'regressor' or 'anchor'.
        self.static = bool(static)
        if self.static and self.compiled:
            raise ValueError("static (CUDA graphs) and compile exclude each other")
        if self.static and self.init not in ("regressor", "anchor"):
            raise InvalidInputError.for_field("options.init", f"the static step needs init 'regressor' or "
                                                              f"'anchor', not {self.init!r}")
        if self.static and options.mouth_starts > 0:
            raise InvalidInputError.for_field("options.mouth_starts", "the static step has no mouth starts (eager "
                                                                      "engine only)")
        self._static_step = None
        self._goals: dict[int, np.ndarray] = {}  # lip_warp > 0: each face frame's target until it is returned
        self._last_lips: tuple[np.ndarray, np.ndarray] | None = None

    def _mouth_direction(self):
        """The person's mouth-opening edit direction (reenact.edit.directions, fitted on the anchors' codes
        and their mouth ratios), or None when the anchors do not vary in mouth opening."""
        from reenact.edit.directions import semantic_directions

        from .retarget import expression_features

        ratios = expression_features(self.person.anchor_points.detach().cpu().double().numpy())[:, 0]
        d = semantic_directions({"anchor_w": self.person.anchor_w, "mouth_open": ratios})["mouth_open"]
        return None if d.is_zero else d

    @staticmethod
    def resolve_init(init: str, person: PersonModel) -> str:
        """The init mode a stream of `person` uses for `init` ("auto" resolved; "regressor" without an
        initializer raises PreconditionError)."""
        if init == "auto":
            return "regressor" if person.initializer is not None else "anchor"
        if init in PREDICTED_STARTS and person.initializer is None:
            raise PreconditionError(f"person {person.person_id!r} v{person.version} has no amortized initializer "
                                    f"(enrolled before it existed): re-enroll, or use init 'anchor', not {init!r}",
                                    reason="NO_INITIALIZER")
        return init

    @property
    def latency(self) -> int:
        """At most this many frames are pushed after a frame before it comes back (smoothing look-ahead
        ceil(3 sigma) + window - 1 + the latent smoothing's ceil(3 latent_sigma); the last frame of a window
        comes back after the look-aheads alone)."""
        return self._smoother.delay + self.options.window - 1 + self._latents.radius

    def push(self, target: Target) -> list[FrameResult]:
        raw, goal = self.accept(target)
        for payload, smoothed in self._smoother.push(goal, (target, raw)):
            self._ready.append(_Frame(payload[0], smoothed, payload[1]))
        return self._with_lips(self._smooth_latents(self._run_full_windows()))

    def accept(self, target: Target) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Validate the next target (index order) and return (raw, goal) keypoints [478, 3] at R: its own
        points and what the loss matches (the retargeted points with motion 'relative'); None without a face."""
        check_target(target, self._last_index)
        self._last_index = int(target.index)
        raw = None
        if target.has_face:
            raw = scale_keypoints(target.keypoints, target.crop_size, self.resolution)
        goal = raw if self.retargeter is None else self.retargeter(raw)  # raw stays: the masks fit the crop
        return raw, goal

    def flush(self) -> list[FrameResult]:
        for payload, smoothed in self._smoother.flush():
            self._ready.append(_Frame(payload[0], smoothed, payload[1]))
        out = self._run_full_windows()
        if self._ready:
            out += self._run_window(self._ready)
            self._ready = []
        return self._with_lips(self._smooth_latents(out, flush=True))

    def _with_lips(self, results: list[FrameResult]) -> list[FrameResult]:
        """lip_warp > 0: each result with its residual lip warp (lip_src, lip_dst) at the latent it returns,
        measured by the landmark model on that latent's render (one forward per frame, no gradient); a frame
        without a face repeats the previous warp with the previous latent."""
        if self.options.lip_warp <= 0:
            return results
        face = [r for r in results if r.losses and r.index in self._goals]
        shifts = {}
        for i in range(0, len(face), self.options.window):
            chunk = face[i:i + self.options.window]
            ws = torch.from_numpy(np.stack([r.ws for r in chunk])).to(self.device)
            with torch.no_grad():
                _, kp = _render_measure(self.person.G, self.net, self.affine, ws, self.bf16)
            for r, points in zip(chunk, _np(kp), strict=True):
                shifts[r.index] = lipwarp.lip_shift(points, self._goals[r.index], self.options.lip_warp)
        out = []
        for r in results:
            self._goals.pop(r.index, None)
            if r.index in shifts:
                self._last_lips = shifts[r.index]
            lips = shifts.get(r.index, self._last_lips)
            out.append(r if lips is None else dataclasses.replace(r, lip_src=lips[0].copy(), lip_dst=lips[1].copy()))
        return out

    def _smooth_latents(self, results: list[FrameResult], flush: bool = False) -> list[FrameResult]:
        """latent_sigma > 0: Gaussian-smoothed (alpha, delta) over the face frames, ws recomputed (the
        losses and keypoint_error stay those of the optimized point); a frame without a face repeats the
        previous returned (smoothed) latent."""
        if self._latents.radius == 0:
            return results
        done = []
        for r in results:
            value = np.concatenate([r.alpha.ravel(), r.delta.ravel()]) if r.losses else None
            done += self._latents.push(value, r)
        if flush:
            done += self._latents.flush()
        face = [v for _, v in done if v is not None]
        if face:
            n = self.anchors.shape[0]
            values = torch.from_numpy(np.stack(face)).to(self.device, torch.float32)
            alpha, delta = values[:, :n], values[:, n:].reshape(len(face), self.num_ws, n)
            spread = _np(pp.effective_anchors(alpha, delta, beta=self.options.beta))
            smoothed = iter(zip(self._ws(alpha, delta), _np(alpha), _np(delta), spread, strict=True))
        out = []
        for r, v in done:
            if v is not None:
                ws, alpha, delta, eff = next(smoothed)
                r = dataclasses.replace(r, ws=ws, alpha=alpha, delta=delta, anchors_eff=float(eff))
            elif self._last_out is not None:
                p = self._last_out
                r = dataclasses.replace(r, ws=p.ws.copy(), alpha=p.alpha.copy(), delta=p.delta.copy(),
                                        anchors_eff=p.anchors_eff)
            out.append(r)
            self._last_out = r
        return out

    # ------------------------------------------------------------------------------------------ windows

    def _run_full_windows(self) -> list[FrameResult]:
        out = []
        w = self.options.window
        while len(self._ready) >= w:
            out += self._run_window(self._ready[:w])
            del self._ready[:w]
        return out

    def _run_window(self, frames: list[_Frame]) -> list[FrameResult]:
        faces = [f for f in frames if f.smoothed is not None]
        if self.options.lip_warp > 0:
            self._goals.update((f.target.index, f.smoothed) for f in faces)
        done: dict[int, FrameResult] = {}
        if self.static:
            if faces:
                if self.should_stop():
                    raise CancelledError("reenactment cancelled")
                done = {r.index: r for r, _ in self._static().run(faces, images=False)}
        elif faces and self._previous is None and self.init not in PREDICTED_STARTS:
            first = faces.pop(0)
            alpha, delta = self._initial_point(first.smoothed)
            done.update(self._optimize([first], alpha, delta, self.options.first_frame_steps))
        if faces and not self.static:
            batch = self._batch(faces)
            alpha, delta = self._window_start(faces, batch)
            done.update(self._optimize(faces, alpha, delta, self.options.steps, batch))
        out = []
        for f in frames:
            result = done.get(f.target.index) or self._repeat(f.target.index)
            self._last_result = result
            out.append(result)
        return out

    def close(self) -> None:
        """Release what this stream holds on the device (the static step's CUDA graph, destroyed under the
        capture lock, reenact.optimize.graphed); idempotent. The optimizer service calls it when a stream ends."""
        if self._static_step is not None:
            self._static_step.close()
            self._static_step = None

    def _static(self):
        if self._static_step is None:
            from .graphed import StaticStep, WarmStart  # graphed imports this module

            warm = WarmStart.zeros(self.anchors.shape[0], self.num_ws, self.device)
            self._static_step = StaticStep(self, self.options.window, warm)
        return self._static_step

    @torch.no_grad()
    def _window_start(self, frames: list[_Frame], batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per frame of a window, the best (lowest total loss on this frame's target) of its candidate starts:
        the previous frame's result (the warm start, once there is one), the frame's own nearest anchor
        (init 'anchor' or 'mixed') and the amortized initializer's prediction (init 'regressor' or 'mixed').

        A warm start alone drags a window behind a fast motion (every frame of it starts where the last
        window ended); a fresh start alone forgets the fine fit. One batched forward decides."""
        b, n = len(frames), self.anchors.shape[0]
        zeros = torch.zeros(b, self.num_ws, n, device=self.device)
        names, alphas, deltas = [], [], []
        if self._previous is not None:
            prev_alpha, prev_delta = self._previous
            names.append("warm_starts")
            alphas.append(prev_alpha.expand(b, -1).clone())
            deltas.append(prev_delta.expand(b, -1, -1).clone())
            if self.mouth_direction is not None:
                from reenact.edit.directions import apply_edits

                s = self.options.mouth_starts
                for theta in (-2 * s, -s, s, 2 * s):
                    names.append("mouth_starts")
                    moved = apply_edits(prev_alpha, prev_delta, [(self.mouth_direction, theta)],
                                        beta=self.options.beta)
                    alphas.append(moved.expand(b, -1).clone())
                    deltas.append(prev_delta.expand(b, -1, -1).clone())
            if self.init not in PREDICTED_STARTS + ANCHOR_STARTS and len(alphas) == 1:
                return alphas[0], deltas[0]
        points = np.stack([f.smoothed for f in frames])
        if self.init in PREDICTED_STARTS:
            names.append("regressor_starts")
            alphas.append(self.person.initializer(torch.as_tensor(points, dtype=torch.float32, device=self.device)))
            deltas.append(zeros)
        if self.init in ANCHOR_STARTS:
            names.append("anchor_starts")
            alphas.append(pp.init_alpha(n, index=self.nearest_anchors(points).cpu(), batch_size=b).to(self.device))
            deltas.append(zeros)
        if len(alphas) == 1:
            self.stats[names[0]] += b
            return alphas[0], deltas[0]
        k = len(alphas)
        point = pp.PPlus(self.anchors, self.num_ws, batch_size=k * b, beta=self.options.beta)
        point.set_point(torch.cat(alphas), torch.cat(deltas))
        batch_k = _Batch(*(None if t is None else torch.cat([t] * k) for t in
                           (batch.targets, batch.pixels, batch.mouth, batch.eye)))
        choice = self._terms(point, batch_k)[0]["total"].reshape(k, b).argmin(0)  # [b]
        for j, name in enumerate(names):
            self.stats[name] += int((choice == j).sum())
        rows = torch.arange(b, device=self.device)
        alpha = torch.stack(alphas)[choice, rows]
        delta = torch.stack(deltas)[choice, rows]
        return alpha, delta

    def _repeat(self, index: int) -> FrameResult:
        """A frame without a face: the previous latent (or the P+ centre before any face), steps 0."""
        prev = self._last_result
        if prev is None:
            alpha = pp.init_alpha(self.anchors.shape[0]).to(self.device)
            delta = torch.zeros(self.num_ws, self.anchors.shape[0], device=self.device)
            ws = self._ws(alpha, delta)
            return FrameResult(index, ws, _np(alpha), _np(delta), {}, 0, float("nan"),
                               anchors_eff=float(pp.effective_anchors(alpha, delta, beta=self.options.beta)))
        return FrameResult(index, prev.ws.copy(), prev.alpha.copy(), prev.delta.copy(), {}, 0, float("nan"),
                           anchors_eff=prev.anchors_eff)

    def _initial_point(self, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.anchors.shape[0]
        if self.init == "anchor":
            alpha = pp.init_alpha(n, index=self.nearest_anchor(points))
        elif self.init == "uniform":
            alpha = pp.init_alpha(n)
        else:
            alpha = _dirichlet(n, torch.Generator().manual_seed(self.options.seed))
        return alpha.to(self.device), torch.zeros(self.num_ws, n, device=self.device)

    def nearest_anchor(self, points: np.ndarray) -> int:
        """Index of the anchor whose keypoints are closest to `points` [478, 3] at R (per-part normalized)."""
        return int(self.nearest_anchors(np.asarray(points)[None])[0])

    def nearest_anchors(self, points: np.ndarray) -> torch.Tensor:
        """nearest_anchor for a batch of keypoints [B, 478, 3]: anchor indices [B] (on the device)."""
        target = torch.as_tensor(points, dtype=torch.float32, device=self.device)
        b, n = target.shape[0], self.anchor_points.shape[0]
        anchors = self.anchor_points.unsqueeze(0).expand(b, -1, -1, -1).reshape(b * n, *target.shape[1:])
        target = target.unsqueeze(1).expand(-1, n, -1, -1).reshape(b * n, *target.shape[1:])
        return losses.keypoint_loss(anchors, target, self.subset).reshape(b, n).argmin(dim=1)

    # ------------------------------------------------------------------------------------- optimization

    def _optimize(self, frames: list[_Frame], alpha: torch.Tensor, delta: torch.Tensor,
                  budget: int, batch: _Batch | None = None) -> dict[int, FrameResult]:
        batch = batch if batch is not None else self._batch(frames)
        point = pp.PPlus(self.anchors, self.num_ws, batch_size=len(frames), beta=self.options.beta)
        point.set_point(alpha, delta)
        o = self.options
        opt = torch.optim.Adam([{"params": [point.alpha], "lr": o.learning_rate},
                                {"params": [point.delta], "lr": o.learning_rate * o.delta_lr_scale}],
                               betas=(0.9, 0.999))
        base_lrs = [g["lr"] for g in opt.param_groups]
        best, previous, steps = None, None, 0
        totals = []
        check = max(1, CHECK_EVERY)
        for _ in range(budget):
            if self.should_stop():
                raise CancelledError("reenactment cancelled")
            terms, error = self._terms(point, batch)
            best = _keep_best(best, point.alpha, point.delta, terms, error)
            steps += 1
            loss = terms["total"].sum()
            if self.trace is not None:
                totals.append({k: float(v.detach().mean()) for k, v in terms.items()})
            # The tolerance test reads the loss on the host: every CHECK_EVERY steps only, so the GPU is
            # not synchronized at every step.
            if self.options.tolerance > 0 and steps % check == 0:
                now = float(loss.detach())
                if previous is not None and abs(previous - now) <= self.options.tolerance * check * abs(previous):
                    break
                previous = now
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.lr_final != 1.0:
                frac = 1.0 - (1.0 - o.lr_final) * (steps - 1) / max(1, budget - 1)
                for group, lr in zip(opt.param_groups, base_lrs, strict=True):
                    group["lr"] = lr * frac
            opt.step()
        if self.trace is not None:
            self.trace.append(totals)
        return {f.target.index: self._result(f.target.index, best, i, steps) for i, f in enumerate(frames)}

    def _terms(self, point: pp.PPlus, batch: _Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        terms, error, _ = self._terms_images(point, batch)
        return terms, error

    def _terms_images(self, point, batch: _Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """(loss terms [B] each, keypoint error [B], generated images [B, 3, R, R] in [-1, 1]) at `point`
        (anything with ws(), l_delta() and l_sum(): a PPlus, or reenact.optimize.graphed's point)."""
        o = self.options
        fn = _render_measure_compiled() if self.compiled else _render_measure
        images, kp = fn(self.person.G, self.net, self.affine, point.ws(), self.bf16)
        zero = images.new_zeros(images.shape[0])
        keypoint = losses.keypoint_loss(kp, batch.targets, self.subset)
        if o.opening_weight > 0:
            keypoint = keypoint + o.opening_weight * losses.opening_loss(kp, batch.targets)
        terms = {"keypoint": keypoint, "mouth": zero, "eye": zero, "delta": point.l_delta(), "sum": point.l_sum(),
                 "entropy": zero}
        if o.alpha_entropy > 0:
            terms["entropy"] = o.alpha_entropy * pp.anchor_entropy(point.coefficients())
        if batch.pixels is not None and o.mouth_weight > 0:
            terms["mouth"] = losses.masked_l2(images, batch.pixels, batch.mouth)
        if batch.pixels is not None and o.eye_weight > 0:
            terms["eye"] = losses.masked_l2(images, batch.pixels, batch.eye)
        terms["total"] = (o.keypoint_weight * terms["keypoint"] + o.mouth_weight * terms["mouth"]
                          + o.eye_weight * terms["eye"] + terms["delta"] + terms["sum"] + terms["entropy"])
        return terms, keypoint_error(kp.detach(), batch.targets, self.subset), images

    def _batch(self, frames: list[_Frame]) -> _Batch:
        dev = self.device
        targets = torch.from_numpy(np.stack([f.smoothed for f in frames])).float().to(dev)
        batch = _Batch(targets)
        with_crop = [f for f in frames if f.target.crop is not None]
        if not with_crop or (self.options.mouth_weight <= 0 and self.options.eye_weight <= 0):
            return batch
        pixels, mouth, eye = zip(*(self._pixel_inputs(f) for f in frames), strict=True)
        batch.pixels = torch.stack(pixels).to(dev)
        batch.mouth = torch.from_numpy(np.stack(mouth)).to(dev)
        batch.eye = torch.from_numpy(np.stack(eye)).to(dev)
        return batch

    def _pixel_inputs(self, frame: _Frame) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """A frame's driving pixels [3, R, R] in [-1, 1] and its mouth and iris masks [R, R] (all zero
        without a crop: no pixel terms for that frame)."""
        r = self.resolution
        if frame.target.crop is None:
            return torch.zeros(3, r, r), np.zeros((r, r), np.float32), np.zeros((r, r), np.float32)
        mouth, eye = losses.region_masks(frame.raw, r)
        return losses.crop_to_tensor(np.asarray(frame.target.crop), r), mouth, eye

    def _result(self, index: int, best: _Best, i: int, steps: int) -> FrameResult:
        alpha, delta = best.alpha[i], best.delta[i]
        self._previous = (alpha, delta)  # frames come in order: the last one wins
        terms = {k: float(best.terms[k][i]) for k in LOSS_NAMES}
        return FrameResult(index, self._ws(alpha, delta), _np(alpha), _np(delta), terms, steps,
                           float(best.error[i]),
                           anchors_eff=float(pp.effective_anchors(alpha, delta, beta=self.options.beta)))

    @torch.no_grad()
    def _ws(self, alpha: torch.Tensor, delta: torch.Tensor) -> np.ndarray:
        coeffs = pp.coefficients(alpha, delta, beta=self.options.beta)
        return _np(pp.combine(coeffs, self.anchors))


def _render_measure(G, net, affine: torch.Tensor, ws: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The differentiable forward of a step: W+ -> generated images [B, 3, R, R] -> MediaPipe keypoints."""
    # cache_enabled=False: each weight is cast once per forward anyway, and a CUDA graph may capture this
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
        images = G.synthesis(ws, noise_mode="const")
    images = images.float()
    return images, losses.generated_keypoints(net, images, affine)


@functools.cache
def _render_measure_compiled():
    """_render_measure under torch.compile, one per process (compiled per generator, batch size and grad mode:
    a stream sees a few batch sizes, so the per-function graph limit is raised from its default of 8)."""
    import torch._dynamo

    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 64))
    return torch.compile(_render_measure, dynamic=False)


@torch.no_grad()
def _keep_best(best: _Best | None, alpha: torch.Tensor, delta: torch.Tensor, terms: dict[str, torch.Tensor],
               error: torch.Tensor) -> _Best:
    """Per frame, the point (alpha [B, N], delta [B, num_ws, N]) with the lowest total loss so far (and its
    terms)."""
    total = terms["total"].detach()
    snap = {k: v.detach().clone() for k, v in terms.items()}
    if best is None:
        return _Best(total.clone(), alpha.detach().clone(), delta.detach().clone(), snap, error.clone())
    better = total < best.total
    best.total = torch.where(better, total, best.total)
    best.alpha = torch.where(better[:, None], alpha.detach(), best.alpha)
    best.delta = torch.where(better[:, None, None], delta.detach(), best.delta)
    best.terms = {k: torch.where(better, snap[k], best.terms[k]) for k in snap}
    best.error = torch.where(better, error, best.error)
    return best


def _dirichlet(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random convex mix of the anchors (flat Dirichlet), reproducible under `gen`."""
    e = -torch.log(torch.rand(n, generator=gen).clamp_min(1e-12))
    return e / e.sum()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float32)
