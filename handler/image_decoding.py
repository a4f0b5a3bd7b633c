"""Image bytes -> a fully loaded, upright Pillow image: the first step of `handler.preprocessing`.

The format allow-list and the per-image limits (pixels, side, decoded size) live in
`handler.limits` and are checked on the header before any pixel is decoded. JPEGs are decoded
straight to luma and, when large, at a reduced DCT scale; the EXIF orientation is applied.
Every failure a bad upload can cause is raised as `InvalidImage`, with a user-facing message.
"""

from __future__ import annotations

import logging

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
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImage(f"image data must be bytes, not {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise InvalidImage("empty image data (0 bytes)")
    try:
        # Header only: the limits are checked before any pixel is decoded, independently of
        # Pillow's process-global `Image.MAX_IMAGE_PIXELS` and warning filters.
        image = limits.open_header(bytes(data))
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
        try:
            image.draft("L", (max(1, int(width * scale)), max(1, int(height * scale))))
        except Exception as exc:  # draft is an optimisation only; decode at full size instead
            logger.debug("JPEG draft failed: %r", exc)
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
