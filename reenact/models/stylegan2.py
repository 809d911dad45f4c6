"""StyleGAN2 (config F) in pure-PyTorch reference ops, named as NVlabs stylegan2-ada-pytorch.

Module names, parameter names, buffer names and shapes equal those of NVlabs' `training/networks.py`
(`mapping.fc0.weight`, `synthesis.b64.conv0.affine.bias`, `synthesis.b4.conv1.noise_const`, ...), so an
NVlabs `G_ema.state_dict()` loads into `Generator` unchanged and computes the same function (up to the
floating-point order of the reference ops). Supported: the generator's 'skip' architecture, the
discriminator's 'resnet' architecture, FIR filter [1, 3, 3, 1], leaky ReLU, optional conv clamping.
Mixed precision is left to `torch.autocast` (bf16); style and demodulation math runs in float32.

Channels per resolution: `min(channel_base // res, channel_max)`; `config_f_kwargs(res, width=...)`
scales config F (`channel_base = int(width * 32768)`) for small networks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
_DEF_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0)}
FIR_TAPS = (1, 3, 3, 1)


def config_f_kwargs(img_resolution: int, *, width: float = 1.0, channel_max: int = 512,
                    w_dim: int = 512, **overrides) -> dict:
    """Generator kwargs of config F at `img_resolution`, channels scaled by `width`."""
    kwargs = dict(z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=img_resolution, img_channels=3,
                  channel_base=int(width * 32768), channel_max=channel_max, num_mapping_layers=8)
    kwargs.update(overrides)
    return kwargs


def _check_resolution(img_resolution: int) -> None:
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")


def _check_act(activation: str) -> None:
    if activation not in _DEF_GAIN:
        raise ValueError(f"activation must be one of {sorted(_DEF_GAIN)}, got {activation!r}")


# ----------------------------------------------------------------------------------------------------
# Reference ops


def setup_filter(taps=FIR_TAPS) -> torch.Tensor:
    """Separable FIR taps -> normalized 2D filter [k, k] (sum 1), float32."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, *, up: int = 1, down: int = 1,
              padding=(0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample (zero insertion), pad (x0, x1, y0, y1; negative crops), FIR filter, downsample."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = padding
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    kernel = (f * gain).flip([0, 1]).to(x.dtype)
    x = F.conv2d(x, kernel[None, None].expand(c, 1, *kernel.shape), groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    k = f.shape[-1]
    p0, p1 = (k + up - 1) // 2, (k - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    k = f.shape[-1]
    p0, p1 = (k - down + 1) // 2, (k - down) // 2
    return upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))


def _conv_up(x, w, f, *, up: int, padding: int, groups: int) -> torch.Tensor:
    """Transposed strided convolution followed by the FIR filter (NVlabs' upsampling path)."""
    out_ch, in_per_group, kh, kw = w.shape
    if groups == 1:
        w = w.transpose(0, 1)
    else:
        w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
        w = w.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    k = f.shape[-1]
    p0 = padding + (k + up - 1) // 2 - (kw - 1)
    p1 = padding + (k - up) // 2 - (kw - up)
    pt = max(min(-p0, -p1), 0)
    x = F.conv_transpose2d(x, w, stride=up, padding=pt, groups=groups)
    p0, p1 = p0 + pt, p1 + pt
    return upfirdn2d(x, f, padding=(p0, p1, p0, p1), gain=up * up)


def _conv_down(x, w, f, *, down: int, padding: int, groups: int) -> torch.Tensor:
    k = f.shape[-1]
    p0 = padding + (k - down + 1) // 2
    p1 = padding + (k - down) // 2
    if w.shape[-1] == 1:
        x = upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))
        return F.conv2d(x, w, groups=groups)
    x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
    return F.conv2d(x, w, stride=down, groups=groups)


