"""Procedural, deterministic stand-ins for dSprites and Shapes3D.

The machines that build and test this artifact have no network, so each dataset also exists
as a renderer with exactly the official factor grid, ordering and image format
(SPEC.md section 1). Nothing here is random: the same factor indices always give the same
image on the same device.

dSprites (``DSpritesRenderer``)
    factors ``int64 [n, 5]``: shape 0..2 (square, ellipse, heart), scale 0..5
    (linspace 0.5..1), orientation 0..39 (linspace 0..2pi, both ends, so 0 and 39 are the
    same image), posX 0..31, posY 0..31 (linspace 0..1). Output ``uint8 [n, 64, 64]`` with
    values 0/1. Geometry measured on the reference images of the real data
    (``/work/shared/reference/dsprites``: fits to the 25 real samples and the real
    pixel-density maps, which were drawn with matplotlib's ``Greys_r``):

    * sprite centre at ``16 + 32 * pos`` pixels on both axes (continuous coordinates, pixel i
      covers [i, i+1)); posX moves right, posY moves down (the real posY direction cannot be
      told from the symmetric references; down is the image-row convention);
    * square side ``19.2 * scale``; ellipse semi-axes ``12.75 * scale`` by ``7.225 * scale``
      (area 289.4 px at scale 1), long axis horizontal at orientation 0; heart = two lobe discs
      of radius 5 and straight sides tangent to them meeting in a pointed tip, 19.6 px wide and
      18.2 px tall at scale 1 (area 225.0 px), upright at orientation 0, turning about the
      centre of its bounding box. Ellipse and heart were fitted (pixel-exact pose search over
      scale, orientation and position) to the 8 ellipses and 8 hearts of the real
      ``random_samples_grid.png``: 12 and 30 wrong pixels of about 1,150 and 900 (the square,
      unchanged, 1 of 1,800); their areas per scale follow ``REFERENCE_AREA_SCALE1 * scale**2``
      (see ``tests/test_render.py``). Renderer version 1 had ellipse and heart about 17 % too
      small in area (11.6 x 6.5; 17.9 x 16.2 px), see ``RENDERER_VERSION``;
    * orientation turns the sprite counter-clockwise on screen (this matched the real
      orientation-5 density map better than clockwise);
    * a pixel is on when its centre lies inside the shape, evaluated exactly at the sprite's
      sub-pixel position inside a 32x32 window (only per-factor tables are cached).

Shapes3D (``Shapes3DRenderer``)
    factors ``int64 [n, 6]``: floor_hue, wall_hue, object_hue 0..9 (hue = index / 10 on the
    HSV circle, full saturation and value), scale 0..7 (linspace 0.75..1.25), shape 0..3
    (cube, cylinder, sphere, capsule), orientation 0..14 (linspace -30..30 degrees).
    Output ``uint8 [n, 64, 64, 3]``. A small ray-traced scene: light-blue sky, a room of a back
    wall and two side walls (the corner comes into view as the camera orbits), a floor, the
    object resting on the floor at the centre, a head light plus a spot light from the upper
    left behind the object that casts the object's shadow forwards to the right. In
    ``__init__`` the scene is rendered (2x2 supersampled) once per (shape, scale,
    orientation) into four per-pixel weight maps (sky, wall, floor, object); ``render`` only
    gathers those maps and mixes the three hue colours, so no image set is ever held (the
    cache is 480 x 4 x 64 x 64 float16 = 15.7 MB). Orientation index 0 (-30 degrees) shows
    the corner of the walls right of centre, index 14 left of it, as in the real traversal.
    Scene constants were fitted by eye and by pixel comparison to
    ``/work/shared/reference/3dshapes`` (see ``python -m vaesae.data.render compare``).

Both renderers gave bit-identical images on CPU and on CUDA (H100, torch 2.11) for 20,000
random factor rows each. The Shapes3D cache is built on the CPU in float64 with one thread.

Command line::

    python -m vaesae.data.render bench      # ms per 512-image batch, cpu (and cuda if present)
    python -m vaesae.data.render compare    # figures/data/*_standin_vs_reference.png
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from pathlib import Path

import torch

from ..errors import VaesaeError, cli

__all__ = [
    "RENDERER_VERSION",
    "VERSION_CHANGES",
    "same_images",
    "DSpritesRenderer",
    "Shapes3DRenderer",
    "renderer_for",
    "hsv_hue_to_rgb",
    "DSPRITES_FACTOR_NAMES",
    "DSPRITES_FACTOR_SIZES",
    "SHAPES3D_FACTOR_NAMES",
    "SHAPES3D_FACTOR_SIZES",
]

DSPRITES_FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
DSPRITES_FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES3D_FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
SHAPES3D_FACTOR_SIZES = (10, 10, 10, 8, 4, 15)

IMAGE_SIZE = 64
_CHUNK = 8192  # images rendered per internal step (bounds temporary memory: ~0.6 GB for Shapes3D)


def _check_factors(factors, sizes: tuple[int, ...], names: tuple[str, ...], label: str, device: torch.device) -> torch.Tensor:
    """Validate a factor-index tensor and return it as int64 on ``device``."""
    k = len(sizes)
    if not isinstance(factors, torch.Tensor):
        raise VaesaeError(f"{label} factors must be a torch.Tensor of integer class indices with shape [n, {k}], got {type(factors).__name__}")
    if factors.dtype.is_floating_point or factors.dtype.is_complex or factors.dtype == torch.bool:
        raise VaesaeError(f"{label} factors must be integer class indices (int64), got dtype {factors.dtype}")
    if factors.dim() != 2 or factors.shape[1] != k:
        raise VaesaeError(f"{label} factors must have shape [n, {k}] ({', '.join(names)}), got {list(factors.shape)}")
    f = factors.to(device=device, dtype=torch.int64)
    if f.shape[0]:
        hi = torch.tensor(sizes, device=device, dtype=torch.int64)
        bad = (f < 0) | (f >= hi)
        if bool(bad.any()):
            col = int(bad.any(0).nonzero()[0, 0])
            row = int(bad[:, col].nonzero()[0, 0])
            raise VaesaeError(
                f"{label} factor {names[col]} must lie in 0..{sizes[col] - 1}, got {int(f[row, col])} (row {row})"
            )
    return f


def hsv_hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] of HSV colours with the given hues in [0, 1), saturation 1, value 1."""
    h6 = (hue % 1.0) * 6.0
    k = torch.stack([(5.0 + h6) % 6.0, (3.0 + h6) % 6.0, (1.0 + h6) % 6.0], dim=-1)
    return 1.0 - torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


