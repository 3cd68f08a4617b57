"""The built-in demo dataset: synthetic frontal chest radiographs in three classes.

Every nuisance (anatomy, exposure, position, noise, file format, bit depth, photometric,
age, sex, view) is drawn from one distribution for every class, from random streams that
never see the class, so the lesion is the only class signal: a classifier has to look at
it, and a good CAM lands on it. Pneumonia adds one focal consolidation in one lung; covid
adds bilateral, peripheral ground-glass patches. Each positive image's lesion boxes are
written to ``boxes.csv``.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from core.errors import DataError
from core.fileio import atomic_write_bytes, atomic_write_json
from core.progress import ProgressFn, no_progress

CLASSES = ("normal", "pneumonia", "covid")
CLASS_SHARES = (0.6, 0.3, 0.1)
SPLITS = ("train", "val", "test")
SPLIT_SHARES = (0.70, 0.15, 0.15)
IMAGES_PER_PATIENT = ((1, 2, 3, 4), (0.30, 0.35, 0.20, 0.15))
# png8 = 8-bit PNG, png16 = 16-bit PNG, dcm2 / dcm1 = DICOM MONOCHROME2 / MONOCHROME1
FORMATS = (("png8", 0.80), ("png16", 0.10), ("dcm2", 0.05), ("dcm1", 0.05))
MISSING_SHARE = 0.05
DEFAULT_IMAGES = 1000
MARKER = ".chestlab-demo.json"
ENTRIES = (*SPLITS, "manifest.csv", "boxes.csv", "README.txt")
_PROJECT = Path(__file__).resolve().parents[2]
CANON = 0.92  # the patient's canonical [-1, 1] frame covers this share of the image half-width


@dataclass(frozen=True)
class Box:
    """A lesion box in pixels of the written image (x, y = top-left)."""

    x: int
    y: int
    width: int
    height: int
    label: str


@dataclass(frozen=True)
class Anatomy:
    """One patient's body, in canonical coordinates (x right, y down, both in [-1, 1])."""

    trunk_w: float
    neck_w: float
    shoulder_y: float
    lung_top: float
    costophrenic_y: float
    dome: float
    right_dome_lift: float
    lung_lat: float
    mediastinum_w: float
    heart_w: float
    heart_h: float
    rib_spacing: float
    rib_width: float
    rib_tilt: float
    tissue: float
    air: float
    female: bool
    gas: bool
    vessel_seed: int

    @classmethod
    def random(cls, rng: np.random.Generator, *, female: bool) -> Anatomy:
        u = rng.uniform
        return cls(
            trunk_w=u(0.84, 0.97) - 0.03 * female,
            neck_w=u(0.17, 0.23),
            shoulder_y=u(-0.84, -0.74),
            lung_top=u(-0.80, -0.70),
            costophrenic_y=u(0.42, 0.58),
            dome=u(0.14, 0.22),
            right_dome_lift=u(0.03, 0.08),
            lung_lat=u(0.68, 0.80),
            mediastinum_w=u(0.09, 0.13),
            heart_w=u(0.40, 0.50),
            heart_h=u(0.30, 0.38),
            rib_spacing=u(0.125, 0.145),
            rib_width=u(0.032, 0.040),
            rib_tilt=u(0.30, 0.45),
            tissue=u(0.50, 0.62),
            air=u(0.36, 0.44),
            female=female,
            gas=bool(u() < 0.7),
            vessel_seed=int(rng.integers(2**31)),
        )


@dataclass(frozen=True)
class Shot:
    """One exposure of a patient: position, inspiration, exposure and noise."""

    dx: float = 0.0
    dy: float = 0.0
    rotation: float = 0.0  # degrees
    scale: float = 1.0
    inspiration: float = 0.0  # moves the diaphragm (canonical units)
    brightness: float = 0.0
    contrast: float = 1.0
    gamma: float = 1.0
    noise: float = 0.015
    ap: bool = False

    @classmethod
    def random(cls, rng: np.random.Generator, *, ap: bool) -> Shot:
        u = rng.uniform
        return cls(
            dx=u(-0.06, 0.06),
            dy=u(-0.05, 0.07),
            rotation=u(-5.0, 5.0),
            scale=u(0.90, 1.06),
            inspiration=u(-0.05, 0.05),
            brightness=u(-0.08, 0.08),
            contrast=u(0.85, 1.2),
            gamma=float(np.exp(u(-0.25, 0.25))),
            noise=u(0.008, 0.03),
            ap=ap,
        )


@functools.lru_cache(maxsize=4)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    py, px = np.mgrid[0:size, 0:size].astype(np.float32)
    return px, py


@dataclass(eq=False)
class _Grid:
    """Canonical coordinates of every pixel of an image or of a window of it."""

    x: np.ndarray
    y: np.ndarray