def conv2d_resample(x, w, f=None, *, up: int = 1, down: int = 1, padding: int = 0,
                    groups: int = 1) -> torch.Tensor:
    """2D cross-correlation with optional 2x FIR up- or downsampling (not both)."""
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up and down together are not supported")
    if up > 1:
        return _conv_up(x, w, f, up=up, padding=padding, groups=groups)
    if down > 1:
        return _conv_down(x, w, f, down=down, padding=padding, groups=groups)
    return F.conv2d(x, w, padding=padding, groups=groups)


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, *, act: str = "linear",
             gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """x + b (along dim 1), activation, times gain (default: the activation's), clamp to +-clamp."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    gain = _DEF_GAIN[act] if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(x, weight, styles, *, noise=None, up: int = 1, padding: int = 0,
                     resample_filter=None, demodulate: bool = True, fused: bool = False) -> torch.Tensor:
    """Modulate weights by per-sample styles [N, I], demodulate, convolve (optionally 2x up), add noise.

    Styles and demodulation coefficients are computed in float32 whatever the autocast dtype.
    `fused=True` runs one grouped convolution with per-sample weights (NVlabs' fused_modconv).
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    weight, styles = weight.float(), styles.float()
    w = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)  # [N, O, I, k, k]
    dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None  # [N, O]
    if fused:
        if dcoefs is not None:
            w = w * dcoefs.reshape(n, out_ch, 1, 1, 1)
        x = x.reshape(1, n * in_ch, *x.shape[2:])
        x = conv2d_resample(x, w.reshape(n * out_ch, in_ch, kh, kw).to(x.dtype), resample_filter,
                            up=up, padding=padding, groups=n)
        x = x.reshape(n, out_ch, *x.shape[2:])
    else:
        x = x * styles.to(x.dtype).reshape(n, in_ch, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(n, out_ch, 1, 1)
    return x + noise.to(x.dtype) if noise is not None else x


# ----------------------------------------------------------------------------------------------------
# Layers


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalized learning rate (weights scaled at run time by lr_multiplier/sqrt(in))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        _check_act(activation)
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Equalized-lr convolution with optional FIR 2x up/downsampling, bias, activation and clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, resample_filter=FIR_TAPS,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        _check_act(activation)
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = _DEF_GAIN[activation]
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z (and optional label c) -> w, broadcast to num_ws copies.

    `w_avg` (the truncation centre) is updated as an EMA only in training mode with `update_emas=True`
    (NVlabs stylegan3's convention; stylegan2-ada updated it on every training call).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None,
                 activation: str = "lrelu", lr_multiplier: float = 0.01,
                 w_avg_beta: float | None = 0.995) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1],
                                                          activation=activation, lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def _inputs(self, z: torch.Tensor | None, c: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            _check_shape(z, [None, self.z_dim], "z")
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim > 0:
            _check_shape(c, [None, self.c_dim], "c")
            parts.append(normalize_2nd_moment(self.embed(c.float()).float()))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, z, c=None, truncation_psi: float = 1, truncation_cutoff: int | None = None,
                update_emas: bool = False) -> torch.Tensor:
        x = self._inputs(z, c)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        x = x.float()
        if update_emas and self.training and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = torch.cat([self.w_avg.lerp(x[:, :cutoff], truncation_psi), x[:, cutoff:]], dim=1)
        return x


def _check_shape(t: torch.Tensor | None, shape: list, name: str) -> None:
    if t is None or t.ndim != len(shape) or any(
            s is not None and s != d for s, d in zip(shape, t.shape, strict=True)):
        got = None if t is None else list(t.shape)
        raise ValueError(f"{name}: expected shape {shape}, got {got}")


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally 2x up), noise input, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 kernel_size: int = 3, up: int = 1, use_noise: bool = True, activation: str = "lrelu",
                 resample_filter=FIR_TAPS, conv_clamp: float | None = None) -> None:
        super().__init__()
        _check_act(activation)
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = _DEF_GAIN[activation]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def _noise(self, x: torch.Tensor, noise_mode: str) -> torch.Tensor | None:
        if not self.use_noise or noise_mode == "none":
            return None
        if noise_mode == "random":
            shape = [x.shape[0], 1, self.resolution, self.resolution]
            return torch.randn(shape, device=x.device) * self.noise_strength
        return self.noise_const * self.noise_strength

    def forward(self, x, w, noise_mode: str = "const", fused_modconv: bool = False, gain: float = 1.0):
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, noise=self._noise(x, noise_mode), up=self.up,
                             padding=self.padding, resample_filter=self.resample_filter, fused=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution without demodulation, to image channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv: bool = False) -> torch.Tensor:
        styles = self.affine(w).float() * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused_modconv)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


