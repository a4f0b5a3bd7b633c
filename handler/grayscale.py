"""Any Pillow mode -> one grayscale numpy array: palettes, transparency, 16-bit and float images,
and the early area reduction of large inputs (a step of `handler.preprocessing`)."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from handler.histograms import histogram, median
from handler.limits import WORKING_SIZE


def to_gray(image: Image.Image) -> np.ndarray:
    """Grayscale pixels, transparency composited, large inputs area-reduced.

    uint8 (0-255) for the 8-bit images nearly everyone sends, so that they pass through without
    a rounding step; float32 in [0, 1] when compositing or a high bit depth made finer values.
    """
    mode = image.mode
    if mode in ("P", "PA") or (mode in ("1", "L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")  # the palette may carry per-entry alpha (tRNS)
    elif mode in ("La", "RGBa"):
        image = image.convert("LA" if mode == "La" else "RGBA")  # un-premultiply
    elif mode == "1":
        image = image.convert("L")
    elif mode == "LAB":
        image = image.getchannel("L")  # lightness is already a grayscale channel
    elif mode.startswith("I;16"):
        image = image.convert("I")  # the same values as int32, which numpy reads natively
    elif mode not in ("L", "RGB", "RGBA", "LA", "I", "F"):
        image = image.convert("RGB")  # CMYK, YCbCr, HSV, RGBX, ...: Pillow's colour conversion

    pixels = np.asarray(image)
    mode = image.mode
    if mode in ("I", "F"):
        return _stretch_range(pixels.astype(np.float32))
    if mode == "L":
        return _reduce(pixels)
    if mode == "RGB":
        return _reduce(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY))
    if mode == "RGBA":
        gray, alpha = cv2.cvtColor(pixels, cv2.COLOR_RGBA2GRAY), pixels[..., 3]
    else:  # LA
        gray, alpha = cv2.split(pixels)
    return _composite(_reduce(gray), _reduce(np.ascontiguousarray(alpha)))


def decoded_to_gray(pixels: np.ndarray) -> np.ndarray:
    """`to_gray` of the uint8 pixels OpenCV decodes (`handler.image_decoding.decode`):
    grayscale, BGR or BGRA, with the same results as the Pillow image of the same file."""
    if pixels.ndim == 2:
        return _reduce(pixels)
    if pixels.shape[2] == 3:
        return _reduce(cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY))
    gray, alpha = cv2.cvtColor(pixels, cv2.COLOR_BGRA2GRAY), pixels[..., 3]
    return _composite(_reduce(gray), _reduce(np.ascontiguousarray(alpha)))


def _reduce(pixels: np.ndarray) -> np.ndarray:
    """Area-average a large image by an integer factor so its longer side is < 2*WORKING_SIZE."""
    factor = max(pixels.shape) // WORKING_SIZE
    if factor < 2:
        return pixels
    h, w = pixels.shape
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _stretch_range(values: np.ndarray) -> np.ndarray:
    """16-bit/32-bit/float pixels -> [0, 1] by their actual range (not by clipping at 255)."""
    # float64: float32 extremes (+-3.4e38) overflow to inf in their range, and the NaNs that
    # follow would leave no ink to find.
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    stretched = cv2.normalize(_reduce(values), None, 0.0, 1.0, cv2.NORM_MINMAX)  # flat -> zeros
    return stretched.astype(np.float32)


def _composite(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten transparency onto the background colour the picture implies.

    A drawing of ink on a transparent sheet stores the ink as its only opaque pixels; whatever
    colour its transparent pixels happen to hold (often black) is meaningless. So when opaque
    pixels cover less than half the image they are the ink, and the background is the opposite
    of their brightness (black ink -> white paper, white ink -> black). When they cover most of
    it they are the paper itself, and transparent margins take the paper's (median) colour.
    """
    if cv2.minMaxLoc(alpha)[0] >= 255:
        return gray
    coverage = cv2.mean(alpha)[0] / 255
    if coverage == 0.0:
        return np.zeros(gray.shape, dtype=np.float32)
    gray_f = gray.astype(np.float32) * (1 / 255)
    weight = alpha.astype(np.float32) * (1 / 255)
    if coverage < 0.5:
        ink_brightness = float(gray_f.ravel() @ weight.ravel()) / float(weight.sum())
        background = 1.0 if ink_brightness < 0.5 else 0.0
    else:
        opaque = cv2.compare(alpha, 127, cv2.CMP_GT)  # alpha >= 0.5
        background = median(histogram(gray, opaque)) / 255
    return gray_f * weight + background * (1.0 - weight)