# ---------------------------------------------------------------------------------------
# dSprites
# ---------------------------------------------------------------------------------------

# Version of the procedural images: recorded by ``Dataset.describe()`` (every run.json's "data")
# for procedural data. Bump it whenever any rendered pixel changes.
#   1: first renderers.
#   2: dSprites ellipse and heart refitted to the real sprites (areas +22 % and +21 %).
RENDERER_VERSION = "vaesae-render-2"
# which datasets' images each version changed (a record without a version was made by version 1)
VERSION_CHANGES: dict[str, tuple[str, ...]] = {"vaesae-render-1": ("dsprites", "shapes3d"), "vaesae-render-2": ("dsprites",)}


def same_images(dataset: str, version_a: str | None, version_b: str | None) -> bool:
    """Whether two renderer versions draw the same images of ``dataset`` (None: version 1, the unrecorded one)."""
    order = list(VERSION_CHANGES)
    a, b = sorted(order.index(v or "vaesae-render-1") for v in (version_a, version_b))
    return not any(dataset in VERSION_CHANGES[v] for v in order[a + 1:b + 1])

# Shape constants in pixels at scale 1 (fitted to the real sprites, see the module docstring).
SQUARE_HALF = 9.6
ELLIPSE_A = 12.75
ELLIPSE_B = 7.225
# heart: lobe discs at (+-HEART_C, HEART_YL) of radius HEART_R, tip at (0, HEART_YT); y down;
# the bounding box (y from HEART_YL - HEART_R to HEART_YT) is centred on the sprite centre.
HEART_C = 4.8
HEART_R = 5.0
HEART_YL = -4.1
HEART_YT = 9.1
DSPRITES_POS_LO = 16.0  # centre pixel coordinate at pos = 0
DSPRITES_POS_SPAN = 32.0  # centre moves this many pixels from pos = 0 to pos = 1
_WIN = 32  # rasterisation window (covers the largest rotated sprite: square half-diagonal 13.6 px)


def _heart_halfplanes() -> list[tuple[float, float, float]]:
    """Half-planes a*x + b*y + d >= 0 whose intersection is the heart's lower polygon.

    The polygon joins the left lobe centre, the outer tangent point on the left lobe, the tip,
    the tangent point on the right lobe and the right lobe centre; with the two lobe discs it
    makes up the convex hull of the discs and the tip, minus the notch between the lobes.
    """
    c, r, yl, yt = HEART_C, HEART_R, HEART_YL, HEART_YT

    def tangent(cx: float) -> tuple[float, float]:
        dx, dy = 0.0 - cx, yt - yl
        dist = math.hypot(dx, dy)
        a = math.acos(r / dist)
        base = math.atan2(dy, dx)
        cands = [(cx + r * math.cos(base + s * a), yl + r * math.sin(base + s * a)) for s in (1.0, -1.0)]
        # the outer tangent point lies further from the axis of symmetry
        return max(cands, key=lambda p: abs(p[0]))

    poly = [(-c, yl), tangent(-c), (0.0, yt), tangent(c), (c, yl)]
    cx = sum(p[0] for p in poly) / len(poly)
    cy = sum(p[1] for p in poly) / len(poly)
    planes = []
    for i in range(len(poly)):
        (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % len(poly)]
        a, b = -(y1 - y0), (x1 - x0)
        d = -(a * x0 + b * y0)
        if a * cx + b * cy + d < 0:  # orient so that the interior is positive
            a, b, d = -a, -b, -d
        planes.append((a, b, d))
    return planes