_NOISE_MODES = ("const", "random", "none")


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' generator: [const | conv0 (2x up)], conv1, torgb added to the image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, resample_filter=FIR_TAPS, conv_clamp: float | None = None,
                 **layer_kwargs) -> None:
        super().__init__()
        self.in_channels, self.w_dim, self.resolution = in_channels, w_dim, resolution
        self.img_channels, self.is_last = img_channels, is_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        common = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, **layer_kwargs)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter,
                                        **common)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **common)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(self, x, img, ws, noise_mode: str = "const", fused_modconv: bool = False):
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).float()
        img = y if img is None else upsample2d(img, self.resample_filter).float() + y
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ codes [N, num_ws, w_dim] -> image [N, img_channels, R, R] in about [-1, 1]."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, conv_clamp: float | None = None, **block_kwargs) -> None:
        _check_resolution(img_resolution)
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.channels = channels
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                   resolution=res, img_channels=img_channels,
                                   is_last=res == img_resolution, conv_clamp=conv_clamp, **block_kwargs)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's torgb

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", fused_modconv: bool = False):
        if noise_mode not in _NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {_NOISE_MODES}, got {noise_mode!r}")
        _check_shape(ws, [None, self.num_ws, self.w_dim], "ws")
        ws = ws.float()
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            x, img = block(x, img, block_ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """StyleGAN2 generator: `G.mapping(z, c) -> ws`, `G.synthesis(ws) -> img`.

    All constructor arguments are keyword-only and kept, as plain values, in `G.init_kwargs`, which is
    what checkpoints store to rebuild the network (`Generator(**G.init_kwargs)`).
    """

    def __init__(self, *, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int,
                 img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512,
                 num_mapping_layers: int = 8, mapping_lr_multiplier: float = 0.01,
                 mapping_layer_features: int | None = None, embed_features: int | None = None,
                 w_avg_beta: float = 0.995, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, channel_base=channel_base,
                                channel_max=channel_max, num_mapping_layers=num_mapping_layers,
                                mapping_lr_multiplier=mapping_lr_multiplier,
                                mapping_layer_features=mapping_layer_features,
                                embed_features=embed_features, w_avg_beta=w_avg_beta, conv_clamp=conv_clamp)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution,
                                          img_channels=img_channels, channel_base=channel_base,
                                          channel_max=channel_max, conv_clamp=conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      num_layers=num_mapping_layers, embed_features=embed_features,
                                      layer_features=mapping_layer_features,
                                      lr_multiplier=mapping_lr_multiplier, w_avg_beta=w_avg_beta)

    def forward(self, z, c=None, truncation_psi: float = 1, truncation_cutoff: int | None = None,
                noise_mode: str = "const", update_emas: bool = False) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode)


# ----------------------------------------------------------------------------------------------------
# Discriminator (resnet architecture)


class DiscriminatorBlock(nn.Module):
    """[fromrgb], conv0, conv1 (2x down), plus a 1x1 downsampling skip; residual sum scaled by sqrt(.5)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int,
                 img_channels: int, activation: str = "lrelu", resample_filter=FIR_TAPS,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        act = dict(activation=activation, conv_clamp=conv_clamp)
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, **act)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, **act)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=2,
                                 resample_filter=resample_filter, **act)
        self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                resample_filter=resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Appends the mean over channels/pixels of the per-group feature stddev as extra channels."""

    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = n if self.group_size is None else math.gcd(min(self.group_size, n), n)
        f = self.num_channels
        y = x.float().reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n/g, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch stddev, conv, fc, output (projected on the label embedding when conditional)."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1, activation: str = "lrelu",
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.cmap_dim, self.resolution = in_channels, cmap_dim, resolution
        self.img_channels = img_channels
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None = None) -> torch.Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1))).float()
        if self.cmap_dim > 0:
            x = (x * cmap.float()).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x


class Discriminator(nn.Module):
    """StyleGAN2 resnet discriminator: image [N, C, R, R] (and label c) -> logits [N, 1]."""

    def __init__(self, *, c_dim: int = 0, img_resolution: int, img_channels: int = 3,
                 channel_base: int = 32768, channel_max: int = 512, conv_clamp: float | None = None,
                 cmap_dim: int | None = None, mbstd_group_size: int | None = 4,
                 mbstd_num_channels: int = 1, num_mapping_layers: int = 8) -> None:
        _check_resolution(img_resolution)
        super().__init__()
        self.init_kwargs = dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                                channel_base=channel_base, channel_max=channel_max, conv_clamp=conv_clamp,
                                cmap_dim=cmap_dim, mbstd_group_size=mbstd_group_size,
                                mbstd_num_channels=mbstd_num_channels, num_mapping_layers=num_mapping_layers)
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        cmap_dim = 0 if c_dim == 0 else (channels[4] if cmap_dim is None else cmap_dim)
        for res in self.block_resolutions:
            setattr(self, f"b{res}", DiscriminatorBlock(
                channels[res] if res < img_resolution else 0, channels[res], channels[res // 2],
                resolution=res, img_channels=img_channels, conv_clamp=conv_clamp))
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None,
                                          num_layers=num_mapping_layers, w_avg_beta=None)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4,
                                        img_channels=img_channels, mbstd_group_size=mbstd_group_size,
                                        mbstd_num_channels=mbstd_num_channels, conv_clamp=conv_clamp)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        _check_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution], "img")
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, cmap)
