"""A person version loaded for reenactment: its generator and its anchors (from reenact.enroll)."""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass

import torch

from reenact.errors import NotFoundError


@dataclass
class PersonModel:
    person_id: str
    version: int
    G: torch.nn.Module
    anchor_w: torch.Tensor       # [N, w_dim]
    anchor_points: torch.Tensor  # [N, 478, 3] MediaPipe points of the anchor frames, aligned-crop pixels at R
    resolution: int
    initializer: torch.nn.Module | None = None  # amortized init (reenact.optimize.amortized), when enrolled with one

    @classmethod
    def load(cls, repo, person_id: str, version: int | None = None, device="cpu") -> PersonModel:
        """`version` None: the latest committed one. NotFoundError for an unknown person or version."""
        from reenact.models.checkpoint import load_generator

        if version is None:
            version = repo.latest_version(person_id)
            if version is None:
                raise NotFoundError(f"person {person_id!r} has no committed version", reason="PERSON_NOT_FOUND")
        elif int(version) not in repo.versions(person_id):
            raise NotFoundError(f"person {person_id!r} has no committed version {version}",
                                reason="VERSION_NOT_FOUND")
        gen_bytes = repo.read(person_id, version, "generator.pt")
        anchors = torch.load(io.BytesIO(repo.read(person_id, version, "anchors.pt")), map_location="cpu",
                             weights_only=True)
        fd, path = tempfile.mkstemp(suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(gen_bytes)
            G = load_generator(path, device=device)
        finally:
            os.unlink(path)
        person = cls.from_parts(person_id, int(version), G, anchors["anchor_w"], anchors["anchor_points"], device)
        from reenact.optimize.amortized import FILE_NAME, KeypointRegressor

        if FILE_NAME in repo.manifest(person_id, int(version)).files:
            person.initializer = KeypointRegressor.from_bytes(repo.read(person_id, version, FILE_NAME), device)
            if person.initializer.num_anchors != person.anchor_w.shape[0]:
                raise ValueError(f"{FILE_NAME} of {person_id} v{version} predicts {person.initializer.num_anchors} "
                                 f"anchors, the version has {person.anchor_w.shape[0]}")
        return person

    @classmethod
    def from_parts(cls, person_id: str, version: int, G, anchor_w, anchor_points, device="cpu") -> PersonModel:
        """Build from in-memory parts (tests, benchmarks); G frozen in eval mode on `device`."""
        G = G.to(device).eval().requires_grad_(False)
        w = torch.as_tensor(anchor_w).float().to(device)
        pts = torch.as_tensor(anchor_points).float().to(device)
        if w.ndim != 2 or pts.shape != (w.shape[0], 478, 3):
            raise ValueError(f"anchors: anchor_w {list(w.shape)} and anchor_points {list(pts.shape)} disagree")
        return cls(person_id, version, G, w, pts, int(G.img_resolution))

    def nbytes(self) -> int:
        tensors = [*self.G.parameters(), *self.G.buffers(), self.anchor_w, self.anchor_points]
        if self.initializer is not None:
            tensors += [*self.initializer.parameters(), *self.initializer.buffers()]
        return int(sum(t.numel() * t.element_size() for t in tensors))