class DSpritesRenderer:
    """Deterministic dSprites stand-in: ``render(int64 [n, 5]) -> uint8 [n, 64, 64]`` (0/1)."""

    factor_names = DSPRITES_FACTOR_NAMES
    factor_sizes = DSPRITES_FACTOR_SIZES
    channels = 1

    def __init__(self, device: str | torch.device = "cpu"):
        try:
            self.device = torch.device(device)
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as exc:
            raise VaesaeError(f"cannot use device {device!r} for the dSprites renderer: {str(exc).splitlines()[0]}") from None
        dev, f64 = self.device, torch.float64
        n_or = self.factor_sizes[2]
        k = torch.arange(n_or, dtype=f64)
        angle = 2.0 * math.pi * k / (n_or - 1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        cos[-1], sin[-1] = 1.0, 0.0  # 2*pi is exactly the same as 0
        scale = torch.linspace(0.5, 1.0, self.factor_sizes[1], dtype=f64)
        # rotation-and-scale coefficients per (scale, orientation): sprite = M @ (dx, dy)
        self._c = (cos[None, :] / scale[:, None]).to(dev, torch.float32)  # [6, 40]
        self._s = (sin[None, :] / scale[:, None]).to(dev, torch.float32)
        pos = DSPRITES_POS_LO + DSPRITES_POS_SPAN * torch.linspace(0.0, 1.0, 32, dtype=f64)
        origin = torch.floor(pos).to(torch.int64) - _WIN // 2  # window start, 0..32
        win = torch.arange(_WIN, dtype=f64)
        # pixel-centre offsets from the sprite centre, per position index and window column
        self._off = (origin[:, None].to(f64) + win[None, :] + 0.5 - pos[:, None]).to(dev, torch.float32)  # [32, W]
        self._origin = origin.to(dev)
        self._win = torch.arange(_WIN, device=dev, dtype=torch.int64)
        self._heart = torch.tensor(_heart_halfplanes(), dtype=torch.float32, device=dev)  # [5, 3]

    def __repr__(self) -> str:
        return f"DSpritesRenderer(device={str(self.device)!r})"

    def render(self, factors: torch.Tensor) -> torch.Tensor:
        f = _check_factors(factors, self.factor_sizes, self.factor_names, "dSprites", self.device)
        out = torch.zeros(f.shape[0], IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8, device=self.device)
        for i in range(0, f.shape[0], _CHUNK):  # bounded temporary memory for any batch size
            out[i : i + _CHUNK] = self._render(f[i : i + _CHUNK])
        return out

    def _render(self, f: torch.Tensor) -> torch.Tensor:
        n = f.shape[0]
        shape, scale, orient, px, py = f.unbind(1)
        c = self._c[scale, orient][:, None, None]
        s = self._s[scale, orient][:, None, None]
        dx = self._off[px][:, None, :]  # [n, 1, W]
        dy = self._off[py][:, :, None]  # [n, W, 1]
        # sprite frame (already divided by the scale), y down; the sprite turns
        # counter-clockwise on screen as the orientation index grows
        x = c * dx - s * dy
        y = c * dy + s * dx
        ax, ay = x.abs(), y.abs()
        square = (ax <= SQUARE_HALF) & (ay <= SQUARE_HALF)
        ellipse = (x * x) * (1.0 / ELLIPSE_A**2) + (y * y) * (1.0 / ELLIPSE_B**2) <= 1.0
        yy = y - HEART_YL
        xx = ax - HEART_C  # the heart is symmetric: one disc test on |x|
        heart = xx * xx + yy * yy <= HEART_R**2
        poly = None
        for i in range(self._heart.shape[0]):
            a, b, d = self._heart[i]
            h = a * x + b * y + d >= 0
            poly = h if poly is None else poly & h
        heart = heart | poly
        sh = shape[:, None, None]
        inside = torch.where(sh == 0, square, torch.where(sh == 1, ellipse, heart))
        rows = (self._origin[py][:, None] + self._win[None, :])  # [n, W]
        cols = (self._origin[px][:, None] + self._win[None, :])
        idx = (rows[:, :, None] * IMAGE_SIZE + cols[:, None, :]).reshape(n, _WIN * _WIN)
        out = torch.zeros(n, IMAGE_SIZE * IMAGE_SIZE, dtype=torch.uint8, device=self.device)
        out.scatter_(1, idx, inside.reshape(n, _WIN * _WIN).to(torch.uint8))
        return out.view(n, IMAGE_SIZE, IMAGE_SIZE)


# ---------------------------------------------------------------------------------------
# Shapes3D
# ---------------------------------------------------------------------------------------

# Scene in world units (cube half-size 1 at scale 1); camera orbits the object, y up.
S3_FOCAL = 32.0 / math.tan(math.radians(22.5))  # 45 degree field of view, in pixels
S3_CAM_DIST = 8.0
S3_CAM_HEIGHT = 2.29
S3_CAM_PITCH = math.radians(1.47)  # downwards
S3_ROOM = 8.05  # back wall at z = ROOM, side walls at x = +-ROOM
S3_WALL_HEIGHT = 4.98
S3_BASE_STRIP = 0.2  # a dark strip along the bottom of the walls, as in the real images
S3_SKY = (153.0 / 255.0, 226.0 / 255.0, 249.0 / 255.0)
S3_SPOT = (-2.4, 16.0, 2.6)  # spot light position in the camera's orbit frame (orientation 0)
S3_SPOT_AIM = (-5.0, 0.0, 1.0)  # the point the spot light is aimed at (same frame)
S3_SPOT_CUTOFF = (math.cos(math.radians(12.0)), math.cos(math.radians(40.0)))  # full .. zero
# shape sizes at scale 1
S3_CUBE_HALF = 1.0
S3_CYL_RADIUS, S3_CYL_HALF = 1.05, 1.0
S3_SPHERE_RADIUS = 1.17
S3_CAPSULE_RADIUS, S3_CAPSULE_HALF = 0.97, 0.84  # half-length of the straight part
# shading: value multipliers of the hue colour
_OBJ_AMB, _OBJ_HEAD, _OBJ_KEY = 0.50, 0.45, 0.50
_WALL_BACK, _WALL_SIDE = 1.0, 0.66  # the real side walls look uniformly darker
_FLOOR_AMB, _FLOOR_HEAD, _FLOOR_KEY = 0.25, 0.35, 0.95
_SS = 2  # supersampling per axis when building the caches

_INF = float("inf")


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


def _vec(x, y, z):
    """Stack broadcastable components into [..., 3]."""
    x, y, z = torch.broadcast_tensors(torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(z))
    return torch.stack([x, y, z], -1)


# The helpers below trace rays o + t d (d of unit length, [..., 3]) against one object whose
# sizes are tensors of shape [S, 1, 1] (one entry per scale), so that every scale is traced in
# one set of tensor operations. They return the nearest t > 0 (inf where missed) and the
# outward unit normal there, broadcast to [S, H, W] and [S, H, W, 3].


def _hit_sphere(o, d, center, radius):
    oc = o - center
    b = _dot(oc, d)
    c = _dot(oc, oc) - radius * radius
    disc = b * b - c
    t = -b - torch.sqrt(torch.clamp(disc, min=0.0))
    t = torch.where((disc >= 0) & (t > 1e-6), t, torch.full_like(t, _INF))
    p = o + torch.nan_to_num(t, posinf=0.0)[..., None] * d
    return t, (p - center) / radius[..., None]


def _hit_box(o, d, half, yc):
    zero = torch.zeros_like(half)
    lo = _vec(-half, yc - half, -half)
    hi = _vec(half, yc + half, half)
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0 = (lo - o) * inv
    t1 = (hi - o) * inv
    tenter, axis = torch.minimum(t0, t1).max(-1)
    texit = torch.maximum(t0, t1).min(-1).values
    ok = (tenter <= texit) & (tenter > 1e-6)
    t = torch.where(ok, tenter, torch.full_like(tenter, _INF))
    sign = -torch.sign(d).expand(t.shape + (3,))
    n = torch.where(torch.arange(3)[None] == axis[..., None], sign, zero[..., None])
    return t, n


def _hit_cyl_side(o, d, radius, y0, y1):
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    b = o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2]
    c = o[..., 0] ** 2 + o[..., 2] ** 2 - radius * radius
    disc = b * b - a * c
    a_safe = torch.where(a < 1e-12, torch.full_like(a, 1e-12), a)
    t = (-b - torch.sqrt(torch.clamp(disc, min=0.0))) / a_safe
    y = o[..., 1] + t * d[..., 1]
    ok = (disc >= 0) & (a > 1e-12) & (t > 1e-6) & (y >= y0) & (y <= y1)
    t = torch.where(ok, t, torch.full_like(t, _INF))
    p = o + torch.nan_to_num(t, posinf=0.0)[..., None] * d
    return t, _vec(p[..., 0] / radius, torch.zeros_like(t), p[..., 2] / radius)