class _Frame(_Grid):
    """Maps canonical coordinates to pixels for one shot, and the pixel grid back."""

    def __init__(self, size: int, shot: Shot) -> None:
        self.size = size
        half = size / 2.0
        self.centre = np.array([(size - 1) / 2 + shot.dx * half, (size - 1) / 2 + shot.dy * half])
        self.k = half * shot.scale * CANON
        t = math.radians(shot.rotation)
        self.rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        px, py = _pixel_grid(size)
        rx, ry = (px - self.centre[0]) / self.k, (py - self.centre[1]) / self.k
        c, s = np.float32(self.rot[0, 0]), np.float32(self.rot[1, 0])
        self.x = c * rx + s * ry
        self.y = c * ry - s * rx

    def window(self, y0: float, y1: float, half_width: float = 9.0) -> tuple[tuple[slice, slice], _Grid]:
        """The pixels spanning canonical y0..y1 and |x| < half_width (for unrotated frames),
        to draw a layer that is zero elsewhere at a fraction of the cost."""
        r0 = max(0, int(self.centre[1] + y0 * self.k))
        r1 = min(self.size, int(self.centre[1] + y1 * self.k) + 2)
        c0 = max(0, int(self.centre[0] - half_width * self.k))
        c1 = min(self.size, int(self.centre[0] + half_width * self.k) + 2)
        return (slice(r0, r1), slice(c0, c1)), _Grid(self.x[r0:r1, c0:c1], self.y[r0:r1, c0:c1])

    def to_pixels(self, pts: np.ndarray) -> np.ndarray:
        """(n, 2) canonical -> (n, 2) pixel (x, y)."""
        return pts @ self.rot.T * self.k + self.centre

    def length(self, canonical: float) -> float:
        return canonical * self.k

    def warp_from(self, layer: np.ndarray, source: _Frame) -> np.ndarray:
        """Resample ``layer`` drawn in ``source`` (unrotated) into this frame."""
        from PIL import Image

        m = (source.k / self.k) * self.rot.T
        o = source.centre - m @ self.centre
        c = o + 0.5 - m @ np.array([0.5, 0.5])  # PIL samples at pixel centres
        data = (m[0, 0], m[0, 1], c[0], m[1, 0], m[1, 1], c[1])
        img = Image.fromarray(layer).transform(
            (self.size, self.size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR
        )
        return np.asarray(img, dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _closed_spline(points: np.ndarray, per_segment: int = 8) -> np.ndarray:
    """Catmull-Rom through a closed ring of control points."""
    p = np.asarray(points, dtype=np.float64)
    p0, p1, p2, p3 = np.roll(p, 1, 0), p, np.roll(p, -1, 0), np.roll(p, -2, 0)
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None, None]
    out = 0.5 * (
        2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
    )
    return out.transpose(1, 0, 2).reshape(-1, 2)


def _polygon_mask(frame: _Frame, outline: np.ndarray, blur: float) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFilter

    img = Image.new("L", (frame.size, frame.size), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in frame.to_pixels(outline).tolist()], fill=255)
    return np.asarray(img.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32) / 255.0


def _lung_outline(a: Anatomy, shot: Shot, side: int) -> np.ndarray:
    """Control ring of one lung field; side -1 = image left (patient's right), +1 = image right."""
    cp = a.costophrenic_y + shot.inspiration - (a.right_dome_lift if side < 0 else 0.0)
    dome, top, lat, med = a.dome, a.lung_top, a.lung_lat, a.mediastinum_w
    heart = side > 0
    ring = [
        (med + 0.03, top + 0.12),
        (0.22, top + 0.015),
        (0.33, top),
        (0.50, top + 0.08),
        (lat - 0.05, -0.30),
        (lat, 0.05),
        (lat + 0.03, cp),
        (lat - 0.10, cp - 0.6 * dome),
        (0.46, cp - dome),
        (0.30, cp - 0.85 * dome),
        ((0.20 if heart else med + 0.05), cp - (0.75 if heart else 0.5) * dome),
        ((med + 0.06 if heart else med + 0.01), -0.05),
    ]
    pts = np.array(ring)
    pts[:, 0] *= side
    return _closed_spline(pts)


