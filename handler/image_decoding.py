"""Image bytes -> a fully loaded, upright Pillow image: the first step of `handler.preprocessing`.

The format allow-list and the per-image limits (pixels, side, decoded size) live in
`handler.limits` and are checked on the header before any pixel is decoded. JPEGs are decoded
straight to luma and, when large, at a reduced DCT scale; the EXIF orientation is applied.
Every failure a bad upload can cause is raised as `InvalidImage`, with a user-facing message.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from PIL import Image, ImageOps

from handler import limits
from handler.limits import WORKING_SIZE

logger = logging.getLogger(__name__)


class InvalidImage(ValueError):
    """An uploaded image cannot be used; str(exc) is a complete user-facing message."""


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes into a fully loaded Pillow image, upright per its EXIF orientation.

    Accepts PNG, JPEG, BMP, GIF (first frame), TIFF (first page) and WebP. JPEGs in colour are
    decoded straight to luma (mode L), and large ones at a reduced DCT scale (`Image.draft`), so
    the result may be smaller than the stored image.
    Raises `InvalidImage` for empty, unreadable, truncated or over-large (> MAX_IMAGE_PIXELS) data;
    no Pillow exception escapes.
    """
    decoded = decode(data)
    if isinstance(decoded, Image.Image):
        return decoded
    if decoded.ndim == 2:
        return Image.fromarray(decoded, "L")
    if decoded.shape[2] == 3:
        return Image.fromarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), "RGB")
    return Image.fromarray(cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA), "RGBA")


def decode(data: bytes) -> Image.Image | np.ndarray:
    """`decode_image`, except that the commonest uploads come back as the uint8 pixels OpenCV
    decodes (grayscale, BGR or BGRA: the same values Pillow decodes, without its copies).

    Those are JPEGs in luma or colour and 8-bit grayscale, RGB or RGBA PNGs, without an EXIF
    orientation or a transparency key; anything else, or anything OpenCV fails on, takes
    Pillow's path, which holds every mode and words the errors.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImage(f"image data must be bytes, not {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise InvalidImage("empty image data (0 bytes)")
    data = bytes(data)
    try:
        # Header only: the limits are checked before any pixel is decoded, independently of
        # Pillow's process-global `Image.MAX_IMAGE_PIXELS` and warning filters.
        image = limits.open_header(data)
        limits.check_image(limits.header_of(image))
    except limits.ImageRefused as exc:
        raise InvalidImage(str(exc)) from None
    width, height = image.size

    fmt = image.format or "image"
    if fmt in ("JPEG", "MPO"):
        # libjpeg then decodes luma only (the colour would be dropped anyway) and, for a big
        # photo, at 1/2, 1/4 or 1/8 scale: a 12 MP photo costs its entropy decoding and little
        # more, instead of a full-resolution decode we would throw away.
        longer = max(width, height)
        scale = WORKING_SIZE / longer if longer >= 2 * WORKING_SIZE else 1.0
        mode = image.mode
        try:
            image.draft("L", (max(1, int(width * scale)), max(1, int(height * scale))))
        except Exception as exc:  # draft is an optimisation only; decode at full size instead
            logger.debug("JPEG draft failed: %r", exc)
        pixels = _opencv_jpeg(data, image, mode, width)
    else:
        pixels = _opencv_png(data, image) if fmt == "PNG" else None
    if pixels is not None:
        return pixels
    try:
        image.load()  # Pillow decodes lazily: force it here so corrupt data fails inside the guard
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage(limits.bomb_message(data)) from None
    except Exception as exc:
        raise InvalidImage(
            f"cannot decode {size:,} bytes as a {fmt} image: the data is truncated or corrupt "
            f"({_decoder_reason(exc)})"
        ) from None
    return _upright(image)


# OpenCV's reduced JPEG decodes, by DCT scale; each is libjpeg's luma output at that scale.
_JPEG_FLAGS = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
               4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}  # fmt: skip
_PNG_COLOUR_TYPES = (0, 2, 6)  # grayscale, RGB, RGBA (palettes and grey+alpha take Pillow's path)


def _opencv_jpeg(data: bytes, image: Image.Image, mode: str, width: int) -> np.ndarray | None:
    """The luma of a plain JPEG at the scale Pillow's draft chose, or None for Pillow's path.

    A file without its end marker is truncated (libjpeg would pad it grey; Pillow refuses it),
    and an EXIF orientation is applied by Pillow's path: both go there.
    """
    if image.format != "JPEG" or mode not in ("L", "RGB") or not data.endswith(b"\xff\xd9"):
        return None
    if image.mode != "L" or _orientation(image) not in (None, 1):
        return None
    scale = -(-width // image.size[0])  # the draft's DCT scale: 1, 2, 4 or 8
    flag = _JPEG_FLAGS.get(scale)
    if flag is None:
        return None
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None or pixels.shape != image.size[::-1]:
        return None
    return pixels


def _opencv_png(data: bytes, image: Image.Image) -> np.ndarray | None:
    """The pixels of an 8-bit grayscale, RGB or RGBA PNG (BGR order), or None for Pillow's path
    (other depths and types, a transparency key, EXIF, or data OpenCV cannot decode)."""
    if len(data) < 33 or data[24] != 8 or data[25] not in _PNG_COLOUR_TYPES:
        return None
    if image.mode not in ("L", "RGB", "RGBA") or "transparency" in image.info:
        return None
    if b"xif" in data:  # an eXIf chunk or an "exif" text may hold an orientation: Pillow reads it
        return None
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape[:2] != image.size[::-1]:
        return None
    return pixels


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112, 1)
    except Exception as exc:  # broken EXIF must not reject an otherwise good image
        logger.debug("unreadable EXIF ignored: %r", exc)
        return None


def _decoder_reason(exc: Exception) -> str:
    """The decoder's own words (Pillow raises OSError/SyntaxError/EOFError about the data);
    anything else is an internal exception a hostile file provoked: say so without it."""
    if not isinstance(exc, (OSError, SyntaxError, EOFError)):
        return "its structure is invalid"
    text = str(exc).strip() or "unreadable data"
    return text if len(text) <= 120 else text[:117] + "..."


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, as the phone that took the photo intended."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception as exc:  # broken EXIF must not reject an otherwise good image
        logger.debug("unreadable EXIF ignored: %r", exc)
        return image
    if orientation in (None, 1):
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:
        logger.debug("EXIF transpose failed, using stored orientation: %r", exc)
        return image