def _hit_cap(o, d, radius, y):
    dy = torch.where(d[..., 1].abs() < 1e-12, torch.full_like(d[..., 1], 1e-12), d[..., 1])
    t = (y - o[..., 1]) / dy
    p = o + t[..., None] * d
    ok = (t > 1e-6) & (p[..., 0] ** 2 + p[..., 2] ** 2 <= radius * radius) & (d[..., 1] < 0)
    t = torch.where(ok, t, torch.full_like(t, _INF))
    return t, _vec(torch.zeros_like(t), torch.ones_like(t), torch.zeros_like(t))


def _nearest(*hits):
    t, n = hits[0]
    for t2, n2 in hits[1:]:
        t, t2 = torch.broadcast_tensors(t, t2)
        closer = t2 < t
        t = torch.where(closer, t2, t)
        n = torch.where(closer[..., None], n2, n)
    return t, n


def _hit_object(o, d, shape: int, s: torch.Tensor):
    """Nearest intersection with shape (0 cube, 1 cylinder, 2 sphere, 3 capsule) at scales s [S, 1, 1]."""
    zero = torch.zeros_like(s)
    if shape == 0:
        h = S3_CUBE_HALF * s
        return _hit_box(o, d, h, h)
    if shape == 1:
        r, h = S3_CYL_RADIUS * s, S3_CYL_HALF * s
        return _nearest(_hit_cyl_side(o, d, r, zero, 2 * h), _hit_cap(o, d, r, 2 * h))
    if shape == 2:
        r = S3_SPHERE_RADIUS * s
        return _hit_sphere(o, d, _vec(zero, r, zero), r)
    r, h = S3_CAPSULE_RADIUS * s, S3_CAPSULE_HALF * s
    return _nearest(
        _hit_cyl_side(o, d, r, r, r + 2 * h),
        _hit_sphere(o, d, _vec(zero, r, zero), r),
        _hit_sphere(o, d, _vec(zero, r + 2 * h, zero), r),
    )


