"""Present a digit the way clients upload it: scans, phone photos, pen-tool drawings, dark screens.

Every function takes an ink mask (a 2-D array, 1 = ink) or an MNIST digit and returns the bytes
of an upload (PNG or JPEG). The digit is off-centre, at any size, on paper with grain, lighting
gradients and tints, or on a dark board, and compressed the way cameras and apps do. This module
is the one home of that presentation: the realistic HTTP/offline tests (MNIST digits as photos)
and the real-world set (`samples.realworld`, handwriting fonts and pen strokes) both use it.

`present(ink, kind, rng)` picks one of `PRESENTATIONS`:
- `scan`: a flatbed scan of paper, clean and evenly lit, dark or blue ink;
- `photo`: a phone photo: grain, blotches, a lighting gradient, defocus, JPEG;
- `pen`: a pen-tool drawing: flat white (or transparent) canvas, crisp coloured ink, PNG;
- `dark`: light on dark: a chalkboard or a dark-mode drawing app;
- `lowres`: a small, low-resolution scan (digit 7-14 px tall), blurred, often JPEG.

Everything is deterministic for a given `rng` state. Nothing here runs at import time.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from handler.normalization import IMAGE_SIZE

PRESENTATIONS = ("scan", "photo", "pen", "dark", "lowres")

# Ranges of the MNIST-as-photo rendering (`render_realistic`).
CANVAS_PX = (64, 400)  # each side of the canvas
DIGIT_FRACTION = (0.35, 0.8)  # digit height as a fraction of the shorter canvas side
PAPER_TONE = (180, 255)
INK_TONE = (0, 90)
JPEG_QUALITY = (60, 95)
JPEG_SHARE = 0.6  # the rest is PNG
RGB_SHARE = 0.5  # the rest is single-channel L

# Ink colours as multipliers of the gray level: black, blue biro, red pen.
_INK_TINTS = ([1.0, 1.0, 1.0], [0.6, 0.7, 1.6], [1.5, 0.6, 0.6])


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
    full = _place(crop_to_ink(digit28), width, height, DIGIT_FRACTION, rng)
    image = _ink_on_paper(full, _paper(width, height, rng), rng)
    return _encode(image, rng, JPEG_SHARE, JPEG_QUALITY)


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


def render_tight_crop(digit28: np.ndarray, rng: np.random.Generator) -> bytes:
    """An MNIST digit as a user's tight crop: dark ink on light paper, 0-3 % margin, 4-12x scale.

    The ink then covers a third or more of the picture and may touch the border, which is what
    defeats background estimates that assume paper dominates.
    """
    crop = crop_to_ink(digit28)
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


def present(ink: np.ndarray, kind: str, rng: np.random.Generator) -> bytes:
    """The upload bytes of an ink mask (2-D, 1 = ink, any size) presented as `kind`.

    `kind` is one of `PRESENTATIONS`; see the module docstring for what each one looks like.
    """
    try:
        presenter = _PRESENTERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown presentation {kind!r}; expected one of {PRESENTATIONS}"
        ) from None
    crop = crop_to_ink(np.clip(np.asarray(ink, dtype=np.float32), 0.0, 1.0))
    return presenter(crop, rng)


def crop_to_ink(mask: np.ndarray) -> np.ndarray:
    """`mask` cropped to the bounding box of its non-zero pixels (unchanged when it has none)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return mask
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


# --- presentations --------------------------------------------------------------------------


def _scan(crop: np.ndarray, rng: np.random.Generator) -> bytes:
    """Flatbed scan: even white paper, faint grain, black or blue ink, light scanner blur."""
    width, height = (int(v) for v in rng.integers(80, 321, size=2))
    full = _place(crop, width, height, (0.4, 0.85), rng)
    full = _blur(full, rng.uniform(0.0, 0.8))
    paper = rng.uniform(225, 255) + rng.normal(0.0, rng.uniform(0.5, 2.5), size=(height, width))
    image = _ink_on_paper(full, np.clip(paper, 0, 255).astype(np.float32), rng, ink_tone=(0, 70))
    return _encode(image, rng, jpeg_share=0.4, quality=(85, 95))


