"""Images in every format Pillow writes, for tests that need more than an MNIST PNG.

An MNIST digit as a client's PNG is `samples.digits.encode_png`; this module is for the rest:
other formats (JPEG, BMP, GIF, TIFF, WebP, ...), other modes, encoder options, files on disk,
and hand-built PNGs whose header lies about their size.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# File extension -> Pillow format, for the formats a user's folder may hold.
FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "gif": "GIF", "tiff": "TIFF",
           "webp": "WEBP"}  # fmt: skip


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", mode: str | None = None,
           **params) -> bytes:  # fmt: skip
    """`image` (a PIL image or a uint8/uint16/float array) encoded as `fmt`, converted to
    `mode` first when given; `params` go to Pillow's encoder (quality, exif, save_all, ...)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def write_image(path: Path, pixels: np.ndarray, fmt: str | None = None) -> Path:
    """Write a uint8 grayscale array to `path`, in the format its extension names unless `fmt`
    is given (WebP losslessly, so every format carries the same pixels)."""
    fmt = fmt or FORMATS[path.suffix.lstrip(".").lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(pixels, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    return path


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_claiming_size(width: int, height: int, data_bytes: int | None = None) -> bytes:
    """A well-formed PNG header (valid CRCs) that claims `width`x`height` 8-bit grayscale pixels.

    The IDAT holds `data_bytes` of pixel data (default: one row, at most 1 KB), so the file is
    ~100 bytes: a decoder that trusts the header and allocates width*height bytes up front is
    the bug this looks for.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data_bytes = 1 + min(width, 1024) if data_bytes is None else data_bytes
    idat = zlib.compress(b"\x00" * data_bytes)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def write_labelled_pngs(folder: Path, pngs: Sequence[bytes], labels: Sequence[int], count: int,
                        per_folder: int = 500) -> dict[str, int]:  # fmt: skip
    """`count` PNG files in sub-folders of `folder` (`per_folder` in each), cycling through
    `pngs` under distinct names when `count` is larger; returns {relative path: label}."""
    written = {}
    for i in range(count):
        rel = f"part{i // per_folder:03d}/{i:05d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(pngs[i % len(pngs)])
        written[rel] = int(labels[i % len(pngs)])
    return written
