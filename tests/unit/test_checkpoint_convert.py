"""Checkpoints (save/load/errors) and converters for NVlabs .pkl and rosinality .pt files.

The NVlabs pickle is written exactly as NVlabs' `torch_utils.persistence` writes one: every network is
pickled as `torch_utils.persistence._reconstruct_persistent_obj(meta)` with meta = {type, version,
module_src, class_name, state=module.__dict__ (+ _init_args/_init_kwargs)}, kwargs in
`dnnlib.util.EasyDict`s, numpy float64 attributes. The stand-in modules exist only while pickling.
The rosinality checkpoint uses the key names and shapes of rosinality's `Generator` (model.py), and its
output is checked against an independent re-implementation of rosinality's forward pass.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import math
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reenact.models.checkpoint import (
    CheckpointError,
    load_generator,
    load_networks,
    save_generator,
    save_networks,
)
from reenact.models.convert import (
    convert,
    convert_nvlabs,
    convert_rosinality,
    main,
    rosinality_generator_kwargs,
    rosinality_to_nvlabs_names,
)
from reenact.models.stylegan2 import Discriminator, Generator, setup_filter

TINY = dict(z_dim=32, w_dim=32, img_resolution=32, channel_base=512, channel_max=32, num_mapping_layers=2)
PROV = {"source": "unit-test"}


def _tiny_g(seed: int = 0, **kw) -> Generator:
    torch.manual_seed(seed)
    g = Generator(**{**TINY, **kw})
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.uniform_(0.1, 0.5)
        g.mapping.w_avg.normal_()
    return g.eval()


# ---------------------------------------------------------------------------------------------------
# Our checkpoint format


def test_roundtrip_generator_and_discriminator(tmp_path):
    g = _tiny_g()
    d = Discriminator(img_resolution=32, channel_base=512, channel_max=32)
    path = save_networks(tmp_path / "net.pt", G=g, D=d, provenance={**PROV, "notes": "n"}, extra={"step": 7})
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert raw["networks"]["G"]["kwargs"] == g.init_kwargs
    nets = load_networks(path)
    assert nets.provenance["source"] == "unit-test" and nets.provenance["notes"] == "n"
    assert "created_at" in nets.provenance and nets.provenance["created_by"] == "reenact"
    assert nets.extra == {"step": 7}
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(nets.G(z), g(z))
        img = torch.randn(4, 3, 32, 32)
        assert torch.equal(nets.D(img), d(img))
    g2 = load_generator(path)
    assert not g2.training and torch.equal(g2.mapping.w_avg, g.mapping.w_avg)


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_generator(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_generator(tmp_path / "garbage.pt")
    torch.save({"g_ema": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="convert"):
        load_generator(tmp_path / "foreign.pt")


def test_mismatched_shapes_raise(tmp_path):
    path = save_generator(tmp_path / "g.pt", _tiny_g(), provenance=PROV)
    payload = torch.load(path, weights_only=True)
    payload["networks"]["G"]["kwargs"]["channel_max"] = 16
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_generator(tmp_path / "bad.pt")
    payload["networks"]["G"]["kwargs"] = {"bogus": 1}
    torch.save(payload, tmp_path / "bad2.pt")
    with pytest.raises(CheckpointError, match="kwargs"):
        load_generator(tmp_path / "bad2.pt")


def test_save_validates_provenance_and_extra(tmp_path):
    with pytest.raises(CheckpointError, match="provenance"):
        save_generator(tmp_path / "a.pt", _tiny_g(), provenance={})
    with pytest.raises(CheckpointError, match="cannot be stored"):
        save_generator(tmp_path / "b.pt", _tiny_g(), provenance=PROV, extra={"x": object()})
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------
# NVlabs stylegan2-ada-pytorch .pkl, written in the persistence format by stand-in modules


class _Persisted:
    def __init__(self, reconstruct, meta: dict) -> None:
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return (self.reconstruct, (self.meta,))


def _persist(module: torch.nn.Module, reconstruct, init_kwargs: dict) -> _Persisted:
    state = {k: (np.float64(v) if isinstance(v, float) else v) for k, v in module.__dict__.items()}
    state["_modules"] = collections.OrderedDict(
        (name, _persist(child, reconstruct, {})) for name, child in module._modules.items())
    state["_init_args"], state["_init_kwargs"] = (), init_kwargs
    meta = dict(type="class", version=6, module_src="# training/networks.py source (stand-in)\n",
                class_name=type(module).__name__, state=state)
    return _Persisted(reconstruct, meta)


@contextlib.contextmanager
def nvlabs_stand_ins():
    """Modules named like NVlabs' with the two globals their pickles reference, only while pickling."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the converter must not call NVlabs code")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    easy = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util.EasyDict = easy
    torch_utils, dnnlib = types.ModuleType("torch_utils"), types.ModuleType("dnnlib")
    torch_utils.persistence, dnnlib.util, dnnlib.EasyDict = persistence, util, easy
    with pytest.MonkeyPatch.context() as m:
        for name, mod in [("torch_utils", torch_utils), ("torch_utils.persistence", persistence),
                          ("dnnlib", dnnlib), ("dnnlib.util", util)]:
            m.setitem(sys.modules, name, mod)
        yield _reconstruct_persistent_obj, easy
    assert "torch_utils.persistence" not in sys.modules


