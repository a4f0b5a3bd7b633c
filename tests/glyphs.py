"""A '4'-like glyph drawn as ink, and the comparisons the preprocessing tests make with it
(tests/unit/test_preprocessing*.py)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from handler.preprocessing import decode_image, to_mnist
from tests.images import encode


def ink_mask(
    size: tuple[int, int] = (120, 90), offset: tuple[int, int] = (0, 0), weight: float = 1 / 9
) -> np.ndarray:
    """A '4'-like glyph (asymmetric, so rotations and flips are detectable) as ink in [0, 1];
    `weight` is the stroke width as a fraction of the glyph's size."""
    width, height = size
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    ox, oy = offset
    x0, y0 = width * 0.3 + ox, height * 0.15 + oy
    s = min(width, height) * 0.6
    stroke = max(2, int(s * weight))
    corner = [(x0 + s * 0.45, y0), (x0, y0 + s * 0.65), (x0 + s * 0.7, y0 + s * 0.65)]
    draw.line(corner, 255, stroke)
    draw.line([(x0 + s * 0.5, y0 + s * 0.25), (x0 + s * 0.5, y0 + s * 1.05)], 255, stroke)
    return np.asarray(canvas, dtype=np.float32) / 255.0



def dark_on_light(ink: np.ndarray, paper: int = 235, pen: int = 30) -> Image.Image:
    return Image.fromarray((paper + (pen - paper) * ink).round().astype(np.uint8), "L")


def from_file(image: Image.Image, fmt: str = "PNG", **params) -> np.ndarray:
    """What a user gets for this picture uploaded as a `fmt` file: encode, decode, to_mnist."""
    return to_mnist(decode_image(encode(image, fmt, **params)))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Pixel difference of two 28x28 results, forgiving a translation of at most one pixel.

    Centring rounds the centre of mass to whole pixels (as MNIST did), so a centre that sits
    near x.5 may land one pixel either way after a lossy re-encoding; the shape must still match.
    """
    best = float("inf")
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.roll(np.roll(a, dy, axis=0), dx, axis=1)
            best = min(best, float(np.abs(shifted - b).mean()))
    return best


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    mass = pixels.sum()
    rows, cols = np.arange(pixels.shape[0]), np.arange(pixels.shape[1])
    return float(pixels.sum(1) @ rows / mass), float(pixels.sum(0) @ cols / mass)


def ink_extent(pixels: np.ndarray, level: float = 0.05) -> tuple[int, int]:
    rows = np.flatnonzero((pixels > level).any(axis=1))
    cols = np.flatnonzero((pixels > level).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


# Same glyph, different encodings: close to the reference. Lossy JPEG gets a wider tolerance.
CLOSE = 0.02
CLOSE_LOSSY = 0.04
