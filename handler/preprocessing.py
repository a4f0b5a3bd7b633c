"""Turn whatever image a person sends into an MNIST-like model input.

This is the single source of truth for preprocessing: the TorchServe handler, the batch job and
the tests all call `preprocess` (or `decode_image` + `to_mnist`). It ships inside the .mar, so it
imports only numpy, Pillow, OpenCV and the handler package -- never torch or scipy. Pillow
decodes (it holds the format allow-list and reads every mode); OpenCV does the pixel work.

The steps reproduce how MNIST itself was made (LeCun et al.): the ink of a digit is cropped to its
bounding box, scaled (aspect preserved, anti-aliased) so that its longer side is 20 px, and pasted
into a 28x28 field so that its centre of mass sits at the centre. Before that, a photo or scan of
dark ink on light paper is turned into MNIST's white-ink-on-black with its background removed and
its contrast stretched, so that a phone photo and an MNIST test image look alike to the model:

1. decode (format allow-list and per-image limits from the header, both in `handler.limits`;
   JPEG decoded straight to luma and DCT-scaled for big photos, EXIF orientation), flatten any
   mode to grayscale compositing transparency, and area-reduce large images;
2. polarity: the border is paper; invert when the ink is darker than it;
3. background: a grid of paper levels (ink masked out) follows shadows and gradients; noise from
   neighbour differences; a soft threshold from the noise floor to the stroke cores;
4. bounding box on clearly inked, non-speck pixels; hairline strokes thickened to MNIST width;
5. area-resample to a 20 px box, paste with the centre of mass at (14, 14).

The pixel work runs on 8-bit images (OpenCV's fast path; MNIST itself has 8 bits), and order
statistics (medians, percentiles) come from 256-level histograms rather than sorts.

A digit already in MNIST's form (28x28, black background, 20 px box, centred) passes through
unchanged, so a PNG of an MNIST test digit gets exactly the answer its IDX tensor gets.
Calls are thread-safe.

Every failure a bad upload can cause is raised as `InvalidImage`, whose message is complete and
user-facing; the caller only prefixes which image of the request it was.

This module is the entry point; each step has its own module:
`handler.image_decoding` (1: bytes -> upright image), `handler.grayscale` (1: modes,
transparency, early reduction), `handler.ink_extraction` (2-3, with `handler.histograms`),
`handler.digit_geometry` (4-5, and the MNIST-form test).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from handler import limits
from handler.digit_geometry import DIGIT_BOX, centre_in_field, fit_box, is_mnist_form
from handler.grayscale import decoded_to_gray, to_gray
from handler.image_decoding import InvalidImage, decode, decode_image
from handler.ink_extraction import extract_ink
from handler.normalization import IMAGE_SIZE, normalize

__all__ = ["DIGIT_BOX", "MAX_IMAGE_PIXELS", "SOURCE_FILES", "WORKING_SIZE", "InvalidImage",
           "decode_image", "preprocess", "to_mnist"]  # fmt: skip

logger = logging.getLogger(__name__)

# One image is far too small work to split across threads, and every caller already runs
# preprocessing in parallel (TorchServe workers, the batch job's decode processes): OpenCV's own
# pool would only oversubscribe the cores.
cv2.setNumThreads(1)

# The format allow-list and the per-image limits (pixels, side, decoded size) live in
# handler/limits.py with every other serving limit; decode_image applies them to every decode.
MAX_IMAGE_PIXELS = limits.MAX_IMAGE_PIXELS
# Large inputs are reduced early so that their longer side lies in [WORKING_SIZE, 2*WORKING_SIZE):
# a digit that fills a tenth of the frame still spans > 40 px there, twice what we keep. (The
# limits price a request by this size, so it is defined with them.)
WORKING_SIZE = limits.WORKING_SIZE

# The code of the steps, for caches keyed by what preprocessing does (samples/realworld.py).
SOURCE_FILES = tuple(
    Path(__file__).with_name(f"{name}.py")
    for name in ("preprocessing", "image_decoding", "grayscale", "histograms", "ink_extraction",
                 "digit_geometry", "limits", "normalization")
)  # fmt: skip


def to_mnist(image: Image.Image) -> np.ndarray:
    """Map any decoded image to a (28, 28) float32 array in [0, 1], white ink on black, MNIST-style.

    Handles every Pillow mode (transparency is composited onto a background that keeps the ink
    visible; 16-bit and float images are scaled by their actual range), inverts dark-on-light
    input, removes uneven background, stretches the ink to 1.0, crops the ink, scales its longer
    side to 20 px and centres its centre of mass at (14, 14). An image without ink gives zeros.
    Raises `InvalidImage` if the image cannot be converted.
    """
    return _to_mnist(image)


def preprocess(data: bytes) -> np.ndarray:
    """Decode image bytes into a normalised (1, 28, 28) float32 model input; raises InvalidImage.

    The same as `normalize(to_mnist(decode_image(data)))`, without the Pillow image in between
    when OpenCV decoded the pixels."""
    return normalize(_to_mnist(decode(data)))[np.newaxis]


def _to_mnist(decoded: Image.Image | np.ndarray) -> np.ndarray:
    """`to_mnist` of a Pillow image or of the pixels `handler.image_decoding.decode` returns."""
    if isinstance(decoded, Image.Image):
        mode, (width, height) = decoded.mode, decoded.size
    else:
        mode = ("L", "L", "L", "RGB", "RGBA")[decoded.shape[2] if decoded.ndim == 3 else 0]
        height, width = decoded.shape[:2]
    try:
        gray = to_gray(decoded) if isinstance(decoded, Image.Image) else decoded_to_gray(decoded)
    except InvalidImage:
        raise
    except Exception:
        logger.warning("grayscale conversion failed on a %s image", mode, exc_info=True)
        raise InvalidImage(
            f"cannot convert a {mode} image of {width}x{height} to grayscale: its pixel values "
            "cannot be interpreted"
        ) from None
    if is_mnist_form(gray):
        # Already what MNIST's own normalisation produces: nothing to redo.
        return gray.astype(np.float32) * (1 / 255) if gray.dtype == np.uint8 else gray
    try:
        # Past this point 8 bits are plenty (MNIST itself has 8): uint8 is OpenCV's fast path.
        levels = gray if gray.dtype == np.uint8 else cv2.convertScaleAbs(gray, alpha=255.0)
        ink = extract_ink(levels)
        if ink is None:
            return np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        return centre_in_field(fit_box(ink))
    except Exception:  # a bug here must still answer the user with a 4xx, not a 500
        logger.exception("preprocessing failed on a %s image of %dx%d", mode, width, height)
        raise InvalidImage(  # what is wrong with the image, never the internal exception
            f"cannot preprocess a {mode} image of {width}x{height}: "
            "no digit could be isolated from its pixel values"
        ) from None