def _photo(crop: np.ndarray, rng: np.random.Generator) -> bytes:
    """Phone photo of paper: grain, blotches, lighting gradient, defocus, sensor noise, JPEG."""
    width, height = (int(v) for v in rng.integers(120, 481, size=2))
    full = _place(crop, width, height, DIGIT_FRACTION, rng)
    full = _blur(full, rng.uniform(0.3, 1.6) * min(width, height) / 200)
    image = _ink_on_paper(full, _paper(width, height, rng), rng)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, rng.uniform(1.0, 5.0), size=pixels.shape)  # sensor noise
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), image.mode)
    return _encode(image, rng, jpeg_share=1.0, quality=JPEG_QUALITY)


def _pen(crop: np.ndarray, rng: np.random.Generator) -> bytes:
    """Pen-tool drawing: flat white canvas (or transparent), crisp ink of one colour, PNG."""
    side = int(rng.integers(120, 361))  # drawing pads of web forms and apps
    width = int(side * rng.uniform(0.8, 1.3))
    full = _place(crop, width, side, (0.5, 0.9), rng)
    colour = np.array(_dark_colour(rng), dtype=np.float32)
    if rng.random() < 0.3:  # transparent canvas: the ink is only in the alpha channel
        rgba = np.zeros((side, width, 4), dtype=np.uint8)
        rgba[..., :3] = colour.astype(np.uint8)
        rgba[..., 3] = np.round(full * 255).astype(np.uint8)
        image = Image.fromarray(rgba, "RGBA")
    else:
        white = np.full(3, 255.0, dtype=np.float32)
        pixels = white * (1.0 - full[..., None]) + colour * full[..., None]
        image = Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")
    return _encode(image, rng, jpeg_share=0.0, quality=(95, 95))


def _dark(crop: np.ndarray, rng: np.random.Generator) -> bytes:
    """Light ink on a dark ground: a chalkboard (textured chalk) or a dark-mode drawing app."""
    width, height = (int(v) for v in rng.integers(90, 401, size=2))
    full = _place(crop, width, height, (0.4, 0.85), rng)
    if rng.random() < 0.5:  # chalkboard: green-black board, blotchy; chalk is broken by grain
        board = _paper(width, height, rng) * rng.uniform(0.12, 0.3)
        chalk = full * np.clip(rng.normal(0.85, 0.2, size=full.shape), 0.3, 1.0)
        gray = board * (1.0 - chalk) + rng.uniform(190, 250) * chalk
        tint = np.array([rng.uniform(0.7, 0.9), 1.0, rng.uniform(0.75, 0.95)], dtype=np.float32)
        pixels = gray[..., None] * (tint * (1.0 - full[..., None]) + full[..., None])
        jpeg_share = 0.7
    else:  # dark-mode app: flat near-black canvas, white or coloured ink
        ground = rng.uniform(0, 45)
        colour = rng.choice([[255, 255, 255], [250, 235, 120], [130, 220, 255], [200, 255, 170]])
        colour = np.asarray(colour, dtype=np.float32) * rng.uniform(0.8, 1.0)
        pixels = ground * (1.0 - full[..., None]) + colour * full[..., None]
        jpeg_share = 0.2
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return _encode(image, rng, jpeg_share=jpeg_share, quality=(70, 95))


def _lowres(crop: np.ndarray, rng: np.random.Generator) -> bytes:
    """Small low-resolution scan: a 7-14 px tall digit, a few pixels of margin, blur, JPEG."""
    digit_h = int(rng.integers(7, 15))
    scale = digit_h / crop.shape[0]
    digit_w = max(2, round(crop.shape[1] * scale))
    small = np.asarray(
        Image.fromarray(crop.astype(np.float32), "F").resize(
            (digit_w, digit_h), Image.Resampling.BOX
        )
    )
    top, bottom, left, right = (int(v) for v in rng.integers(2, 9, size=4))
    full = np.pad(np.clip(small, 0.0, 1.0), ((top, bottom), (left, right)))
    full = _blur(full, rng.uniform(0.0, 0.7))  # the scanner's optics, at the scan's resolution
    paper = rng.uniform(190, 250) + rng.normal(0.0, rng.uniform(1.0, 6.0), size=full.shape)
    gray = paper * (1.0 - full) + rng.uniform(10, 90) * full
    image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L")
    return _encode(image, rng, jpeg_share=0.6, quality=(35, 85))


