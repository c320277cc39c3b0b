"""Seeded photometric augmentation (colour jitter) on float images in [0, 1], batched.

Sits between ``preprocess.resize_crop`` and ``preprocess.normalize`` (the one preprocessing): training sees the
same geometry and normalisation as the node, plus jitter. Each image of a sample gets its own factors — real
rigs expose every camera separately — drawn from a ``torch.Generator`` so a (seed, epoch, index) reproduces the
exact sample.

Operations (in this order, each as in torchvision's ColorJitter): brightness (scale), contrast (blend with the
image's mean grey), saturation (blend with its greyscale), hue (rotation of the chroma plane in YIQ space — a
linear, vectorised stand-in for the HSV hue shift: same hue angle, luma kept exactly), then white balance (a gain per
colour channel: auto white balance settles differently each session, and when every mapping pass has its own, a
network learns the tint as a place cue — measured in docs/results.md), then shading (a grey gain field over the
image, the product of ``SHADING_GRIDS`` (5 × 5, 9 × 9, 17 × 17) grids of gains, each bilinearly upsampled: which
ceiling lights are on differs between sessions, so the same place is lit differently in patches of every size —
large near the camera, small towards the vanishing point; with one light pattern per mapping pass a network learned
the pattern as a lane cue — the forward query re-rendered under its lane's mapping lights was 0.13 m instead of
0.24 m off; with the three scales the gap is 0.01 m on two seeds of three and 0.05 m on the third, docs/results.md,
bench/relight.py). Results are clamped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch

from mfapr_ros.core.errors import ConfigError

_GREY = (0.299, 0.587, 0.114)
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)
#: shading gains per image: grids of SHADING_GRIDS[i] x SHADING_GRIDS[i] gains, each bilinearly upsampled, multiplied
#: (a lamp's pool of light spans a fraction of a 90° view near the camera and a few pixels near the vanishing point).
#: Demo world, 3 seeds, forward query median: one 3x3 grid 0.25 m, 5x5 0.22 m, 5+9 0.20 m (all at shading 0.3),
#: 5+9+17 0.19 m (0.18-0.19), 5+9+17+33 0.18 m (0.18-0.21) (both at 0.25); docs/results.md "Lighting as a place cue".
SHADING_GRIDS: tuple[int, ...] = (5, 9, 17)
#: the coarsest default grid (the smoothness bound of a single-grid field in the tests)
SHADING_GRID = SHADING_GRIDS[0]


@dataclass(frozen=True)
class PhotometricConfig:
    """Jitter strengths: factors are drawn uniformly from ``[1 − s, 1 + s]`` (hue: shift in ``[−h, h]`` turns,
    h ≤ 0.5; white_balance: one factor per colour channel). ``p``:
    probability that an image is jittered at all. All zero = off."""

    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05
    p: float = 1.0
    white_balance: float = 0.1
    shading: float = 0.25
    #: grid sizes of the shading field: one gain grid per entry, each drawn in [1 − shading, 1 + shading],
    #: bilinearly upsampled, multiplied together (several entries = patches of light at several scales)
    shading_grids: tuple[int, ...] = SHADING_GRIDS

    def __post_init__(self) -> None:
        grids = self.shading_grids
        if isinstance(grids, list):
            object.__setattr__(self, "shading_grids", grids := tuple(grids))
        if not (isinstance(grids, tuple) and grids
                and all(isinstance(g, int) and not isinstance(g, bool) and g >= 2 for g in grids)):
            raise ConfigError(f"photometric.shading_grids must be a non-empty list of integers >= 2, got {grids!r}")
        for k in ("brightness", "contrast", "saturation", "white_balance", "shading"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
                raise ConfigError(f"photometric.{k} must be in [0, 1), got {v!r}")
        if not (isinstance(self.hue, (int, float)) and 0.0 <= self.hue <= 0.5):
            raise ConfigError(f"photometric.hue must be in [0, 0.5] (turns), got {self.hue!r}")
        if not (isinstance(self.p, (int, float)) and 0.0 <= self.p <= 1.0):
            raise ConfigError(f"photometric.p must be in [0, 1], got {self.p!r}")

    @property
    def enabled(self) -> bool:
        return self.p > 0 and any((self.brightness, self.contrast, self.saturation, self.hue,
                                      self.white_balance, self.shading))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shading_grids"] = list(self.shading_grids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PhotometricConfig:
        d = dict(d or {})
        unknown = set(d) - {"brightness", "contrast", "saturation", "hue", "p", "white_balance", "shading",
                         "shading_grids"}
        if unknown:
            raise ConfigError(f"photometric: unknown keys {sorted(unknown)}")
        return cls(**d)


def _grey(x: torch.Tensor) -> torch.Tensor:
    w = x.new_tensor(_GREY).view(3, 1, 1)
    return (x * w).sum(-3, keepdim=True)


@lru_cache(maxsize=64)
def _bilinear_matrix(k: int, size: int) -> torch.Tensor:
    """``(size, k)`` weights of bilinear upsampling with ``align_corners=True`` along one axis.

    A k×k gain grid upsampled to H×W is ``A_H @ g @ A_W.T`` — the same field as ``F.interpolate(..., "bilinear",
    align_corners=True)`` (within 1e-6), at a quarter of its cost on 64² images: the shading field was the largest
    single cost of the training data path."""
    src = torch.arange(size, dtype=torch.float64) * (k - 1) / max(size - 1, 1)
    i0 = src.floor().clamp(max=k - 2).long()
    w = src - i0
    a = torch.zeros(size, k, dtype=torch.float64)
    rows = torch.arange(size)
    a[rows, i0] = 1 - w
    a[rows, i0 + 1] += w
    return a.float()


def color_jitter(x: torch.Tensor, cfg: PhotometricConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Jitter a batch ``(..., 3, H, W)`` of floats in [0, 1]; every image draws its own factors.

    In-place arithmetic on the working copy and the separable shading field keep it at ≈ 0.5 ms per 4 × 64² sample
    (0.8 ms before, the same random draws in the same order)."""
    if not cfg.enabled:
        return x
    shape = x.shape
    y = x.reshape(-1, *shape[-3:])
    n = y.shape[0]

    def factors(s: float) -> torch.Tensor:
        return (1.0 + (torch.rand(n, generator=generator) * 2 - 1) * s).to(y).view(n, 1, 1, 1)

    apply = torch.rand(n, generator=generator) < cfg.p
    b, c, s = factors(cfg.brightness), factors(cfg.contrast), factors(cfg.saturation)
    h = ((torch.rand(n, generator=generator) * 2 - 1) * cfg.hue).to(y)
    out = (y * b).clamp_(0, 1) if cfg.brightness > 0 else y.clone()
    if cfg.contrast > 0:
        mean = _grey(out).mean(dim=(-2, -1), keepdim=True)
        out = out.sub_(mean).mul_(c).add_(mean).clamp_(0, 1)
    if cfg.saturation > 0:
        g = _grey(out)
        out = out.sub_(g).mul_(s).add_(g).clamp_(0, 1)
    if cfg.hue > 0:
        ang = h * 2 * math.pi
        cos, sin = torch.cos(ang), torch.sin(ang)
        rot = torch.zeros(n, 3, 3, dtype=y.dtype)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        m = _YIQ2RGB.to(y) @ rot @ _RGB2YIQ.to(y)  # (n, 3, 3)
        out = torch.einsum("nij,njhw->nihw", m, out).clamp_(0, 1)
    if cfg.white_balance > 0:
        wb = 1.0 + (torch.rand(n, 3, generator=generator) * 2 - 1) * cfg.white_balance
        out = out.mul_(wb.to(y).view(n, 3, 1, 1)).clamp_(0, 1)
    if cfg.shading > 0:
        field: torch.Tensor | None = None
        for k in cfg.shading_grids:
            g = (1.0 + (torch.rand(n, 1, k, k, generator=generator) * 2 - 1) * cfg.shading).to(y)
            f = _bilinear_matrix(k, y.shape[-2]).to(y) @ g @ _bilinear_matrix(k, y.shape[-1]).to(y).T
            field = f if field is None else field.mul_(f)
        out = out.mul_(field).clamp_(0, 1)
    if not bool(apply.all()):
        a = apply.to(y).view(n, 1, 1, 1)
        out = a * out + (1 - a) * y
    return out.reshape(shape)