def _write_nvlabs_pkl(path, reconstruct, easy, g_ema: Generator, d: Discriminator, g: Generator) -> None:
    g_kwargs = dict(z_dim=32, w_dim=32, mapping_kwargs=easy(num_layers=2),
                    synthesis_kwargs=easy(channel_base=512, channel_max=32, num_fp16_res=4, conv_clamp=256),
                    c_dim=0, img_resolution=32, img_channels=3)
    d_kwargs = dict(c_dim=0, img_resolution=32, img_channels=3, architecture="resnet", channel_base=512,
                    channel_max=32, num_fp16_res=4, conv_clamp=256, block_kwargs=easy(),
                    mapping_kwargs=easy(), epilogue_kwargs=easy(mbstd_group_size=4))

    def frozen(net):
        return copy.deepcopy(net).eval().requires_grad_(False)

    data = dict(training_set_kwargs=dict(path="ffhq.zip", resolution=32, use_labels=False),
                G=_persist(frozen(g), reconstruct, g_kwargs), D=_persist(frozen(d), reconstruct, d_kwargs),
                G_ema=_persist(frozen(g_ema), reconstruct, g_kwargs), augment_pipe=None)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=3)  # Python 3.7's default, as in the released NVlabs pickles


@pytest.fixture
def nvlabs_pkl(tmp_path):
    g_ema, g = _tiny_g(1, conv_clamp=256), _tiny_g(2, conv_clamp=256)
    torch.manual_seed(3)
    d = Discriminator(img_resolution=32, channel_base=512, channel_max=32, conv_clamp=256)
    path = tmp_path / "network-snapshot.pkl"
    with nvlabs_stand_ins() as (reconstruct, easy):
        _write_nvlabs_pkl(path, reconstruct, easy, g_ema=g_ema, d=d, g=g)
    return path, g_ema, d


def test_nvlabs_pickle_converts_as_identity(nvlabs_pkl):
    path, g_ema, d = nvlabs_pkl
    assert b"torch_utils.persistence" in path.read_bytes() and b"dnnlib.util" in path.read_bytes()
    nets = convert_nvlabs(path)
    assert nets.G.init_kwargs["conv_clamp"] == 256 and nets.G.init_kwargs["num_mapping_layers"] == 2
    src, ours = g_ema.state_dict(), nets.G.state_dict()
    assert src.keys() == ours.keys()
    assert all(torch.equal(src[k], ours[k]) for k in src)
    assert all(torch.equal(v, nets.D.state_dict()[k]) for k, v in d.state_dict().items())
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(nets.G(z), g_ema(z))
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


def test_nvlabs_cli_writes_our_format(nvlabs_pkl, tmp_path, capsys):
    path, g_ema, _ = nvlabs_pkl
    dst = tmp_path / "out" / "g.pt"
    assert main([str(path), str(dst), "--source", "https://example.invalid/ffhq.pkl"]) == 0
    assert "num_ws=8" in capsys.readouterr().out
    nets = load_networks(dst)
    assert nets.D is not None
    assert nets.provenance["source"] == "https://example.invalid/ffhq.pkl"
    assert nets.provenance["source_format"] == "nvlabs-stylegan2-pkl" and len(nets.provenance["source_sha256"]) == 64
    assert torch.equal(nets.G.synthesis.b32.conv1.weight, g_ema.synthesis.b32.conv1.weight)
    assert main([str(path), str(tmp_path / "g_only.pt"), "--no-D"]) == 0
    assert load_networks(tmp_path / "g_only.pt").D is None


def test_nvlabs_unsupported_architecture_raises(tmp_path):
    g = _tiny_g()
    with nvlabs_stand_ins() as (reconstruct, easy), open(tmp_path / "resnet.pkl", "wb") as f:
        kwargs = dict(z_dim=32, w_dim=32, c_dim=0, img_resolution=32, img_channels=3,
                      mapping_kwargs=easy(num_layers=2),
                      synthesis_kwargs=easy(channel_base=512, channel_max=32, architecture="resnet"))
        pickle.dump({"G_ema": _persist(g, reconstruct, kwargs)}, f)
    with pytest.raises(CheckpointError, match="architecture"):
        convert_nvlabs(tmp_path / "resnet.pkl")


