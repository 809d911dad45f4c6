import numpy as np
import pytest
import torch

from reenact.enroll import select
from reenact.perceptual import PerceptualLoss


def test_farthest_point_order_on_a_line():
    x = np.array([0.0, 1.0, 2.0, 10.0, 10.1])
    d = np.abs(x[:, None] - x[None])
    assert select.farthest_point_order(d, 0, 3) == [0, 4, 2]
    # near duplicates stop the sampling
    assert select.farthest_point_order(d, 0, 5, min_dist=0.5) == [0, 4, 2, 1]


def test_split_anchors_heldout_disjoint_and_spread():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(40, 3))
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    anchors, heldout = select.split_anchors_heldout(d, 5, 10, 4, seed=1)
    assert len(anchors) == 10 and len(heldout) == 4
    assert anchors[0] == 5 and not set(anchors) & set(heldout)
    assert len(set(np.digitize(heldout, [10, 20, 30]))) == 4  # one per quarter of the scan


def test_quality_mask_drops_blurry_and_faceless():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    flat = np.full((2, 32, 32, 3), 128, np.uint8)
    crops = np.concatenate([sharp, flat])
    has_face = np.array([1, 1, 1, 0, 1, 1], bool)
    assert select.quality_mask(crops, has_face).tolist() == [True, True, True, False, False, False]


def test_most_neutral_frame():
    yaw = np.array([20.0, 1.0, 0.5, -30])
    pitch = np.array([0.0, 2.0, 0.0, 0])
    mouth = np.array([0.0, 0.0, 0.5, 0])
    assert select.most_neutral_frame(yaw, pitch, mouth) == 1


@pytest.fixture(scope="module")
def perceptual():
    return PerceptualLoss()


def test_perceptual_offline_backbone(perceptual):
    assert perceptual.backbone == "mobilenetv2-lpips"
    a = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.allclose(perceptual(a, a), torch.zeros(3))
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    c = (a + 0.05 * torch.randn_like(a)).clamp(-1, 1)
    assert (perceptual(a, b) > perceptual(a, c)).all()
    d = perceptual.pairwise(a, b)
    assert torch.allclose(d.diag(), perceptual(a, b), atol=1e-4)


def test_perceptual_gradients_reach_input(perceptual):
    a = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    perceptual(a, torch.zeros_like(a)).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in perceptual.parameters())
