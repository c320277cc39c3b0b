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
    """Luma ``(n, 1, H, W)`` of ``(n, 3, H, W)`` as one matrix product (4× faster than a broadcast sum)."""
    n, _, h, w = x.shape
    return (x.new_tensor(_GREY).view(1, 3) @ x.reshape(n, 3, h * w)).view(n, 1, h, w)


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


@dataclass(frozen=True)
class JitterDraw:
    """The random factors of :func:`color_jitter` for ``n`` images (drawn by :func:`draw_jitter`).

    Why split from the arithmetic: a training batch draws each sample's factors from that sample's own generator
    (the resume invariant: a sample is a pure function of ``(seed, epoch, index)``), then jitters the whole batch in
    one vectorised pass — 32 samples × 4 images cost 6–9 ms together against 19 ms one sample at a time."""

    apply: torch.Tensor  # (n,) bool
    brightness: torch.Tensor  # (n,)
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor  # (n,) turns
    white_balance: torch.Tensor | None  # (n, 3)
    shading: tuple[torch.Tensor, ...]  # one (n, 1, k, k) gain grid per shading_grids entry

    def __len__(self) -> int:
        return int(self.apply.shape[0])

    @staticmethod
    def cat(draws: list[JitterDraw]) -> JitterDraw:
        """The draws of several samples as one, in order (their images concatenated the same way)."""
        wb = [d.white_balance for d in draws]
        return JitterDraw(torch.cat([d.apply for d in draws]), torch.cat([d.brightness for d in draws]),
                          torch.cat([d.contrast for d in draws]), torch.cat([d.saturation for d in draws]),
                          torch.cat([d.hue for d in draws]),
                          None if any(w is None for w in wb) else torch.cat(wb),  # type: ignore[arg-type]
                          tuple(torch.cat(gs) for gs in zip(*(d.shading for d in draws), strict=True)))


def jitter_uniforms(n: int, cfg: PhotometricConfig) -> int:
    """How many uniforms :func:`draw_jitter` takes for ``n`` images."""
    return n * (5 + (3 if cfg.white_balance > 0 else 0) + (sum(k * k for k in cfg.shading_grids)
                                                           if cfg.shading > 0 else 0))


def draw_jitter(n: int, cfg: PhotometricConfig, generator: torch.Generator | None = None) -> JitterDraw:
    """Every random factor of jittering ``n`` images, drawn from ``generator`` in a fixed order (the order the
    samples' reproducibility rests on: apply, brightness, contrast, saturation, hue, white balance, shading).

    One ``torch.rand`` of all the uniforms, cut in that order: the CPU generator gives the same stream as one call
    per factor (checked in the tests against the per-factor draws), at a fraction of the cost per sample."""
    return jitter_from_uniforms(torch.rand(1, jitter_uniforms(n, cfg), generator=generator), n, cfg)


def jitter_from_uniforms(u: torch.Tensor, n: int, cfg: PhotometricConfig) -> JitterDraw:
    """The factors of ``B`` samples of ``n`` images each from their uniforms ``u`` ``(B, jitter_uniforms(n))`` (row
    ``b`` drawn from sample ``b``'s generator): images in sample-major order, as the samples concatenated."""
    wb_n = 3 * n if cfg.white_balance > 0 else 0
    grid_n = [n * k * k for k in cfg.shading_grids] if cfg.shading > 0 else []
    if u.ndim != 2 or u.shape[1] != 5 * n + wb_n + sum(grid_n):
        raise ValueError(f"jitter_from_uniforms: expected (B, {5 * n + wb_n + sum(grid_n)}) uniforms, got "
                         f"{tuple(u.shape)}")
    m = u.shape[0] * n
    v = u * 2 - 1
    parts = torch.split(v, [n] * 5 + ([wb_n] if wb_n else []) + grid_n, dim=1)
    apply = u[:, :n].reshape(m) < cfg.p
    b, c, s = (1.0 + p.reshape(m) * f for p, f in zip(parts[1:4], (cfg.brightness, cfg.contrast, cfg.saturation),
                                                      strict=True))
    h = parts[4].reshape(m) * cfg.hue
    wb = 1.0 + parts[5].reshape(m, 3) * cfg.white_balance if wb_n else None
    grids = tuple(1.0 + p.reshape(m, 1, k, k) * cfg.shading
                  for p, k in zip(parts[5 + bool(wb_n):], cfg.shading_grids, strict=True)) if grid_n else ()
    return JitterDraw(apply, b, c, s, h, wb, grids)


def color_jitter(x: torch.Tensor, cfg: PhotometricConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Jitter a batch ``(..., 3, H, W)`` of floats in [0, 1]; every image draws its own factors."""
    if not cfg.enabled:
        return x
    return apply_jitter(x, cfg, draw_jitter(x[..., 0, 0, 0].numel(), cfg, generator))


def apply_jitter(x: torch.Tensor, cfg: PhotometricConfig, draw: JitterDraw) -> torch.Tensor:
    """Jitter ``(..., 3, H, W)`` floats in [0, 1] with the factors of ``draw`` (one per image, in order).

    In-place arithmetic on the working copy and the separable shading field keep it at ≈ 0.5 ms per 4 × 64² sample
    (0.8 ms before, the same random draws in the same order); a whole batch in one call ≈ 0.05 ms per image."""
    if not cfg.enabled:
        return x
    shape = x.shape
    y = x.reshape(-1, *shape[-3:])
    n = y.shape[0]
    if len(draw) != n:
        raise ValueError(f"apply_jitter: {len(draw)} drawn factors for {n} images")

    def col(v: torch.Tensor) -> torch.Tensor:
        return v.to(y).view(n, 1, 1, 1)

    out = (y * col(draw.brightness)).clamp_(0, 1) if cfg.brightness > 0 else y.clone()
    if cfg.contrast > 0:
        mean = _grey(out).mean(dim=(-2, -1), keepdim=True)
        out = out.sub_(mean).mul_(col(draw.contrast)).add_(mean).clamp_(0, 1)
    if cfg.saturation > 0:
        g = _grey(out)
        out = out.sub_(g).mul_(col(draw.saturation)).add_(g).clamp_(0, 1)
    if cfg.hue > 0:
        ang = draw.hue.to(y) * 2 * math.pi
        cos, sin = torch.cos(ang), torch.sin(ang)
        rot = torch.zeros(n, 3, 3, dtype=y.dtype)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        m = _YIQ2RGB.to(y) @ rot @ _RGB2YIQ.to(y)  # (n, 3, 3)
        out = torch.bmm(m, out.reshape(n, 3, -1)).view(out.shape).clamp_(0, 1)
    if cfg.white_balance > 0 and draw.white_balance is not None:
        out = out.mul_(draw.white_balance.to(y).view(n, 3, 1, 1)).clamp_(0, 1)
    if cfg.shading > 0:
        field: torch.Tensor | None = None
        for k, grid in zip(cfg.shading_grids, draw.shading, strict=True):
            f = _bilinear_matrix(k, y.shape[-2]).to(y) @ grid.to(y) @ _bilinear_matrix(k, y.shape[-1]).to(y).T
            field = f if field is None else field.mul_(f)
        if field is not None:
            out = out.mul_(field).clamp_(0, 1)
    if not bool(draw.apply.all()):
        a = draw.apply.to(y).view(n, 1, 1, 1)
        out = a * out + (1 - a) * y
    return out.reshape(shape)
