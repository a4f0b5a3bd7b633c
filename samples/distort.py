"""Geometric variation of an ink mask the way hands vary: slant, rotation, width, wobble.

Masks are float32 2-D arrays with 1 = ink at a working resolution of about 100 px per digit
height. `warp` applies an affine map (slant, rotation, aspect) and an elastic displacement field
in one bilinear resampling; `change_width` thickens or thins the strokes. Both are numpy/Pillow
only and deterministic for a given `rng` state.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter


def warp(
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    slant_deg: float = 0.0,
    rotate_deg: float = 0.0,
    aspect: float = 1.0,
    elastic: float = 0.0,
    elastic_grid: int = 4,
) -> np.ndarray:
    """`mask` slanted, rotated, stretched and elastically distorted; cropped to its ink.

    `slant_deg` > 0 leans the top to the right (like right-handed writing); `aspect` scales the
    width; `elastic` is the displacement's standard deviation as a fraction of the ink height,
    smooth over an `elastic_grid` x `elastic_grid` lattice (a few bends per digit, not noise).
    """
    ink_h = max(mask.shape[0], 1)
    pad = int(0.35 * max(mask.shape)) + 4
    src = np.pad(mask.astype(np.float32, copy=False), pad)
    h, w = src.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = yy - cy, xx - cx

    # Output -> source: undo rotation, then the slant (a shear about the centre), then aspect.
    a = math.radians(rotate_deg)
    cos, sin = math.cos(a), math.sin(a)
    yr, xr = cos * y - sin * x, sin * y + cos * x
    xs = (xr + math.tan(math.radians(slant_deg)) * yr) / aspect
    ys = yr
    if elastic > 0:
        dy = _smooth_field(rng, elastic_grid, (h, w)) * (elastic * ink_h)
        dx = _smooth_field(rng, elastic_grid, (h, w)) * (elastic * ink_h)
        ys, xs = ys + dy, xs + dx
    out = bilinear(src, ys + cy, xs + cx)
    return _crop(out)


def change_width(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Thicken (`pixels` > 0) or thin (< 0) the strokes by about `pixels` px on each side.

    A morphological dilation or erosion with a square of side `2 * |pixels| + 1` (Pillow's
    max/min filters), so a stroke of width s becomes about s + 2 * pixels.
    """
    if pixels == 0:
        return mask
    image = Image.fromarray(np.round(np.clip(mask, 0, 1) * 255).astype(np.uint8), "L")
    image = image.filter(
        ImageFilter.MaxFilter(2 * pixels + 1)
        if pixels > 0
        else ImageFilter.MinFilter(2 * -pixels + 1)
    )
    return np.asarray(image, dtype=np.float32) / 255.0


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in px: ink area over half the ink boundary length."""
    ink = mask > 0.5
    area = float(ink.sum())
    edges = float((ink[1:] != ink[:-1]).sum() + (ink[:, 1:] != ink[:, :-1]).sum())
    return 2.0 * area / edges if edges else 0.0


def bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample `image` at float coordinates (row `ys`, column `xs`); zero outside it."""
    h, w = image.shape
    padded = np.pad(image, 1)
    ys = np.clip(ys + 1, 0, h + 0.999)
    xs = np.clip(xs + 1, 0, w + 0.999)
    y0, x0 = np.floor(ys).astype(np.intp), np.floor(xs).astype(np.intp)
    y1, x1 = np.minimum(y0 + 1, h + 1), np.minimum(x0 + 1, w + 1)
    fy, fx = ys - y0, xs - x0
    top = padded[y0, x0] * (1 - fx) + padded[y0, x1] * fx
    bottom = padded[y1, x0] * (1 - fx) + padded[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _smooth_field(rng: np.random.Generator, grid: int, shape: tuple[int, int]) -> np.ndarray:
    """A smooth random field of unit-ish amplitude: a grid x grid lattice, bicubic-upsampled."""
    lattice = rng.normal(0.0, 1.0, size=(grid, grid)).astype(np.float32)
    field = Image.fromarray(lattice, "F").resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.asarray(field, dtype=np.float32)


def _crop(mask: np.ndarray, floor: float = 0.02) -> np.ndarray:
    """Crop to the pixels above `floor` (resampling leaves faint dust at the edges)."""
    rows = np.flatnonzero((mask > floor).any(axis=1))
    cols = np.flatnonzero((mask > floor).any(axis=0))
    if len(rows) == 0:
        return mask
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
