"""StyleGAN2 networks: shapes, NVlabs names, reference ops against independent formulations, modes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reenact.models.stylegan2 import (
    Discriminator,
    Generator,
    config_f_kwargs,
    conv2d_resample,
    downsample2d,
    modulated_conv2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)

TINY = dict(z_dim=32, w_dim=32, img_resolution=32, channel_base=512, channel_max=32, num_mapping_layers=2)


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    g = Generator(**TINY).eval()
    with torch.no_grad():  # nonzero noise strengths so noise modes matter
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return g


def test_shapes_num_ws_and_init_kwargs(G):
    assert G.num_ws == 8 and G.img_resolution == 32 and G.w_dim == 32
    z = torch.randn(3, 32)
    ws = G.mapping(z)
    assert ws.shape == (3, G.num_ws, 32)
    img = G.synthesis(ws)
    assert img.shape == (3, 3, 32, 32) and torch.isfinite(img).all()
    rebuilt = Generator(**G.init_kwargs)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in G.state_dict().items()}


def test_nvlabs_names_and_shapes(G):
    shapes = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    expected = {
        "mapping.fc0.weight": (32, 32), "mapping.fc1.bias": (32,), "mapping.w_avg": (32,),
        "synthesis.b4.const": (32, 4, 4), "synthesis.b4.resample_filter": (4, 4),
        "synthesis.b4.conv1.weight": (32, 32, 3, 3), "synthesis.b4.conv1.noise_const": (4, 4),
        "synthesis.b4.conv1.noise_strength": (), "synthesis.b4.conv1.affine.weight": (32, 32),
        "synthesis.b4.torgb.weight": (3, 32, 1, 1), "synthesis.b4.torgb.affine.bias": (32,),
        "synthesis.b32.conv0.weight": (16, 32, 3, 3), "synthesis.b32.conv0.noise_const": (32, 32),
        "synthesis.b32.conv0.resample_filter": (4, 4), "synthesis.b32.conv1.bias": (16,),
        "synthesis.b32.torgb.weight": (3, 16, 1, 1),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    assert not any(k.startswith("synthesis.b4.conv0") for k in shapes)


def test_config_f_size_matches_nvlabs():
    with torch.device("meta"):
        g = Generator(**config_f_kwargs(1024))
    assert g.num_ws == 18
    assert sum(p.numel() for p in g.parameters()) == 30_370_060  # NVlabs FFHQ-1024 config-f G
    with torch.device("meta"):
        assert Generator(**config_f_kwargs(256)).num_ws == 14


def test_channel_schedule_scales_with_width():
    kw = config_f_kwargs(64, width=1 / 256, channel_max=64, w_dim=64)
    g = Generator(**kw)
    assert kw["channel_base"] == 128
    assert g.synthesis.channels == {4: 32, 8: 16, 16: 8, 32: 4, 64: 2}


def test_noise_modes(G):
    ws = G.mapping(torch.randn(2, 32))
    with torch.no_grad():
        const_a, const_b = G.synthesis(ws), G.synthesis(ws, noise_mode="const")
        rand_a, rand_b = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
        none = G.synthesis(ws, noise_mode="none")
    assert torch.equal(const_a, const_b)
    assert not torch.allclose(rand_a, rand_b)
    assert not torch.allclose(none, const_a)
    with pytest.raises(ValueError):
        G.synthesis(ws, noise_mode="bogus")


def test_fused_modconv_equals_unfused(G):
    ws = G.mapping(torch.randn(3, 32))
    with torch.no_grad():
        a = G.synthesis(ws)
        b = G.synthesis(ws, fused_modconv=True)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_truncation_and_w_avg_ema(G):
    g = Generator(**TINY)
    z = torch.randn(4, 32)
    g.train()
    g.mapping(z)  # no update without update_emas
    assert torch.count_nonzero(g.mapping.w_avg) == 0
    w = g.mapping(z, update_emas=True)[:, 0].detach()
    torch.testing.assert_close(g.mapping.w_avg, w.mean(0) * (1 - 0.995))
    g.eval()
    full = g.mapping(z, truncation_psi=0)
    torch.testing.assert_close(full, g.mapping.w_avg.expand_as(full))
    cut = g.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    plain = g.mapping(z)
    torch.testing.assert_close(cut[:, 3:], plain[:, 3:])
    torch.testing.assert_close(cut[:, :3], g.mapping.w_avg.lerp(plain[:, :3], 0.5))


def test_conditional_mapping():
    g = Generator(**{**TINY, "c_dim": 5})
    c = F.one_hot(torch.tensor([0, 3]), 5).float()
    img = g(torch.randn(2, 32), c)
    assert img.shape == (2, 3, 32, 32)
    assert "mapping.embed.weight" in g.state_dict()


def test_gradients_reach_ws_and_weights(G):
    ws = G.mapping(torch.randn(2, 32)).detach().requires_grad_(True)
    G.synthesis(ws).square().mean().backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0
    assert G.synthesis.b4.const.grad.abs().sum() > 0
    G.zero_grad(set_to_none=True)


def test_bad_inputs_raise(G):
    with pytest.raises(ValueError):
        Generator(**{**TINY, "img_resolution": 48})
    with pytest.raises(ValueError):
        G.synthesis(torch.randn(1, G.num_ws + 1, 32))
    with pytest.raises(ValueError):
        G.mapping(torch.randn(1, 7))


def test_autocast_bf16_runs_close_to_fp32(G):
    ws = G.mapping(torch.randn(2, 32))
    with torch.no_grad():
        ref = G.synthesis(ws)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = G.synthesis(ws)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - ref).abs().mean() < 0.05 * ref.abs().mean() + 1e-3


# ---------------------------------------------------------------------------------------------------
# Reference ops against independent formulations


def _zero_insert(x: torch.Tensor, up: int) -> torch.Tensor:
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h * up, w * up)
    out[:, :, ::up, ::up] = x
    return out


def _fir(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    c = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, f.flip([0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)


def test_upsampling_conv_equals_zero_insert_filter_then_true_convolution():
    torch.manual_seed(1)
    x, w, f = torch.randn(2, 5, 6, 6), torch.randn(4, 5, 3, 3), setup_filter()
    ours = conv2d_resample(x, w, f, up=2, padding=1)
    # NVlabs generic path: upfirdn (up 2, pad 1+2 / 1+1, gain 4), then convolution (flipped weights).
    ref = F.conv2d(_fir(_zero_insert(x, 2), f * 4, (3, 2)), w.flip([2, 3]))
    assert ours.shape == (2, 4, 12, 12)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_downsampling_conv_equals_filter_conv_then_subsample():
    torch.manual_seed(2)
    x, f = torch.randn(2, 5, 8, 8), setup_filter()
    w3, w1 = torch.randn(4, 5, 3, 3), torch.randn(4, 5, 1, 1)
    ref3 = F.conv2d(_fir(x, f, (2, 2)), w3)[:, :, ::2, ::2]
    torch.testing.assert_close(conv2d_resample(x, w3, f, down=2, padding=1), ref3, atol=1e-5, rtol=1e-5)
    ref1 = F.conv2d(_fir(x, f, (1, 1)), w1)[:, :, ::2, ::2]
    torch.testing.assert_close(conv2d_resample(x, w1, f, down=2), ref1, atol=1e-5, rtol=1e-5)


def test_resampling_preserves_constants_and_filter_is_normalized():
    f = setup_filter()
    assert f.shape == (4, 4) and math.isclose(float(f.sum()), 1.0, rel_tol=1e-6)
    x = torch.full([1, 2, 8, 8], 3.0)
    up, down = upsample2d(x, f), downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 3.0))
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.full_like(down[:, :, 1:-1, 1:-1], 3.0))
    assert upfirdn2d(x, f, padding=(1, 2, 1, 2)).shape == (1, 2, 8, 8)


def test_modulated_conv_matches_per_sample_loop():
    torch.manual_seed(3)
    x, w, s = torch.randn(3, 4, 5, 5), torch.randn(6, 4, 3, 3), torch.randn(3, 4)
    out = modulated_conv2d(x, w, s, padding=1)
    for i in range(3):
        wi = w * s[i].reshape(1, 4, 1, 1)
        wi = wi / (wi.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        torch.testing.assert_close(out[i:i + 1], F.conv2d(x[i:i + 1], wi, padding=1), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Discriminator


def test_discriminator_shapes_names_and_gradients():
    torch.manual_seed(4)
    d = Discriminator(img_resolution=32, channel_base=512, channel_max=32)
    keys = d.state_dict().keys()
    for key in ("b32.fromrgb.weight", "b32.conv1.resample_filter", "b32.skip.weight", "b8.conv0.bias",
                "b4.conv.weight", "b4.fc.weight", "b4.out.bias"):
        assert key in keys, key
    assert "b16.fromrgb.weight" not in keys and "b32.skip.bias" not in keys
    img = torch.randn(6, 3, 32, 32, requires_grad=True)  # 6 is not a multiple of the group size 4
    logits = d(img)
    assert logits.shape == (6, 1)
    logits.sum().backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


def test_conditional_discriminator():
    d = Discriminator(c_dim=3, img_resolution=32, channel_base=512, channel_max=32, num_mapping_layers=2)
    out = d(torch.randn(4, 3, 32, 32), F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float())
    assert out.shape == (4, 1) and "mapping.fc1.weight" in d.state_dict()
