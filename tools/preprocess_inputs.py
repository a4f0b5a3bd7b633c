"""The uploads the preprocessing benchmark times and scores, by input kind.

A 28x28 MNIST test PNG (MNIST's form: passes through), the same digit inverted (every step), a
300x300 RGB JPEG, a 4000x3000 photo-like JPEG, and sets of MNIST test digits as uploads of
64-400 px: scans (dark ink on paper, PNG and JPEG, samples/render.py) and drawings (light on
dark, and dark ink on a transparent sheet). Without MNIST on disk a synthetic digit stands in
for the 28x28 kinds and the sets are left out.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from handler.normalization import IMAGE_SIZE

PNG_MAGIC = b"\x89PNG"


@dataclass
class Kind:
    """One input kind: its uploads (timed in turn) and their labels where known."""

    uploads: list[bytes]
    labels: np.ndarray | None = None
    max_side: int = field(init=False)  # the longest side among the uploads, in pixels

    def __post_init__(self) -> None:
        self.max_side = max(max(Image.open(io.BytesIO(data)).size) for data in self.uploads)


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _synthetic_digit(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A photo-like 'dark seven on grey paper' with a lighting gradient and sensor noise."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paper = 205 + 30 * (xx / width) - 15 * (yy / height)
    paper += rng.normal(0, 6, size=(height, width)).astype(np.float32)
    canvas = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8), mode="L")
    draw = ImageDraw.Draw(canvas)
    s = min(width, height)
    x0, y0 = width * 0.35, height * 0.25
    stroke = max(1, s // 25)
    draw.line([(x0, y0), (x0 + s * 0.3, y0), (x0 + s * 0.12, y0 + s * 0.5)], fill=40, width=stroke)
    return canvas


def _drawing(digit28: np.ndarray, rng: np.random.Generator, transparent: bool) -> bytes:
    """A digit drawn in an app, 64-400 px: light strokes on a dark canvas, or dark strokes on a
    transparent sheet (the ink only in the alpha channel, as drawing apps export it)."""
    rows, cols = np.flatnonzero(digit28.any(axis=1)), np.flatnonzero(digit28.any(axis=0))
    crop = digit28[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = int(rng.integers(64, 401))
    height = max(8, int(rng.uniform(0.4, 0.8) * side))
    width = max(2, min(side - 4, round(crop.shape[1] * height / crop.shape[0])))
    strokes = Image.fromarray(crop).resize((width, height), Image.Resampling.BICUBIC)
    ink = np.zeros((side, side), dtype=np.uint8)
    top, left = int(rng.integers(2, side - height - 1)), int(rng.integers(2, side - width - 1))
    ink[top : top + height, left : left + width] = np.asarray(strokes)
    if transparent:
        rgba = np.zeros((side, side, 4), dtype=np.uint8)
        rgba[..., :3] = rng.integers(0, 80, size=3)  # the pen's colour, where it is opaque
        rgba[..., 3] = ink
        return _encode(Image.fromarray(rgba, "RGBA"), "PNG")
    background, pen = rng.uniform(0, 60), rng.uniform(180, 255)
    return _encode(Image.fromarray((background + (pen - background) * (ink / 255.0)).astype(
        np.uint8), "L"), "PNG")


def load_mnist(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """MNIST's test digits and labels from `mnist_dir`, or None (never downloads)."""
    from train.mnist import MnistError, load_test_digits

    try:
        return load_test_digits(mnist_dir)
    except MnistError:
        return None


def bench_inputs(mnist_dir: Path, per_set: int, seed: int = 0) -> dict[str, Kind]:
    """The input kinds; sets of `per_set` uploads made from MNIST test digits (a synthetic digit
    stands in for the 28x28 kinds, and the sets are left out, when MNIST is not on disk)."""
    from samples.render import render_realistic

    rng = np.random.default_rng(seed)
    mnist = load_mnist(mnist_dir)
    digit28 = (255 - np.asarray(_synthetic_digit((IMAGE_SIZE, IMAGE_SIZE), rng))
               if mnist is None else mnist[0][0])  # fmt: skip
    kinds = {
        "png_28x28_mnist": Kind([_encode(Image.fromarray(digit28, "L"), "PNG")]),
        "png_28x28_inverted": Kind([_encode(Image.fromarray(255 - digit28, "L"), "PNG")]),
        "jpeg_300x300_rgb": Kind(
            [_encode(_synthetic_digit((300, 300), rng).convert("RGB"), "JPEG", quality=90)]
        ),
        "jpeg_4000x3000_photo": Kind(
            [_encode(_synthetic_digit((4000, 3000), rng).convert("RGB"), "JPEG", quality=90)]
        ),
    }
    if mnist is None:
        return kinds
    images, labels = mnist
    picked = rng.choice(len(images), size=min(len(images), 4 * per_set), replace=False)
    scans: dict[str, list] = {"png": [], "jpeg": []}
    for index in picked:  # render_realistic picks the format: sort until both sets are full
        data = render_realistic(images[index], rng)
        bucket = scans["png" if data.startswith(PNG_MAGIC) else "jpeg"]
        if len(bucket) < per_set:
            bucket.append((data, labels[index]))
    drawings = picked[:per_set]
    for fmt, rows in scans.items():
        kinds[f"scan_{fmt}_dark_on_light"] = Kind(
            [d for d, _ in rows], np.asarray([y for _, y in rows])
        )
    kinds["drawing_png_light_on_dark"] = Kind(
        [_drawing(images[i], rng, transparent=False) for i in drawings], labels[drawings]
    )
    kinds["drawing_png_transparent"] = Kind(
        [_drawing(images[i], rng, transparent=True) for i in drawings], labels[drawings]
    )
    return kinds