def _orbit(theta: float):
    """Camera position, forward, right, up and spot-light position for orbit angle theta."""
    st, ct = math.sin(theta), math.cos(theta)
    sp, cp = math.sin(S3_CAM_PITCH), math.cos(S3_CAM_PITCH)
    cam = (S3_CAM_DIST * st, S3_CAM_HEIGHT, -S3_CAM_DIST * ct)
    fwd = (-st * cp, -sp, ct * cp)
    right = (ct, 0.0, st)
    up = (-st * sp, cp, ct * sp)
    lx, ly, lz = S3_SPOT
    light = (lx * ct - lz * st, ly, lx * st + lz * ct)
    ax, ay, az = S3_SPOT_AIM
    aim = (ax * ct - az * st, ay, ax * st + az * ct)
    return cam, fwd, right, up, light, aim


class Shapes3DRenderer:
    """Deterministic Shapes3D stand-in: ``render(int64 [n, 6]) -> uint8 [n, 64, 64, 3]``."""

    factor_names = SHAPES3D_FACTOR_NAMES
    factor_sizes = SHAPES3D_FACTOR_SIZES
    channels = 3

    def __init__(self, device: str | torch.device = "cpu"):
        try:
            self.device = torch.device(device)
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as exc:
            raise VaesaeError(f"cannot use device {device!r} for the Shapes3D renderer: {str(exc).splitlines()[0]}") from None
        # The caches are built on the CPU in float64 (identical on every machine), then moved.
        # One thread: on a busy 2-core machine, many mid-sized ops with 2 OpenMP threads were
        # measured 50x slower than with one; the build takes about 2 s single-threaded.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            weights = self._build_weights()  # [4 shapes * 8 scales * 15 orientations, 4, 64*64]
        finally:
            torch.set_num_threads(threads)
        self._weights = weights.to(self.device, torch.float16)
        hues = torch.arange(10, dtype=torch.float64) / 10.0
        self._hue_rgb = hsv_hue_to_rgb(hues).to(self.device, torch.float32)  # [10, 3]
        self._sky = torch.tensor(S3_SKY, dtype=torch.float32, device=self.device)

    def __repr__(self) -> str:
        return f"Shapes3DRenderer(device={str(self.device)!r})"

    @staticmethod
    def _build_weights() -> torch.Tensor:
        f64 = torch.float64
        n_scale, n_shape, n_or = SHAPES3D_FACTOR_SIZES[3], SHAPES3D_FACTOR_SIZES[4], SHAPES3D_FACTOR_SIZES[5]
        scales = torch.linspace(0.75, 1.25, n_scale, dtype=f64)[:, None, None]
        thetas = torch.deg2rad(torch.linspace(-30.0, 30.0, n_or, dtype=f64)).tolist()
        size = IMAGE_SIZE * _SS
        sub = (torch.arange(size, dtype=f64) + 0.5) / _SS  # continuous pixel coordinates
        u = (sub - IMAGE_SIZE / 2)[None, :].expand(size, size)  # right
        v = (IMAGE_SIZE / 2 - sub)[:, None].expand(size, size)  # up
        out = torch.zeros(n_shape, n_scale, n_or, 4, IMAGE_SIZE * IMAGE_SIZE, dtype=f64)
        for io_, theta in enumerate(thetas):
            cam, fwd, right, up, light, aim = (torch.tensor(a, dtype=f64) for a in _orbit(theta))
            d = fwd * S3_FOCAL + right * u[..., None] + up * v[..., None]
            d = d / d.norm(dim=-1, keepdim=True)
            o = cam.expand_as(d)
            # background: floor, back wall, side walls, else sky
            t_floor = torch.where(d[..., 1] < 0, -o[..., 1] / d[..., 1], torch.full_like(u, _INF))
            t_back = torch.where(d[..., 2] > 0, (S3_ROOM - o[..., 2]) / d[..., 2], torch.full_like(u, _INF))
            dxs = torch.where(d[..., 0].abs() < 1e-12, torch.full_like(u, 1e-12), d[..., 0])
            t_side = torch.where(d[..., 0] > 0, (S3_ROOM - o[..., 0]) / dxs, (-S3_ROOM - o[..., 0]) / dxs)
            y_back = o[..., 1] + t_back * d[..., 1]
            y_side = o[..., 1] + t_side * d[..., 1]
            t_back = torch.where((y_back >= 0) & (y_back <= S3_WALL_HEIGHT), t_back, torch.full_like(u, _INF))
            t_side = torch.where((y_side >= 0) & (y_side <= S3_WALL_HEIGHT) & (t_side > 0), t_side, torch.full_like(u, _INF))
            t_wall = torch.minimum(t_back, t_side)
            is_floor = t_floor < t_wall
            t_bg = torch.where(is_floor, t_floor, t_wall)
            is_sky = ~torch.isfinite(t_bg)
            is_wall = ~is_floor & ~is_sky
            p_bg = o + torch.nan_to_num(t_bg, posinf=0.0)[..., None] * d
            # walls: back wall bright, side walls darker, a little darker where they meet the floor
            side = t_side < t_back
            wall_shade = torch.where(side, torch.full_like(u, _WALL_SIDE), torch.full_like(u, _WALL_BACK))
            wall_shade = torch.where(p_bg[..., 1] < S3_BASE_STRIP, wall_shade * 0.45, wall_shade)
            # floor: ambient + head light + spot light (shadowed per object below)
            to_l = light - p_bg
            dist_l = to_l.norm(dim=-1)
            l_dir = to_l / dist_l[..., None]
            spot_axis = (aim - light) / (aim - light).norm()
            cos_sp = _dot(-l_dir, spot_axis)
            lo_c, hi_c = S3_SPOT_CUTOFF[1], S3_SPOT_CUTOFF[0]
            spot = torch.clamp((cos_sp - lo_c) / (hi_c - lo_c), 0.0, 1.0)
            spot = spot * spot * (3 - 2 * spot)
            floor_key = _FLOOR_KEY * torch.clamp(l_dir[..., 1], min=0.0) * spot
            wall_dist = torch.minimum(S3_ROOM - p_bg[..., 2], S3_ROOM - p_bg[..., 0].abs()).clamp(min=0.0)
            floor_ao = 1.0 - 0.25 * torch.exp(-wall_dist / 0.25)
            floor_base = (_FLOOR_AMB + _FLOOR_HEAD * torch.clamp(-d[..., 1], min=0.0)) * floor_ao
            zero = torch.zeros_like(u)
            for ish in range(n_shape):
                t_obj, n_obj = _hit_object(o, d, ish, scales)  # [S, size, size]
                obj = t_obj < t_bg
                # object shading: ambient + head light + spot light (convex: no self shadow)
                p_obj = o + torch.nan_to_num(t_obj, posinf=0.0)[..., None] * d
                lo_dir = light - p_obj
                lo_dir = lo_dir / lo_dir.norm(dim=-1, keepdim=True)
                obj_shade = (_OBJ_AMB + _OBJ_HEAD * torch.clamp(-_dot(n_obj, d), min=0.0)
                             + _OBJ_KEY * torch.clamp(_dot(n_obj, lo_dir), min=0.0)).clamp(max=1.0)
                # shadow of the object on the floor: ray from the floor point to the light
                t_sh, _ = _hit_object(p_bg, l_dir, ish, scales)
                lit = ~(t_sh < dist_l)
                floor_shade = (floor_base + floor_key * lit).clamp(max=1.0)
                w = torch.stack([
                    (is_sky & ~obj).to(f64),
                    torch.where(is_wall & ~obj, wall_shade, zero),
                    torch.where(is_floor & ~obj, floor_shade, zero),
                    torch.where(obj, obj_shade, zero),
                ], dim=1)  # [S, 4, size, size]
                w = w.view(n_scale, 4, IMAGE_SIZE, _SS, IMAGE_SIZE, _SS).mean((3, 5))
                out[ish, :, io_] = w.reshape(n_scale, 4, -1)
        return out.reshape(n_shape * n_scale * n_or, 4, IMAGE_SIZE * IMAGE_SIZE)

    def render(self, factors: torch.Tensor) -> torch.Tensor:
        f = _check_factors(factors, self.factor_sizes, self.factor_names, "Shapes3D", self.device)
        out = torch.empty(f.shape[0], IMAGE_SIZE, IMAGE_SIZE, 3, dtype=torch.uint8, device=self.device)
        for i in range(0, f.shape[0], _CHUNK):  # bounded temporary memory for any batch size
            out[i : i + _CHUNK] = self._render(f[i : i + _CHUNK])
        return out

    def _render(self, f: torch.Tensor) -> torch.Tensor:
        n = f.shape[0]
        floor, wall, obj, scale, shape, orient = f.unbind(1)
        n_scale, n_or = self.factor_sizes[3], self.factor_sizes[5]
        cfg = (shape * n_scale + scale) * n_or + orient
        w = self._weights[cfg].float()  # [n, 4, P]
        colours = torch.stack([
            self._sky.expand(n, 3), self._hue_rgb[wall], self._hue_rgb[floor], self._hue_rgb[obj],
        ], dim=1)  # [n, 4, 3]
        img = torch.bmm(w.transpose(1, 2), colours)  # [n, P, 3]
        img = torch.clamp(img * 255.0 + 0.5, 0.0, 255.0).to(torch.uint8)
        return img.view(n, IMAGE_SIZE, IMAGE_SIZE, 3)


