"""Augmentation of whole batches on the device they are on (registry "augment").

One ``affine_grid`` + ``grid_sample`` per batch carries flip, rotation, scale, translation
and random resized crop at once (each image gets its own matrix), then per-image
brightness, contrast and gamma are broadcast vectors: no per-image Python loop, no PIL, so
it runs where the batch is (CPU or GPU) and costs milliseconds.

Horizontal flips are only in ``medium``. A chest radiograph has situs (heart on the left);
a flip is label-preserving for pneumonia or COVID-19 but makes anatomy the model never sees
at test time, and it is wrong for any label with a side (left-lower-lobe findings,
dextrocardia, device position). ``light`` therefore keeps anatomy as it is; ``medium``
flips half the images, as most of the source notebooks did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.registry import Registry

_N_DRAWS = 12  # uniform draws per image; fixed so the random stream does not depend on the preset


@dataclass(frozen=True)
class AugmentPreset:
    name: str
    description: str
    flip_p: float = 0.0
    rotate_deg: float = 0.0  # uniform in [-d, d]
    translate: float = 0.0  # fraction of the side, uniform in [-t, t] per axis
    scale: tuple[float, float] = (1.0, 1.0)  # zoom; > 1 enlarges the content
    crop_area: tuple[float, float] | None = None  # random resized crop: fraction of the image area kept
    crop_ratio: tuple[float, float] = (0.9, 1 / 0.9)  # width / height of that crop, log-uniform
    brightness: float = 0.0  # multiply by U[1 - b, 1 + b]
    contrast: float = 0.0  # scale around the image mean by U[1 - c, 1 + c]
    gamma: tuple[float, float] | None = None  # x ** g, g log-uniform

    @property
    def geometric(self) -> bool:
        return bool(
            self.flip_p or self.rotate_deg or self.translate or self.scale != (1.0, 1.0) or self.crop_area
        )

    @property
    def photometric(self) -> bool:
        return bool(self.brightness or self.contrast or self.gamma)


AUGMENTS: Registry[AugmentPreset] = Registry("augment")


def get_augment(name: str) -> AugmentPreset:
    return AUGMENTS.get(name)


def list_augments() -> list[str]:
    return AUGMENTS.names()


class BatchAugment:
    """``aug(x, generator)``: x is float (B, C, H, W) in [0, 1] on any device; returns a new
    tensor of the same shape, dtype and device. Without a generator, draws from its own
    generator seeded with ``seed`` (successive calls differ, reruns repeat)."""

    def __init__(self, preset: AugmentPreset, img_size: int, seed: int) -> None:
        self.preset, self.img_size = preset, img_size
        self._own = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.preset
        if not (p.geometric or p.photometric):
            return x
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"augment expects a float (B, C, H, W) batch, got {x.dtype} {tuple(x.shape)}")
        g = generator if generator is not None else self._own
        u = torch.rand(x.shape[0], _N_DRAWS, generator=g, device=g.device).to(x.device, torch.float32)
        out = x.float()
        if p.geometric:
            out = _warp(out, _sampling_matrices(p, u, x.shape[-2], x.shape[-1]))
        if p.photometric:
            out = _photometric(out, p, u)
        return out.to(x.dtype)


def build_augment(name: str, *, img_size: int, seed: int) -> BatchAugment:
    return BatchAugment(get_augment(name), img_size, seed)


# ---------------------------------------------------------------------------------------
# Geometry: batched 3x3 matrices mapping an output pixel to where it samples the input


def _between(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u


def _log_between(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return torch.exp(_between(u, math.log(lo), math.log(hi)))


def _eye(u: torch.Tensor) -> torch.Tensor:
    return torch.eye(3, device=u.device).repeat(u.shape[0], 1, 1)


def _inverse_affine(p: AugmentPreset, u: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of y = s R x + t in pixel units about the centre, as a matrix on normalised
    coordinates (conjugated by the half-size so rotations stay rotations when H != W)."""
    angle = torch.deg2rad(_between(u[:, 1], -p.rotate_deg, p.rotate_deg))
    s = _log_between(u[:, 2], *p.scale)
    tx = _between(u[:, 3], -p.translate, p.translate) * w
    ty = _between(u[:, 4], -p.translate, p.translate) * h
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    m = _eye(u)
    # R^T / s, and -R^T t / s
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, sin, -sin, cos
    m[:, 0, 2] = -(cos * tx + sin * ty)
    m[:, 1, 2] = -(-sin * tx + cos * ty)
    half = torch.diag(torch.tensor([w / 2, h / 2, 1.0], device=u.device))
    half_inv = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], device=u.device))
    return half_inv @ m @ half