class _Evil:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_restricted_unpickler_refuses_foreign_globals(tmp_path):
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _Evil()}))
    with pytest.raises(CheckpointError, match="builtins.eval"):
        convert_nvlabs(tmp_path / "evil.pkl")
    (tmp_path / "tf.pkl").write_bytes(pickle.dumps((1, 2, 3)))
    with pytest.raises(CheckpointError, match="TensorFlow"):
        convert_nvlabs(tmp_path / "tf.pkl")


# ---------------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch .pt


def _ros_shapes(size: int, style_dim: int, n_mlp: int, channels: dict[int, int]) -> dict[str, tuple]:
    """Key -> shape of rosinality's Generator(size, style_dim, n_mlp) state dict with `channels`."""
    shapes: dict[str, tuple] = {}
    for i in range(1, n_mlp + 1):
        shapes[f"style.{i}.weight"], shapes[f"style.{i}.bias"] = (style_dim, style_dim), (style_dim,)
    c4 = channels[4]
    shapes["input.input"] = (1, c4, 4, 4)

    def styled(prefix, cin, cout, up):
        shapes[f"{prefix}.conv.weight"] = (1, cout, cin, 3, 3)
        if up:
            shapes[f"{prefix}.conv.blur.kernel"] = (4, 4)
        shapes[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        shapes[f"{prefix}.conv.modulation.bias"] = (cin,)
        shapes[f"{prefix}.noise.weight"] = (1,)
        shapes[f"{prefix}.activate.bias"] = (cout,)

    def to_rgb(prefix, cin, up):
        shapes[f"{prefix}.bias"] = (1, 3, 1, 1)
        if up:
            shapes[f"{prefix}.upsample.kernel"] = (4, 4)
        shapes[f"{prefix}.conv.weight"] = (1, 3, cin, 1, 1)
        shapes[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        shapes[f"{prefix}.conv.modulation.bias"] = (cin,)

    styled("conv1", c4, c4, False)
    to_rgb("to_rgb1", c4, False)
    log_size = int(math.log2(size))
    for idx in range((log_size - 2) * 2 + 1):
        r = 2 ** ((idx + 5) // 2)
        shapes[f"noises.noise_{idx}"] = (1, 1, r, r)
    cin = c4
    for k, i in enumerate(range(3, log_size + 1)):
        cout = channels[2 ** i]
        styled(f"convs.{2 * k}", cin, cout, True)
        styled(f"convs.{2 * k + 1}", cout, cout, False)
        to_rgb(f"to_rgbs.{k}", cout, True)
        cin = cout
    return shapes


def _ros_state(shapes: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("kernel"):
            out[key] = setup_filter() * 4
        elif key.endswith("modulation.bias"):
            out[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif key.startswith("style.") and key.endswith("weight"):
            out[key] = torch.randn(shape, generator=gen) / 0.01  # EqualLinear(lr_mul=0.01) init
        else:
            out[key] = 0.3 * torch.randn(shape, generator=gen)
    return out


# Independent forward pass with rosinality's semantics (fused grouped modconv, transposed conv + blur).

def _ros_blur(x, kernel, pad0, pad1, up=1):
    if up > 1:
        n, c, h, w = x.shape
        z = x.new_zeros(n, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    return F.conv2d(x, kernel.flip([0, 1])[None, None].repeat(x.shape[1], 1, 1, 1), groups=x.shape[1])


def _ros_modconv(sd, p, x, style, demod=True, up=False):
    b, cin, h, w = x.shape
    weight = sd[f"{p}.conv.weight"]
    cout, k = weight.shape[1], weight.shape[-1]
    s = F.linear(style, sd[f"{p}.conv.modulation.weight"] / math.sqrt(style.shape[1]),
                 sd[f"{p}.conv.modulation.bias"])
    weight = weight / math.sqrt(cin * k * k) * s.view(b, 1, cin, 1, 1)
    if demod:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, cout, 1, 1, 1)
    x = x.reshape(1, b * cin, h, w)
    if up:
        wt = weight.transpose(1, 2).reshape(b * cin, cout, k, k)
        out = F.conv_transpose2d(x, wt, padding=0, stride=2, groups=b)
        out = out.view(b, cout, *out.shape[2:])
        return _ros_blur(out, sd[f"{p}.conv.blur.kernel"], 1, 1)
    out = F.conv2d(x, weight.reshape(b * cout, cin, k, k), padding=k // 2, groups=b)
    return out.view(b, cout, *out.shape[2:])


def _ros_styled(sd, p, x, style, noise, up=False):
    out = _ros_modconv(sd, p, x, style, up=up) + sd[f"{p}.noise.weight"] * noise
    return F.leaky_relu(out + sd[f"{p}.activate.bias"].view(1, -1, 1, 1), 0.2) * math.sqrt(2)


def _ros_to_rgb(sd, p, x, style, skip=None):
    out = _ros_modconv(sd, p, x, style, demod=False) + sd[f"{p}.bias"]
    if skip is not None:
        out = out + _ros_blur(skip, sd[f"{p}.upsample.kernel"], 2, 1, up=2)
    return out


def _ros_mapping(sd, z, n_mlp, lr_mul=0.01):
    x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        x = F.linear(x, sd[f"style.{i}.weight"] * lr_mul / math.sqrt(x.shape[1]))
        x = F.leaky_relu(x + sd[f"style.{i}.bias"] * lr_mul, 0.2) * math.sqrt(2)
    return x


def _ros_synthesis(sd, latent, num_blocks):
    noise = [sd[f"noises.noise_{i}"] for i in range(2 * num_blocks + 1)]
    out = sd["input.input"].repeat(latent.shape[0], 1, 1, 1)
    out = _ros_styled(sd, "conv1", out, latent[:, 0], noise[0])
    skip = _ros_to_rgb(sd, "to_rgb1", out, latent[:, 1])
    for k in range(num_blocks):
        i = 1 + 2 * k
        out = _ros_styled(sd, f"convs.{2 * k}", out, latent[:, i], noise[i], up=True)
        out = _ros_styled(sd, f"convs.{2 * k + 1}", out, latent[:, i + 1], noise[i + 1])
        skip = _ros_to_rgb(sd, f"to_rgbs.{k}", out, latent[:, i + 2], skip)
    return skip


ROS_CHANNELS = {4: 32, 8: 32, 16: 32, 32: 16}


@pytest.fixture
def ros_ckpt(tmp_path):
    sd = _ros_state(_ros_shapes(32, 32, 2, ROS_CHANNELS))
    path = tmp_path / "550000.pt"
    args = argparse.Namespace(size=32, latent=32, n_mlp=2, channel_multiplier=2)
    latent_avg = torch.randn(32)
    torch.save({"g": sd, "d": {}, "g_ema": sd, "args": args, "latent_avg": latent_avg}, path)
    return path, sd, latent_avg


def test_rosinality_converts_and_matches_reference_forward(ros_ckpt):
    path, sd, latent_avg = ros_ckpt
    G = convert_rosinality(path).G
    assert G.img_resolution == 32 and G.num_ws == 8 and G.synthesis.channels == ROS_CHANNELS
    assert torch.equal(G.mapping.w_avg, latent_avg)
    assert torch.equal(G.synthesis.b8.conv0.weight, sd["convs.0.conv.weight"][0])
    assert torch.equal(G.synthesis.b32.conv1.noise_const, sd["noises.noise_6"][0, 0])
    torch.manual_seed(5)
    z = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(z)[:, 0], _ros_mapping(sd, z, 2), atol=1e-4, rtol=1e-4)
        ws = torch.randn(3, G.num_ws, 32)  # a different code per layer exercises the layer order
        ref = _ros_synthesis(sd, ws, num_blocks=3)
        ours = G.synthesis(ws, noise_mode="const")
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
        assert torch.equal(G.synthesis(ws), ours)


def test_rosinality_auto_detect_cli_and_missing_latent_avg(ros_ckpt, tmp_path):
    path, sd, _ = ros_ckpt
    dst = tmp_path / "ros.pt"
    assert main([str(path), str(dst)]) == 0
    assert load_networks(dst).provenance["source_format"] == "rosinality-stylegan2-pt"
    torch.save({"g_ema": sd}, tmp_path / "no_avg.pt")
    nets = convert(tmp_path / "no_avg.pt")
    assert "estimated" in nets.provenance["notes"] and torch.isfinite(nets.G.mapping.w_avg).all()
    bad = dict(sd, **{"convs.0.conv.blur.kernel": torch.ones(4, 4)})
    torch.save({"g_ema": bad}, tmp_path / "bad_kernel.pt")
    with pytest.raises(CheckpointError, match="FIR"):
        convert(tmp_path / "bad_kernel.pt")
    assert main([str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 2


def test_rosinality_ffhq_1024_layout_maps_onto_config_f():
    channels = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
    sd = {k: torch.empty(s, device="meta") for k, s in _ros_shapes(1024, 512, 8, channels).items()}
    kwargs = rosinality_generator_kwargs(sd)
    assert kwargs["channel_base"] == 32768 and kwargs["channel_max"] == 512 and kwargs["img_resolution"] == 1024
    mapped = rosinality_to_nvlabs_names(sd, kwargs["num_mapping_layers"], kwargs["img_resolution"])
    with torch.device("meta"):
        G = Generator(**kwargs)
    expected = {k: tuple(v.shape) for k, v in G.state_dict().items()
                if not k.endswith("resample_filter") and k != "mapping.w_avg"}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected
