"""Render MNIST test digits the way people actually send them, and a naive baseline to compare.

Users photograph or scan dark ink on light paper: the digit is off-centre, at any size, on paper
with grain, a lighting gradient and maybe a tint, then JPEG-compressed. `render_realistic` makes
such an upload from an MNIST test digit (so its label is known), and `resize_only_preprocess` is
the naive pipeline (grayscale + resize, no inversion, no centring) that such uploads defeat.

Used by the offline accuracy test and by the HTTP accuracy test against a real TorchServe; the
MNIST digits come from conftest's `mnist_test`. Nothing here runs at import time.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from handler.normalization import IMAGE_SIZE, normalize

# Rendering ranges (the task's definition of "realistic").
CANVAS_PX = (64, 400)  # each side of the canvas
DIGIT_FRACTION = (0.35, 0.8)  # digit height as a fraction of the shorter canvas side
PAPER_TONE = (180, 255)
INK_TONE = (0, 90)
JPEG_QUALITY = (60, 95)
JPEG_SHARE = 0.6  # the rest is PNG
RGB_SHARE = 0.5  # the rest is single-channel L


def render_realistic(digit28: np.ndarray, rng: np.random.Generator) -> bytes:
    """Encode one MNIST digit (28x28 uint8, white on black) as a realistic upload.

    Dark ink on light paper (tone 180-255) with grain and, half the time, a lighting gradient;
    a 64-400 px canvas; the digit scaled to 35-80 % of the shorter side and placed off-centre
    with margins; RGB with tinted paper and coloured ink or plain L; JPEG (quality 60-95) or PNG.
    Deterministic for a given `rng` state.
    """
    if digit28.shape != (IMAGE_SIZE, IMAGE_SIZE) or digit28.dtype != np.uint8:
        raise ValueError(f"expected a 28x28 uint8 MNIST digit, got {digit28.shape} {digit28.dtype}")
    width, height = (int(v) for v in rng.integers(CANVAS_PX[0], CANVAS_PX[1] + 1, size=2))

    # The digit's ink mask at its rendered size (crop to the ink first so the size means ink).
    rows = np.flatnonzero(digit28.any(axis=1))
    cols = np.flatnonzero(digit28.any(axis=0))
    crop = digit28[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    target_h = max(8, int(rng.uniform(*DIGIT_FRACTION) * min(width, height)))
    target_w = max(2, round(crop.shape[1] * target_h / crop.shape[0]))
    if target_w > width - 4:  # wide digits on narrow canvases: fit the width instead
        target_w = width - 4
        target_h = max(2, round(crop.shape[0] * target_w / crop.shape[1]))
    mask = Image.fromarray(crop).resize((target_w, target_h), Image.Resampling.BICUBIC)
    mask = np.clip(np.asarray(mask, dtype=np.float32) / 255.0, 0.0, 1.0)

    # Off-centre placement: anywhere that keeps a margin of at least 2 px on every side.
    top = int(rng.integers(2, max(3, height - target_h - 1)))
    left = int(rng.integers(2, max(3, width - target_w - 1)))
    full = np.zeros((height, width), dtype=np.float32)
    full[top : top + target_h, left : left + target_w] = mask[: height - top, : width - left]

    paper = _paper(width, height, rng)
    ink_tone = rng.uniform(*INK_TONE)
    gray = paper * (1.0 - full) + ink_tone * full  # ink absorbs light on top of the paper texture

    if rng.random() < RGB_SHARE:
        paper_tint = rng.uniform(0.9, 1.05, size=3)  # cream, bluish or greyish paper
        ink_tint = rng.choice([[1.0, 1.0, 1.0], [0.6, 0.7, 1.6], [1.5, 0.6, 0.6]])  # black/blue/red
        tint = paper_tint * (1.0 - full[..., None]) + np.asarray(ink_tint) * full[..., None]
        pixels = np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels, "RGB")
    else:
        image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L")

    buffer = io.BytesIO()
    if rng.random() < JPEG_SHARE:
        quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def render_realistic_set(
    images: np.ndarray, labels: np.ndarray, count: int, seed: int
) -> tuple[list[bytes], np.ndarray]:
    """`count` distinct MNIST test digits picked and rendered with one seed: (uploads, labels).

    The same (count, seed) always gives the same bytes, so offline and HTTP accuracy tests
    measure the same uploads.
    """
    if not 0 < count <= len(images):
        raise ValueError(f"count must be in 1..{len(images)}, got {count}")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(images), size=count, replace=False))
    uploads = [render_realistic(images[i], rng) for i in picked]
    return uploads, np.asarray(labels[picked], dtype=np.int64)


def _paper(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Paper: a base tone, fine grain, soft blotches and (half the time) a lighting gradient."""
    tone = rng.uniform(*PAPER_TONE)
    grain = rng.normal(0.0, rng.uniform(1.0, 6.0), size=(height, width))
    blotch_grid = rng.normal(0.0, rng.uniform(0.0, 4.0), size=(4, 4)).astype(np.float32)
    blotches = np.asarray(
        Image.fromarray(blotch_grid, "F").resize((width, height), Image.Resampling.BICUBIC)
    )
    paper = tone + grain + blotches
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:height, 0:width]
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height).astype(np.float32)
        paper = paper + rng.uniform(10.0, 35.0) * (ramp - ramp.mean())  # shadow across the sheet
    return np.clip(paper, 0.0, 255.0).astype(np.float32)


def render_tight_crop(digit28: np.ndarray, rng: np.random.Generator) -> bytes:
    """An MNIST digit as a user's tight crop: dark ink on light paper, 0-3 % margin, 4-12x scale.

    The ink then covers a third or more of the picture and may touch the border, which is what
    defeats background estimates that assume paper dominates.
    """
    rows = np.flatnonzero(digit28.any(axis=1))
    cols = np.flatnonzero(digit28.any(axis=0))
    crop = digit28[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = int(rng.integers(4, 13))
    ink = Image.fromarray(crop).resize(
        (crop.shape[1] * scale, crop.shape[0] * scale), Image.Resampling.BICUBIC
    )
    margin = int(rng.uniform(0.0, 0.03) * max(ink.size))
    mask = np.pad(np.asarray(ink, dtype=np.float32) / 255.0, margin)
    paper = rng.uniform(*PAPER_TONE) + rng.normal(0.0, 3.0, size=mask.shape)
    gray = np.clip(paper * (1.0 - mask) + rng.uniform(*INK_TONE) * mask, 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(gray.astype(np.uint8), "L").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def resize_only_preprocess(data: bytes) -> np.ndarray:
    """The naive baseline: grayscale, squash to 28x28, normalise. No inversion, crop or centring."""
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return normalize(np.asarray(small, dtype=np.uint8))[np.newaxis]