def _crop(p: AugmentPreset, u: torch.Tensor) -> torch.Tensor:
    m = _eye(u)
    if p.crop_area is None:
        return m
    area = _between(u[:, 5], *p.crop_area)
    ratio = _log_between(u[:, 6], *p.crop_ratio)
    cw = torch.sqrt(area * ratio).clamp(max=1.0)
    ch = torch.sqrt(area / ratio).clamp(max=1.0)
    m[:, 0, 0], m[:, 1, 1] = cw, ch
    m[:, 0, 2] = _between(u[:, 7], -1.0, 1.0) * (1 - cw)
    m[:, 1, 2] = _between(u[:, 8], -1.0, 1.0) * (1 - ch)
    return m


def _sampling_matrices(p: AugmentPreset, u: torch.Tensor, h: int, w: int) -> torch.Tensor:
    flip = _eye(u)
    flip[:, 0, 0] = torch.where(u[:, 0] < p.flip_p, -1.0, 1.0)
    # the output is flip(affine(crop(input))); sampling walks that chain backwards
    return _crop(p, u) @ _inverse_affine(p, u, h, w) @ flip


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, h, w), align_corners=False)`` as one broadcast add of a
    per-column and a per-row term: torch's version is a (B, h*w, 3) x (B, 3, 2) bmm that
    took 35 ms for 64 x 224 x 224 on this CPU, this takes 4 ms."""
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    cols = xs[None, :, None] * theta[:, None, :, 0]  # (B, w, 2)
    rows = ys[None, :, None] * theta[:, None, :, 1] + theta[:, None, :, 2]  # (B, h, 2)
    return cols.unsqueeze(1) + rows.unsqueeze(2)  # (B, h, w, 2)


def _warp(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    grid = affine_grid(m[:, :2, :], x.shape[-2], x.shape[-1])
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------------------------------
# Intensity


def _photometric(x: torch.Tensor, p: AugmentPreset, u: torch.Tensor) -> torch.Tensor:
    shape = (-1, 1, 1, 1)
    b = _between(u[:, 9], 1 - p.brightness, 1 + p.brightness).view(shape)
    c = _between(u[:, 10], 1 - p.contrast, 1 + p.contrast).view(shape)
    # brightness x*b then contrast about the new mean, folded into one multiply-add:
    # (x*b - b*mean) * c + b*mean = x * (b*c) + b*mean*(1 - c)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = torch.addcmul(b * mean * (1 - c), x, b * c).clamp_(0.0, 1.0)
    if p.gamma:
        x = x.pow(_log_between(u[:, 11], *p.gamma).view(shape))
    return x


AUGMENTS.add("none", AugmentPreset("none", "No augmentation."))
AUGMENTS.add(
    "light",
    AugmentPreset(
        "light",
        "Rotation ±5°, translation ±5%, zoom 0.95-1.05, brightness/contrast ±10%. No flips (anatomy keeps its side).",
        rotate_deg=5.0,
        translate=0.05,
        scale=(0.95, 1.05),
        brightness=0.1,
        contrast=0.1,
    ),
)
AUGMENTS.add(
    "medium",
    AugmentPreset(
        "medium",
        "Horizontal flip (p=0.5), rotation ±10°, translation ±10%, zoom 0.9-1.1, random resized "
        "crop of 80-100% of the area, brightness/contrast ±20%, gamma 0.8-1.25.",
        flip_p=0.5,
        rotate_deg=10.0,
        translate=0.1,
        scale=(0.9, 1.1),
        crop_area=(0.8, 1.0),
        brightness=0.2,
        contrast=0.2,
        gamma=(0.8, 1.25),
    ),
)
