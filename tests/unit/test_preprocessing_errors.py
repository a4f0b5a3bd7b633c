"""Every way a bad upload must become InvalidImage with a useful message: decompression bombs
refused from the header, garbage, truncated or corrupt files, formats off the allow-list."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from handler.preprocessing import MAX_IMAGE_PIXELS, InvalidImage, decode_image, preprocess
from tests.glyphs import dark_on_light, ink_mask
from tests.images import encode, png_claiming_size


@pytest.fixture(scope="module")
def ink() -> np.ndarray:
    return ink_mask()


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"),
    [(30000, 30000), (10000, 10000), (8000, 6000)],
    ids=["over-pillow-error-limit", "pillow-warning-band", "only-our-limit"],
)
def test_decompression_bombs_are_rejected_from_the_header(width, height):
    data = png_claiming_size(width, height)
    assert len(data) < 200
    # In Pillow's warning band Pillow also emits its DecompressionBombWarning before our check
    # rejects the image; that warning is Pillow's business, the rejection is what matters.
    with warnings.catch_warnings(), pytest.raises(InvalidImage) as caught:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        decode_image(data)
    message = str(caught.value)
    assert f"{width}x{height} = {width * height:,} pixels" in message
    assert f"over the limit of {MAX_IMAGE_PIXELS:,}" in message


@pytest.mark.parametrize(("width", "height"), [(30000, 30000), (10000, 10000)])
def test_bombs_are_rejected_when_warnings_are_errors(width, height):
    with warnings.catch_warnings():  # single-threaded test: mutating the filters is fine here
        warnings.simplefilter("error")
        with pytest.raises(InvalidImage, match="over the limit"):
            decode_image(png_claiming_size(width, height))


def test_limit_is_ours_not_pillows_global(monkeypatch):
    # Someone elsewhere in the process disables Pillow's guard; ours still holds.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(InvalidImage, match="over the limit of 40,000,000"):
        decode_image(png_claiming_size(30000, 30000))


def test_image_just_under_the_limit_header_is_not_a_bomb():
    # 100x100 claimed with too little pixel data: passes the size check, then fails decoding.
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        decode_image(png_claiming_size(100, 100, data_bytes=64))


def _truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty image data (0 bytes)"),
        (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
         "cannot decode 5,000 bytes as an image (PNG, JPEG, BMP, GIF, TIFF, WebP accepted)"),
        (b"hello, this is not an image\n", "cannot decode 28 bytes as an image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><circle r="9"/></svg>',
         "as an image (PNG, JPEG"),
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
         "as an image (PNG, JPEG"),
        (b"<!DOCTYPE html><html><body><img src='x.png'></body></html>", "as an image (PNG"),
        (b"\x89PNG\r\n\x1a\n", "cannot decode 8 bytes as an image"),
    ],
    ids=["empty", "random", "text", "svg", "pdf", "html", "png-signature-only"],
)
def test_garbage_is_rejected_with_a_message(data, expected):
    with pytest.raises(InvalidImage) as caught:
        preprocess(data)
    assert expected in str(caught.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"])
def test_truncated_files_are_rejected(ink, fmt):
    rng = np.random.default_rng(1)
    noisy = np.clip(rng.normal(128, 60, size=(200, 200)), 0, 255).astype(np.uint8)  # no RLE luck
    data = _truncated(encode(Image.fromarray(noisy, "L"), fmt))
    with pytest.raises(InvalidImage) as caught:
        preprocess(data)
    assert f"{len(data):,} bytes" in str(caught.value)


def test_corrupt_png_crc_is_rejected(ink):
    data = bytearray(encode(dark_on_light(ink), "PNG"))
    data[40] ^= 0xFF  # inside the first chunk after IHDR: its CRC no longer matches
    with pytest.raises(InvalidImage):
        preprocess(bytes(data))


def test_formats_outside_the_allow_list_are_rejected(ink):
    # Pillow could read PPM, but untrusted bytes only reach the listed decoders.
    data = encode(dark_on_light(ink), "PPM")
    assert Image.open(io.BytesIO(data)).format == "PPM"
    with pytest.raises(InvalidImage, match="cannot decode"):
        decode_image(data)


def test_non_bytes_is_rejected():
    with pytest.raises(InvalidImage, match="must be bytes, not str"):
        decode_image("iVBORw0KGgo=")  # base64 text passed by mistake