def renderer_for(name: str, device: str | torch.device = "cpu") -> DSpritesRenderer | Shapes3DRenderer:
    """The renderer of dataset ``name`` ("dsprites" or "shapes3d") on ``device``."""
    key = str(name).lower()
    if key == "dsprites":
        return DSpritesRenderer(device)
    if key == "shapes3d":
        return Shapes3DRenderer(device)
    raise VaesaeError(f"unknown dataset {name!r}: choose 'dsprites' or 'shapes3d'")


# ---------------------------------------------------------------------------------------
# Command line: benchmark and comparison figures
# ---------------------------------------------------------------------------------------

DEFAULT_REFERENCE = Path("/work/shared/reference")


def _grid_factors(sizes: tuple[int, ...], fixed: dict[int, int] | None = None) -> torch.Tensor:
    """All factor combinations (C order), with the columns in ``fixed`` held at one value."""
    fixed = fixed or {}
    axes = [torch.tensor([fixed[i]]) if i in fixed else torch.arange(s) for i, s in enumerate(sizes)]
    return torch.cartesian_prod(*axes).reshape(-1, len(sizes))


def _random_factors(sizes: tuple[int, ...], n: int, seed: int, fixed: dict[int, int] | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    f = torch.stack([torch.randint(0, s, (n,), generator=g) for s in sizes], dim=1)
    for col, v in (fixed or {}).items():
        f[:, col] = v
    return f


def _mean_image(renderer, factors: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    acc = torch.zeros(IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float64)
    for i in range(0, factors.shape[0], batch):
        acc += renderer.render(factors[i : i + batch].to(renderer.device)).double().sum(0).cpu()
    return acc / max(1, factors.shape[0])


def _montage(images, cols: int = 5, gap: int = 36, up: int = 3):
    """Images [n, 64, 64(, 3)] uint8 -> one RGB array with white gaps (like the reference grids)."""
    import numpy as np

    imgs = np.asarray(images)
    if imgs.ndim == 3:
        imgs = np.repeat(imgs[..., None], 3, axis=-1)
    n = imgs.shape[0]
    rows = (n + cols - 1) // cols
    cell = IMAGE_SIZE * up
    out = np.full((rows * cell + (rows - 1) * gap, cols * cell + (cols - 1) * gap, 3), 255, np.uint8)
    for i, im in enumerate(imgs):
        r, c = divmod(i, cols)
        big = im.repeat(up, 0).repeat(up, 1)
        out[r * (cell + gap) : r * (cell + gap) + cell, c * (cell + gap) : c * (cell + gap) + cell] = big
    return out


def _save_figure(fig, path: Path) -> None:
    from ..io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def _load_reference(path: Path):
    import numpy as np
    from PIL import Image

    if not path.is_file():
        raise VaesaeError(f"reference image {path} not found; pass --reference DIR (a folder with dsprites/ and 3dshapes/)")
    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except OSError as exc:
        raise VaesaeError(f"cannot read reference image {path}: {exc}") from None


def compare_dsprites(reference: Path, out: Path, device: str = "cpu") -> Path:
    """Reference dSprites images beside the stand-in rendered in the same layout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref_dir = reference / "dsprites"
    r = DSpritesRenderer(device)
    sizes = DSPRITES_FACTOR_SIZES
    samples = r.render(_random_factors(sizes, 25, seed=0).to(r.device)).cpu().numpy() * 255
    maps = [
        ("pixel_density_all.png", "pixel density, all images", _mean_image(r, _random_factors(sizes, 50_000, seed=1))),
        ("samples_posX_fixed_left.png", "pixel density, posX = 0", _mean_image(r, _grid_factors(sizes, {3: 0}))),
        ("samples_orientation_index5.png", "pixel density, orientation index 5", _mean_image(r, _grid_factors(sizes, {2: 5}))),
    ]
    fig, axes = plt.subplots(4, 2, figsize=(9, 18))
    axes[0, 0].imshow(_load_reference(ref_dir / "random_samples_grid.png"))
    axes[0, 0].set_title("real dSprites: random samples")
    axes[0, 1].imshow(_montage(samples.astype("uint8"), up=3))
    axes[0, 1].set_title("procedural stand-in: random samples (seed 0)")
    for row, (fname, label, m) in enumerate(maps, start=1):
        axes[row, 0].imshow(_load_reference(ref_dir / fname))
        axes[row, 0].set_title(f"real: {label}")
        # the reference maps use matplotlib's Greys_r colour map, scaled to the maximum
        axes[row, 1].imshow(m.numpy(), cmap="Greys_r", interpolation="nearest")
        axes[row, 1].set_title(f"stand-in: {label}")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("dSprites: real reference (left) vs procedural stand-in (right)", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path = out / "dsprites_standin_vs_reference.png"
    _save_figure(fig, path)
    plt.close(fig)
    return path


# Factors of the first 25 frames of reference/3dshapes/traversal.gif, read off the frames:
# orientation 0..14 of a green cube (scale 0) on a red floor before a blue wall, then the
# other three shapes at orientation 14, then the capsule's scales 1..7.
_TRAVERSAL = (
    [[0, 6, 3, 0, 0, k] for k in range(15)]
    + [[0, 6, 3, 0, sh, 14] for sh in (1, 2, 3)]
    + [[0, 6, 3, sc, 3, 14] for sc in range(1, 8)]
)


def compare_shapes3d(reference: Path, out: Path, device: str = "cpu") -> Path:
    """Reference Shapes3D images beside the stand-in rendered in the same layout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image, ImageSequence

    ref_dir = reference / "3dshapes"
    r = Shapes3DRenderer(device)
    sizes = SHAPES3D_FACTOR_SIZES
    gif = ref_dir / "traversal.gif"
    if not gif.is_file():
        raise VaesaeError(f"reference animation {gif} not found; pass --reference DIR")
    frames = [np.asarray(f.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)) for f in ImageSequence.Iterator(Image.open(gif))]
    trav_ref = _montage(np.stack(frames[:25]), up=3)
    trav = r.render(torch.tensor(_TRAVERSAL).to(r.device)).cpu().numpy()
    panels = [
        ("random_samples_grid.png", "random samples", r.render(_random_factors(sizes, 25, seed=0).to(r.device)).cpu().numpy()),
        ("samples_floor_hue_index0.png", "random samples, floor_hue = 0", r.render(_random_factors(sizes, 25, seed=1, fixed={0: 0}).to(r.device)).cpu().numpy()),
    ]
    fig, axes = plt.subplots(3, 2, figsize=(12, 18))
    for row, (fname, label, imgs) in enumerate(panels):
        axes[row, 0].imshow(_load_reference(ref_dir / fname))
        axes[row, 0].set_title(f"real Shapes3D: {label}\n(factors unknown)")
        axes[row, 1].imshow(_montage(imgs, up=3))
        axes[row, 1].set_title(f"procedural stand-in: {label}\n(factors drawn at random, seed {row})")
    axes[2, 0].imshow(trav_ref)
    axes[2, 0].set_title("real: traversal.gif frames 1-25\n(orientation 0..14, shapes, capsule scales 1..7)")
    axes[2, 1].imshow(_montage(trav, up=3))
    axes[2, 1].set_title("stand-in: the same factor values")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Shapes3D: real reference (left) vs procedural stand-in (right)", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path = out / "shapes3d_standin_vs_reference.png"
    _save_figure(fig, path)
    plt.close(fig)
    return path


def bench(devices: list[str] | None = None, batch: int = 512, repeats: int = 20) -> list[dict]:
    """Milliseconds per ``batch``-image render for both renderers on each device."""
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for dev in devices:
        for cls in (DSpritesRenderer, Shapes3DRenderer):
            t0 = time.perf_counter()
            r = cls(dev)
            init_s = time.perf_counter() - t0
            f = _random_factors(cls.factor_sizes, batch, seed=0).to(r.device)
            for _ in range(3):
                r.render(f)
            if r.device.type == "cuda":
                torch.cuda.synchronize(r.device)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                r.render(f)
                if r.device.type == "cuda":
                    torch.cuda.synchronize(r.device)
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            rows.append(dict(renderer=cls.__name__, device=str(r.device), init_s=init_s,
                             ms_median=times[len(times) // 2], ms_min=times[0], batch=batch,
                             threads=torch.get_num_threads()))
    return rows


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vaesae.data.render", description="Procedural dSprites / Shapes3D renderers.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="ms per 512-image batch on cpu (and cuda if available)")
    b.add_argument("--device", action="append", help="device to time (repeatable); default cpu and cuda if present")
    b.add_argument("--batch", type=int, default=512)
    b.add_argument("--threads", type=int, default=None, help="torch cpu threads (default: torch's own choice)")
    c = sub.add_parser("compare", help="write figures/data/*_standin_vs_reference.png")
    c.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="folder with dsprites/ and 3dshapes/ reference images")
    c.add_argument("--out", type=Path, default=None, help="output folder (default <repo>/figures/data)")
    c.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.cmd == "bench":
        if args.batch < 1:
            raise VaesaeError("--batch must be at least 1")
        if args.threads is not None:
            if args.threads < 1:
                raise VaesaeError("--threads must be at least 1")
            torch.set_num_threads(args.threads)
        for row in bench(args.device, batch=args.batch):
            print(f"{row['renderer']:<18} {row['device']:<7} init {row['init_s']:6.2f} s   "
                  f"{row['ms_median']:8.2f} ms per {row['batch']} images (median, min {row['ms_min']:.2f} ms; "
                  f"{row['threads']} cpu threads)")
    else:
        from ..io import repo_path

        out = repo_path(args.out if args.out is not None else "figures/data")
        for fn in (compare_dsprites, compare_shapes3d):
            print(fn(repo_path(args.reference), out, device=args.device))


if __name__ == "__main__":
    main(sys.argv[1:])