def _body(f: _Grid, a: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Soft-tissue mask (neck, rounded shoulders, trunk narrowing to the waist) and a
    thickness profile (1 at the midline, 0 at the skin)."""
    top, drop = a.shoulder_y - 0.14, 0.32
    t = np.clip((top + drop - f.y) / drop, 0.0, 1.0)
    shoulder = np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
    waist = 0.10 * _smoothstep(0.2, 1.2, f.y)
    hw = a.neck_w + (a.trunk_w - a.neck_w) * shoulder * (f.y > top) - waist
    ax = np.abs(f.x)
    body = _sigmoid((hw - ax) / 0.012)
    thick = np.sqrt(np.clip(1.0 - (ax / np.maximum(hw, 1e-3)) ** 2, 0.0, 1.0))
    return body, thick


def _rib_bands(f: _Grid, a: Anatomy, cp: float) -> np.ndarray:
    """Posterior ribs (arching down along the chest wall, spacing growing downwards) and
    anterior ribs (faint, sloping down towards the midline), as periodic bands in a warped
    coordinate so all ribs cost one pass."""
    ax = np.abs(f.x)
    u = np.clip((ax - 0.05) / (a.lung_lat + 0.05), 0.0, 1.3)
    first = a.lung_top - 0.04
    drop = a.rib_tilt * u**2 + 1.2 * np.maximum(u - 0.8, 0.0) ** 2 - 0.06 * u
    # y -> rib number with spacing widening by ~40 % from apex to base
    depth = np.maximum(f.y - first - drop, -0.2)
    phase = depth / a.rib_spacing * (1.0 - 0.12 * depth)
    idx = np.round(phase)
    d = (phase - idx) * a.rib_spacing / a.rib_width
    band = 0.8 * _sigmoid((1.0 - np.abs(d)) * 4.0) + 0.35 * np.exp(-(((np.abs(d) - 0.8) / 0.25) ** 2))
    posterior = band * (idx >= 0) * (idx < 11) * _sigmoid((a.lung_lat + 0.08 - ax) / 0.03) * (ax > 0.07)
    v = np.clip((ax - 0.2) / (a.lung_lat - 0.2), 0.0, 1.0)
    aphase = (f.y - first - 0.12 - 0.35 * (1.0 - v) ** 1.3) / (1.7 * a.rib_spacing)
    aidx = np.round(aphase)
    ad = (aphase - aidx) * 1.7 * a.rib_spacing / (1.3 * a.rib_width)
    anterior = np.exp(-(ad**2)) * (aidx >= 0) * (aidx < 5) * (v > 0.02) * (v < 0.98)
    return (posterior + 0.4 * anterior) * _sigmoid((cp + 0.1 - f.y) / 0.04)


def _clavicles(f: _Grid, a: Anatomy) -> np.ndarray:
    ax = np.abs(f.x)
    t = (ax - 0.09) / 0.62
    ym, yl = a.shoulder_y + 0.13, a.shoulder_y - 0.02
    yc = ym + (yl - ym) * t + 0.035 * np.sin(2 * np.pi * t)
    band = np.exp(-(((f.y - yc) / 0.032) ** 2))
    return band * _smoothstep(-0.05, 0.05, t) * _smoothstep(1.08, 0.95, t)


def _ellipse(f: _Grid, cx: float, cy: float, rx: float, ry: float, soft: float) -> np.ndarray:
    r = np.sqrt(((f.x - cx) / rx) ** 2 + ((f.y - cy) / ry) ** 2)
    return _sigmoid((1.0 - r) / soft)


def _vessels(f: _Frame, a: Anatomy) -> np.ndarray:
    """Lung markings: tapering branches fanning out from each hilum and forking four times,
    the same tree in every shot of a patient. Grown a generation at a time (vectorised)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(a.vessel_seed)
    hilum_y = 0.45 * (a.lung_top + a.costophrenic_y) + 0.04 * rng.normal(size=2)
    side = np.repeat([-1.0, 1.0], 7)
    x = side * (a.mediastinum_w + 0.1)
    y = np.repeat(hilum_y, 7)
    ang = np.tile(np.linspace(-1.3, 1.2, 7), 2) + rng.normal(0, 0.12, 14)
    width, segments = 0.032, []
    for depth in range(5):
        length = rng.uniform(0.10, 0.18, ang.size) * 0.8**depth
        x2, y2 = x + side * length * np.cos(ang), y + length * np.sin(ang)
        segments.append(np.column_stack([x, y, x2, y2, np.full(ang.size, width)]))
        turn = np.tile([-1.0, 1.0], ang.size) * rng.uniform(0.1, 0.6, 2 * ang.size)
        x, y, side, ang = (np.repeat(v, 2) for v in (x2, y2, side, ang))
        ang = ang + turn
        width *= 0.7
    seg = np.concatenate(segments)
    ends = f.to_pixels(seg[:, :4].reshape(-1, 2)).reshape(-1, 4)
    img = Image.new("L", (f.size, f.size), 0)
    draw = ImageDraw.Draw(img)
    for (x1, y1, x2, y2), w in zip(ends.tolist(), seg[:, 4].tolist(), strict=True):
        draw.line(
            [(x1, y1), (x2, y2)], fill=int(90 + 160 * min(w / 0.03, 1.0)), width=max(1, round(f.length(w)))
        )
    img = img.filter(ImageFilter.GaussianBlur(f.length(0.01)))
    return np.asarray(img, dtype=np.float32) / 255.0


def _blob(f: _Frame, rng: np.random.Generator, cx: float, cy: float, r: float, lobes: int) -> np.ndarray:
    """An irregular soft blob in pixel space: a few Gaussian lobes around (cx, cy)."""
    out = np.zeros((f.size, f.size), np.float32)
    x0, x1 = max(0, int(cx - 3 * r)), min(f.size, int(cx + 3 * r) + 1)
    y0, y1 = max(0, int(cy - 3 * r)), min(f.size, int(cy + 3 * r) + 1)
    py, px = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    win = out[y0:y1, x0:x1]
    for _ in range(lobes):
        ox, oy = rng.normal(0.0, 0.45 * r, 2)
        s = rng.uniform(0.35, 0.6) * r
        win += rng.uniform(0.6, 1.0) * np.exp(-((px - cx - ox) ** 2 + (py - cy - oy) ** 2) / (2 * s * s))
    return out / max(float(out.max()), 1e-6)


def _texture(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    t = gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma)
    return t / max(float(t.std()), 1e-6)


def _box(mask: np.ndarray, label: str) -> Box | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return Box(x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1, label)


def _depth(lung: np.ndarray) -> np.ndarray:
    """Distance of every lung pixel to the lung's edge (0 outside), computed on its box."""
    from scipy.ndimage import distance_transform_edt

    inside = lung > 0.5
    out = np.zeros(lung.shape, np.float32)
    ys, xs = np.nonzero(inside)
    if len(xs):
        win = (slice(max(ys.min() - 1, 0), ys.max() + 2), slice(max(xs.min() - 1, 0), xs.max() + 2))
        out[win] = distance_transform_edt(inside[win])
    return out


def _sample_points(rng: np.random.Generator, weights: np.ndarray, n: int = 1) -> list[tuple[float, float]]:
    """``n`` pixel positions (x, y) drawn with probability proportional to ``weights``."""
    flat = weights.ravel().astype(np.float64)
    picks = rng.choice(flat.size, size=n, p=flat / flat.sum())
    return [(float(i % weights.shape[1]), float(i // weights.shape[1])) for i in picks]


def _pneumonia(
    f: _Frame, rng: np.random.Generator, lungs: list[np.ndarray], heart: np.ndarray, a: Anatomy, cp: float
) -> tuple[np.ndarray, list[Box | None]]:
    """One soft, irregular consolidation somewhere inside one lung field, lobar in scale: its
    box averages 20% x 21% of the image (RSNA's pneumonia boxes: about 21% x 32%)."""
    lung = lungs[int(rng.integers(2))]
    r = f.length(rng.uniform(0.17, 0.26))
    depth = _depth(lung)
    [(cx, cy)] = _sample_points(rng, (depth > 0.7 * r) * (heart < 0.3) + 1e-9 * (lung > 0.5))
    blob = _blob(f, rng, cx, cy, r, int(rng.integers(4, 8)))
    blob *= 0.85 + 0.15 * _texture(rng, f.size, 3.0)
    blob = _smoothstep(0.08, 0.7, blob) * lung
    return rng.uniform(0.28, 0.38) * blob, [_box(blob > 0.12, "pneumonia")]


def _covid(
    f: _Frame, rng: np.random.Generator, lungs: list[np.ndarray], heart: np.ndarray, a: Anatomy, cp: float
) -> tuple[np.ndarray, list[Box | None]]:
    """Hazy ground-glass patches along the outer margin of both lungs, mostly low."""
    total = np.zeros((f.size, f.size), np.float32)
    boxes: list[Box | None] = []
    lower = np.clip((f.y - a.lung_top) / (cp - a.lung_top), 0.0, 1.0) ** 2
    for side, lung in zip((-1, 1), lungs, strict=True):
        r = f.length(rng.uniform(0.08, 0.12))
        depth = _depth(lung)
        lateral = np.clip(side * f.x / a.lung_lat, 0.0, 1.0) ** 4
        rim = (depth > 0.4 * r) & (depth < 1.1 * r)
        weights = rim * lateral * (0.15 + lower) + 1e-9 * (lung > 0.5)
        patches = np.zeros_like(total)
        for cx, cy in _sample_points(rng, weights, int(rng.integers(3, 6))):
            patches = np.maximum(patches, _blob(f, rng, cx, cy, r, 5) * rng.uniform(0.7, 1.0))
        patches = _smoothstep(0.05, 0.9, patches) * lung
        boxes.append(_box(patches > 0.12, "covid"))
        total += patches
    total *= 0.85 + 0.15 * _texture(rng, f.size, 1.5)
    return rng.uniform(0.20, 0.27) * total, boxes


LESIONS = {"pneumonia": _pneumonia, "covid": _covid}


@functools.lru_cache(maxsize=4)
def _patient_layers(a: Anatomy, size: int) -> tuple[_Frame, np.ndarray, np.ndarray]:
    """What does not change between a patient's shots, drawn once in a wide unrotated frame
    and warped into each shot: soft tissue and bone, and what shows only over aerated lung
    (the ribs' extra contrast and the lung markings)."""
    src = _Frame(int(math.ceil(size * 1.4)), Shot(scale=0.76))
    cp = a.costophrenic_y
    body, thick = _body(src, a)
    tissue = body * a.tissue * (0.45 + 0.55 * thick)
    win, grid = src.window(-1.6, 2.0, 0.1)
    tissue[win] += 0.06 * body[win] * _spine(grid)
    ribs = np.zeros_like(tissue)
    win, grid = src.window(a.lung_top - 0.15, cp + 0.35, a.lung_lat + 0.15)
    ribs[win] = _rib_bands(grid, a, cp) * body[win]
    tissue += 0.032 * ribs
    win, grid = src.window(a.shoulder_y - 0.15, a.shoulder_y + 0.3)
    tissue[win] += 0.14 * body[win] * _clavicles(grid, a)
    win, grid = src.window(-1.6, a.lung_top + 0.5, 0.2)
    tissue[win] += 0.10 * _ellipse(grid, a.mediastinum_w + 0.01, a.lung_top + 0.25, 0.06, 0.05, 0.15)
    tissue[win] -= (
        0.12 * _sigmoid((0.035 - np.abs(grid.x)) / 0.008) * _sigmoid((a.lung_top + 0.35 - grid.y) / 0.03)
    )
    win, grid = src.window(cp - 0.6, cp + 0.5)
    if a.gas:
        tissue[win] -= 0.15 * _ellipse(grid, 0.42, cp - a.dome + 0.13, 0.09, 0.06, 0.2)
    if a.female:
        for side in (-1, 1):
            tissue[win] += 0.07 * _ellipse(grid, side * 0.5, cp - 0.12, 0.33, 0.24, 0.12)
    lung_detail = 0.048 * ribs + 0.10 * _vessels(src, a)
    return src, np.ascontiguousarray(tissue, np.float32), np.ascontiguousarray(lung_detail, np.float32)


def _spine(f: _Grid) -> np.ndarray:
    return _sigmoid((0.065 - np.abs(f.x)) / 0.01) * (1.0 + 0.25 * np.cos(2 * np.pi * f.y / 0.11))


def _lungs(f: _Frame, a: Anatomy, shot: Shot) -> list[np.ndarray]:
    """Soft masks of the image-left and image-right lung fields."""
    return [_polygon_mask(f, _lung_outline(a, shot, side), blur=f.length(0.012)) for side in (-1, 1)]


def _heart(f: _Frame, a: Anatomy, shot: Shot, cp: float) -> np.ndarray:
    """The heart sits on the left dome, so only its upper part shows against the lung; an
    AP film magnifies it."""
    mag = 1.1 if shot.ap else 1.0
    right = a.mediastinum_w + 0.08
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    cx, rx = 0.5 * (a.heart_w - right), 0.5 * (a.heart_w + right) * mag
    rim = np.stack([cx + rx * np.cos(t), cp - 0.6 * a.dome + a.heart_h * mag * np.sin(t)], 1)
    return _polygon_mask(f, rim, blur=f.length(0.015))


def lung_fields(size: int, anatomy: Anatomy, shot: Shot) -> np.ndarray:
    """Boolean mask of the two lung fields of this shot (where lesions may be drawn)."""
    left, right = _lungs(_Frame(size, shot), anatomy, shot)
    return (left > 0.5) | (right > 0.5)


def render_chest(
    rng: np.random.Generator, *, size: int, anatomy: Anatomy, shot: Shot, lesion: str | None
) -> tuple[np.ndarray, list[Box]]:
    """One frontal chest radiograph as float32 in [0, 1] (bright = dense) and its lesion
    boxes (pixels of this image).

    The noise comes from a child of ``rng`` drawn before the lesion's, so the same seed with
    ``lesion=None`` gives the same image without the lesion.
    """
    from scipy.ndimage import gaussian_filter

    if lesion is not None and lesion not in LESIONS:
        raise ValueError(f"unknown lesion {lesion!r}; valid: {', '.join(LESIONS)}")
    noise_rng, lesion_rng = rng.spawn(2)
    a, f = anatomy, _Frame(size, shot)
    src, tissue, lung_detail = _patient_layers(a, size)
    cp = a.costophrenic_y + shot.inspiration
    lungs = _lungs(f, a, shot)
    heart = _heart(f, a, shot, cp)
    aerated = np.clip(lungs[0] + lungs[1], 0.0, 1.0) * (1.0 - 0.85 * heart)
    att = f.warp_from(tissue, src) + aerated * (f.warp_from(lung_detail, src) - 0.9 * a.air) + 0.04 * heart
    boxes: list[Box | None] = []
    if lesion is not None:
        opacity, boxes = LESIONS[lesion](f, lesion_rng, lungs, heart, a, cp)
        att += opacity

    img = np.clip(shot.brightness + shot.contrast * (att - 0.4) + 0.42, 0.0, 1.0) ** shot.gamma
    grain = noise_rng.standard_normal((size, size), dtype=np.float32)
    # one blur softens the anatomy (detector blur) and gives the noise its grain size
    img = gaussian_filter(img + shot.noise * 3.0 * grain * (0.5 + img), 0.7, truncate=3.0)
    return np.clip(img, 0.0, 1.0).astype(np.float32), [b for b in boxes if b is not None]


@dataclass(frozen=True)
class DemoImage:
    """One planned image. ``age``/``sex``/``view`` are the truth (and the DICOM header);
    ``csv_*`` what the manifest says (None = missing)."""

    patient_id: str
    image_no: int
    label: str
    split: str
    fmt: str
    age: int
    sex: str
    view: str
    modality: str
    csv_age: int | None
    csv_sex: str | None
    csv_view: str | None
    anatomy: Anatomy
    shot: Shot
    seed: tuple[int, ...]

    @property
    def path(self) -> str:
        ext = "dcm" if self.fmt.startswith("dcm") else "png"
        return f"{self.split}/{self.label}/{self.patient_id}_{self.image_no}.{ext}"


@dataclass(frozen=True)
class DemoInfo:
    root: str
    n_images: int
    classes: dict[str, int]

    def to_json(self) -> dict[str, object]:
        return {"root": self.root, "n_images": self.n_images, "classes": dict(self.classes)}


def _draw_patient(seed: int, index: int) -> tuple[int, str, Anatomy, list[tuple[str, Shot, str, str, tuple]]]:
    """A patient's nuisances, from a stream that never sees the class."""
    rng = np.random.default_rng([seed, 1, index])
    sex = "F" if rng.random() < 0.5 else "M"
    age = int(np.clip(rng.normal(54, 17), 18, 92))
    anatomy = Anatomy.random(rng, female=sex == "F")
    counts, probs = IMAGES_PER_PATIENT
    shots = []
    for j in range(int(rng.choice(counts, p=probs))):
        irng = np.random.default_rng([seed, 2, index, j])
        view = "AP" if irng.random() < 0.4 else "PA"
        fmt = FORMATS[int(irng.choice(len(FORMATS), p=[w for _, w in FORMATS]))][0]
        modality = "CR" if irng.random() < 0.5 else "DX"
        shots.append((view, Shot.random(irng, ap=view == "AP"), fmt, modality, (seed, 3, index, j)))
    return age, sex, anatomy, shots


def _quota(n: int, shares: tuple[float, ...]) -> list[int]:
    """Largest-remainder rounding of ``n * shares`` so the counts add up to ``n``."""
    raw = [n * s for s in shares]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[: n - sum(counts)]:
        counts[i] += 1
    return counts


def plan_demo(seed: int = 0, n_patients: int | None = None) -> list[DemoImage]:
    """Every image of the demo, without pixels: who, which class, split, format, metadata.

    Patients are drawn until there are ``DEFAULT_IMAGES`` images unless ``n_patients`` is
    given. Classes go to patients by quota (60/30/10), splits by patient within each class
    (70/15/15), so no patient is in two splits.
    """
    patients = []
    while (n_patients is None and sum(len(p[3]) for p in patients) < DEFAULT_IMAGES) or (
        n_patients is not None and len(patients) < n_patients
    ):
        patients.append(_draw_patient(seed, len(patients)))
    rng = np.random.default_rng([seed, 0])
    labels = np.repeat(np.arange(len(CLASSES)), _quota(len(patients), CLASS_SHARES))
    rng.shuffle(labels)
    splits = np.empty(len(patients), dtype=int)
    for c in range(len(CLASSES)):
        members = rng.permutation(np.flatnonzero(labels == c))
        splits[members] = np.repeat(np.arange(len(SPLITS)), _quota(len(members), SPLIT_SHARES))
    plan = []
    for i, (age, sex, anatomy, shots) in enumerate(patients):
        for j, (view, shot, fmt, modality, render_seed) in enumerate(shots, start=1):
            miss = np.random.default_rng([seed, 4, i, j]).random(3) < MISSING_SHARE
            plan.append(
                DemoImage(
                    patient_id=f"p{i:04d}",
                    image_no=j,
                    label=CLASSES[labels[i]],
                    split=SPLITS[splits[i]],
                    fmt=fmt,
                    age=age,
                    sex=sex,
                    view=view,
                    modality=modality,
                    csv_age=None if miss[0] else age,
                    csv_sex=None if miss[1] else sex,
                    csv_view=None if miss[2] else view,
                    anatomy=anatomy,
                    shot=shot,
                    seed=render_seed,
                )
            )
    return plan


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _uid(item: DemoImage, part: int) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["chestlab-demo", *map(str, item.seed), str(part)])


def _write_dicom(path: Path, img: np.ndarray, item: DemoImage) -> None:
    """12- or 14-bit stored values not filling their range, a rescale to modality units and
    the window that displays exactly ``img``; MONOCHROME1 stores the inverse."""
    from core.data.dicomwrite import write_dicom

    rng = np.random.default_rng([*item.seed, 5])
    bits = int(rng.choice([12, 14]))
    top = 2**bits - 1
    lo = int(rng.integers(0, top // 10))
    hi = lo + int(top * rng.uniform(0.75, 0.88))
    slope, intercept = [(1.0, 0.0), (1.0, -1024.0), (0.5, -100.0), (2.0, 0.0)][int(rng.integers(4))]
    stored = np.rint(lo + img.astype(np.float64) * (hi - lo)).astype(np.uint16)
    if item.fmt == "dcm1":
        stored = (lo + hi - stored).astype(np.uint16)
    m_lo, m_hi = lo * slope + intercept, hi * slope + intercept
    # DICOM's linear VOI maps c - 0.5 -/+ (w - 1) / 2 to the ends of the output range
    window = ((m_lo + m_hi) / 2 + 0.5, m_hi - m_lo + 1)
    header = {
        "PatientID": item.patient_id,
        "PatientAge": f"{item.age:03d}Y",
        "PatientSex": item.sex,
        "ViewPosition": item.view,
        "Modality": item.modality,
        "InstanceNumber": item.image_no,
        "SOPInstanceUID": _uid(item, 0),
        "StudyInstanceUID": _uid(item, 1),
        "SeriesInstanceUID": _uid(item, 2),
    }
    write_dicom(
        path,
        stored,
        photometric="MONOCHROME1" if item.fmt == "dcm1" else "MONOCHROME2",
        bits_stored=bits,
        rescale_slope=slope,
        rescale_intercept=intercept,
        window=window,
        header=header,
        compress="rle" if rng.random() < 0.3 else None,
    )


def render_item(item: DemoImage, size: int) -> tuple[np.ndarray, list[Box]]:
    """One planned image, rendered: (float image in [0, 1], its lesion boxes). The same item
    and size always give the same pixels (the item carries its seed)."""
    return render_chest(
        np.random.default_rng(list(item.seed)),
        size=size,
        anatomy=item.anatomy,
        shot=item.shot,
        lesion=None if item.label == "normal" else item.label,
    )


def _write_image(root: Path, item: DemoImage, size: int) -> list[Box]:
    img, boxes = render_item(item, size)
    path = root / item.path
    path.parent.mkdir(parents=True, exist_ok=True)
    if item.fmt == "png8":
        path.write_bytes(_png_bytes(np.rint(img * 255).astype(np.uint8)))
    elif item.fmt == "png16":
        # 12-bit detector data, either shifted into the high bits or scaled to the full range
        if np.random.default_rng([*item.seed, 5]).random() < 0.5:
            data = np.rint(img * 4095).astype(np.uint16) << 4
        else:
            data = np.rint(img * 65535).astype(np.uint16)
        path.write_bytes(_png_bytes(data))
    else:
        _write_dicom(path, img, item)
    return boxes


def _write_patient(root: str, items: list[DemoImage], size: int) -> list[list[Box]]:
    return [_write_image(Path(root), item, size) for item in items]


def _claim(root: Path, seed: int) -> None:
    """Refuse a folder holding anything but a previous demo; mark it as being written
    before touching anything, so an interrupted write is recognised (and overwritten)."""
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).is_file():
        raise DataError(
            f"{root}: folder is not empty and holds no ChestLab demo ({MARKER}); choose an empty or new folder"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(root / MARKER, {"chestlab_demo": 1, "status": "writing", "seed": seed})
        for name in ENTRIES:
            entry = root / name
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.exists():
                entry.unlink()
    except OSError as exc:
        raise DataError(f"{root}: cannot write the demo there ({exc.strerror or exc})") from exc


def _patient_groups(plan: list[DemoImage]) -> list[list[DemoImage]]:
    groups: dict[str, list[DemoImage]] = {}
    for item in plan:
        groups.setdefault(item.patient_id, []).append(item)
    return list(groups.values())


def _render_all(
    root: Path, plan: list[DemoImage], args: tuple[int, int | None, int], workers: int, progress: ProgressFn
) -> list[list[Box]]:
    """Boxes of every image, in plan order. Patients are dealt to ``workers`` processes (a
    patient's images stay together so its anatomy layers are drawn once): this one and
    child interpreters that re-plan from the same arguments. Not multiprocessing: its
    spawn re-runs the parent's ``__main__``, which ``python -m core`` does not guard."""
    import subprocess
    import sys
    import tempfile
    import threading
    import time

    seed, n_patients, size = args
    groups = _patient_groups(plan)
    done: dict[str, list[list[Box]]] = {}
    reports: list[list[tuple[str, list[list[Box]]]]] = []  # one list per child, appended by its reader
    children = []
    path = os.pathsep.join(filter(None, [str(_PROJECT), os.environ.get("PYTHONPATH")]))

    def report() -> None:
        images = sum(map(len, done.values())) + sum(len(b) for r in reports for _, b in list(r))
        progress(images, len(plan), "rendering")

    try:
        for shard in range(1, workers):
            err = tempfile.TemporaryFile()
            argv = [str(root), str(seed), str(n_patients or 0), str(size), str(shard), str(workers)]
            child = subprocess.Popen(
                [sys.executable, "-c", "from core.data.demo import _shard_main; _shard_main()", *argv],
                stdout=subprocess.PIPE,
                stderr=err,
                env=dict(os.environ, PYTHONPATH=path),
                text=True,
            )
            reports.append([])
            reader = threading.Thread(target=_collect, args=(child.stdout, reports[-1]), daemon=True)
            reader.start()
            children.append((child, reader, err))
        for items in groups[0::workers]:
            done[items[0].patient_id] = _write_patient(str(root), items, size)
            report()
        for child, reader, err in children:
            while child.poll() is None:
                time.sleep(0.1)
                report()
            reader.join()
            if child.returncode != 0:
                err.seek(0)
                lines = err.read().decode(errors="replace").strip().splitlines() or ["no output"]
                raise DataError(f"{root}: a demo worker process failed: {lines[-1]}")
    finally:
        for child, _, err in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            err.close()
    for r in reports:
        done.update(r)
    missing = [items[0].patient_id for items in groups if items[0].patient_id not in done]
    if missing:
        raise DataError(f"{root}: demo worker processes did not report patients {', '.join(missing[:5])}")
    return [boxes for items in groups for boxes in done[items[0].patient_id]]


def _collect(stream: IO[str], out: list[tuple[str, list[list[Box]]]]) -> None:
    for line in stream:
        try:
            patient, boxes = json.loads(line)
        except ValueError:
            continue  # stray output; a patient it hid is reported missing afterwards
        out.append((patient, [[Box(*b) for b in image] for image in boxes]))


def _shard_main() -> None:
    """Entry point of a child worker: render every ``n``-th patient, print its boxes."""
    import sys

    root, seed, n_patients, size, shard, n = sys.argv[1:7]
    plan = plan_demo(int(seed), int(n_patients) or None)
    for items in _patient_groups(plan)[int(shard) :: int(n)]:
        boxes = _write_patient(root, items, int(size))
        rows = [[[b.x, b.y, b.width, b.height, b.label] for b in image] for image in boxes]
        print(json.dumps([items[0].patient_id, rows]), flush=True)


def _csv_bytes(header: list[str], rows: list[list[object]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buf.getvalue().encode()


def _readme(seed: int, n_images: int, classes: dict[str, int]) -> str:
    counts = ", ".join(f"{name} {n}" for name, n in classes.items())
    return (
        "ChestLab demo dataset: SYNTHETIC frontal chest radiographs, not patient data.\n"
        f"Written by `python -m core demo` with --seed {seed}: {n_images} images ({counts}).\n"
        "Pneumonia images carry one focal consolidation in one lung; covid images bilateral,\n"
        "peripheral ground-glass patches (boxes.csv: x, y = top-left, pixels). Anatomy,\n"
        "exposure, position, file format (8/16-bit PNG, DICOM MONOCHROME1/2) and metadata are\n"
        "drawn alike for every class, so the lesion is the only class signal.\n"
        "manifest.csv: path, label, split (by patient), patient_id, age, sex, view.\n"
    )


def write_demo(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_patients: int | None = None,
    size: int = 256,
    progress: ProgressFn = no_progress,
    workers: int | None = None,
) -> DemoInfo:
    """Write the demo dataset into ``root`` (empty, new, or a previous demo, which is
    replaced). The same seed gives byte-identical files. ``workers`` processes render in
    parallel (default: up to 2 for a full-size demo)."""
    if size < 64:
        raise ValueError(f"demo images need size >= 64, got {size}")
    root = Path(root)
    _claim(root, seed)
    plan = plan_demo(seed, n_patients)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(plan) >= 200 else 1
    try:
        boxes = _render_all(root.resolve(), plan, (seed, n_patients, size), workers, progress)
    except OSError as exc:
        raise DataError(f"{exc.filename or root}: cannot write the demo ({exc.strerror or exc})") from exc
    manifest = [[i.path, i.label, i.split, i.patient_id, i.csv_age, i.csv_sex, i.csv_view] for i in plan]
    box_rows = [
        [i.path, b.x, b.y, b.width, b.height, b.label] for i, bs in zip(plan, boxes, strict=True) for b in bs
    ]
    atomic_write_bytes(
        root / "manifest.csv",
        _csv_bytes(["path", "label", "split", "patient_id", "age", "sex", "view"], manifest),
    )
    atomic_write_bytes(
        root / "boxes.csv", _csv_bytes(["path", "x", "y", "width", "height", "label"], box_rows)
    )
    classes = {name: sum(i.label == name for i in plan) for name in CLASSES}
    atomic_write_bytes(root / "README.txt", _readme(seed, len(plan), classes).encode())
    n_pat = len({i.patient_id for i in plan})
    atomic_write_json(
        root / MARKER,
        {
            "chestlab_demo": 1,
            "status": "complete",
            "seed": seed,
            "size": size,
            "n_patients": n_pat,
            "n_images": len(plan),
            "classes": classes,
        },
    )
    return DemoInfo(str(root.resolve()), len(plan), classes)


def demo_info(root: str | os.PathLike[str]) -> DemoInfo | None:
    """The demo in ``root`` if one was written there completely, else None."""
    root = Path(root)
    try:
        marker = json.loads((root / MARKER).read_text())
        if marker.get("status") != "complete":
            return None
        return DemoInfo(str(root.resolve()), int(marker["n_images"]), dict(marker["classes"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