_PRESENTERS = {
    "scan": _scan,
    "photo": _photo,
    "pen": _pen,
    "dark": _dark,
    "lowres": _lowres,
}


# --- shared steps ---------------------------------------------------------------------------


def _place(
    crop: np.ndarray,
    width: int,
    height: int,
    fraction: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """A `(height, width)` float mask with `crop` scaled and placed off-centre with margins.

    The digit's height is `fraction` of the shorter canvas side; a digit too wide for the canvas
    is fitted by its width instead. `crop` is uint8 (0-255) or float (0-1).
    """
    target_h = max(8, int(rng.uniform(*fraction) * min(width, height)))
    target_w = max(2, round(crop.shape[1] * target_h / crop.shape[0]))
    if target_w > width - 4:  # wide digits on narrow canvases: fit the width instead
        target_w = width - 4
        target_h = max(2, round(crop.shape[0] * target_w / crop.shape[1]))
    if crop.dtype == np.uint8:
        resized = Image.fromarray(crop).resize((target_w, target_h), Image.Resampling.BICUBIC)
        mask = np.clip(np.asarray(resized, dtype=np.float32) / 255.0, 0.0, 1.0)
    else:
        # BOX when shrinking keeps thin strokes as grey instead of dropping them between taps.
        method = Image.Resampling.BOX if target_h < crop.shape[0] else Image.Resampling.BICUBIC
        resized = Image.fromarray(crop.astype(np.float32), "F").resize((target_w, target_h), method)
        mask = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)

    # Off-centre placement: anywhere that keeps a margin of at least 2 px on every side.
    top = int(rng.integers(2, max(3, height - target_h - 1)))
    left = int(rng.integers(2, max(3, width - target_w - 1)))
    full = np.zeros((height, width), dtype=np.float32)
    full[top : top + target_h, left : left + target_w] = mask[: height - top, : width - left]
    return full


def _ink_on_paper(
    full: np.ndarray,
    paper: np.ndarray,
    rng: np.random.Generator,
    ink_tone: tuple[float, float] = INK_TONE,
) -> Image.Image:
    """Dark ink absorbing light on top of the paper texture; RGB with tints or plain L."""
    gray = paper * (1.0 - full) + rng.uniform(*ink_tone) * full
    if rng.random() < RGB_SHARE:
        paper_tint = rng.uniform(0.9, 1.05, size=3)  # cream, bluish or greyish paper
        ink_tint = rng.choice(_INK_TINTS)
        tint = paper_tint * (1.0 - full[..., None]) + np.asarray(ink_tint) * full[..., None]
        pixels = np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, "RGB")
    return Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L")


def _encode(
    image: Image.Image, rng: np.random.Generator, jpeg_share: float, quality: tuple[int, int]
) -> bytes:
    """JPEG (quality drawn from `quality`) with probability `jpeg_share`, else PNG."""
    buffer = io.BytesIO()
    if rng.random() < jpeg_share:
        image.save(buffer, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


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


def _blur(mask: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a float mask (radius in px; below 0.2 px it is left alone)."""
    if radius < 0.2:
        return mask
    # Separable Gaussian in numpy: Pillow's GaussianBlur has no float ("F") mode.
    offsets = np.arange(-int(3 * radius + 1), int(3 * radius + 1) + 1)
    kernel = np.exp(-0.5 * (offsets / radius) ** 2)
    kernel /= kernel.sum()
    pad = len(offsets) // 2
    padded = np.pad(mask, pad)  # masks are 0 outside the ink
    rows = sum(
        k * padded[:, pad + o : pad + o + mask.shape[1]]
        for k, o in zip(kernel, offsets, strict=True)
    )
    return sum(
        k * rows[pad + o : pad + o + mask.shape[0]] for k, o in zip(kernel, offsets, strict=True)
    ).astype(np.float32)


def _dark_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A pen-tool ink colour: mostly black, else a dark blue, red, green or purple."""
    palette = ((0, 0, 0), (20, 40, 160), (170, 20, 30), (20, 110, 40), (90, 30, 120))
    weights = (0.55, 0.2, 0.1, 0.08, 0.07)
    return palette[int(rng.choice(len(palette), p=weights))]
