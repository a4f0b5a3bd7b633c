"""handler.preprocessing on every Pillow mode: colour, palettes, CMYK, transparency composited
onto the right background, 16-bit and float images scaled by their range."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from handler.preprocessing import decode_image, to_mnist
from tests.glyphs import CLOSE, CLOSE_LOSSY, dark_on_light, from_file, mean_abs_diff
from tests.images import encode

# --- modes ------------------------------------------------------------------------------------


def _modes(ink: np.ndarray) -> dict[str, tuple[Image.Image, str | None]]:
    """The glyph in every Pillow mode, with the format that stores that mode (None: a mode that
    only exists in memory, e.g. after an application's own conversion)."""
    gray = dark_on_light(ink)
    rgb = gray.convert("RGB")
    blue_pen = np.stack([235 - 200 * ink, 235 - 170 * ink, 235 - 40 * ink], axis=-1)
    return {
        "L": (gray, "PNG"),
        "RGB": (rgb, "PNG"),
        "RGB-blue-pen": (Image.fromarray(blue_pen.round().astype(np.uint8), "RGB"), "PNG"),
        "RGBA-opaque": (rgb.convert("RGBA"), "PNG"),
        "LA-opaque": (gray.convert("LA"), "PNG"),
        "P": (rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG"),
        "PA": (rgb.convert("RGBA").convert("PA"), "TIFF"),
        "1": (gray.point(lambda v: 255 if v > 128 else 0).convert("1"), "PNG"),
        "CMYK": (rgb.convert("CMYK"), "TIFF"),
        "YCbCr": (rgb.convert("YCbCr"), "TIFF"),
        "LAB": (rgb.convert("LAB"), "TIFF"),
        "I": (gray.convert("I"), "TIFF"),
        "F": (gray.convert("F"), "TIFF"),
        "I;16": (Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257), "PNG"),
        "HSV": (rgb.convert("HSV"), None),
        "RGBX": (rgb.convert("RGBX"), None),
        "RGBa": (rgb.convert("RGBA").convert("RGBa"), None),
        "La": (gray.convert("LA").convert("La"), None),
    }


MODES = ["L", "RGB", "RGB-blue-pen", "RGBA-opaque", "LA-opaque", "P", "PA", "1", "CMYK", "YCbCr",
         "LAB", "I", "F", "I;16", "HSV", "RGBX", "RGBa", "La"]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gives_the_same_digit(ink, reference, mode):
    image, fmt = _modes(ink)[mode]
    if fmt is not None:  # through a real file, which must still hold that mode
        image = decode_image(encode(image, fmt))
        assert image.mode == mode.split("-")[0]
    tolerance = 0.05 if mode == "1" else CLOSE  # binarised input loses the anti-aliasing
    assert mean_abs_diff(to_mnist(image), reference) < tolerance


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_files_decode(ink, reference, fmt):
    params = {"quality": 90} if fmt == "JPEG" else {}
    data = encode(dark_on_light(ink).convert("CMYK"), fmt, **params)
    assert mean_abs_diff(to_mnist(decode_image(data)), reference) < CLOSE_LOSSY


def test_black_ink_on_transparent_png(ink, reference):
    # What drawing apps export: transparent pixels hold (0, 0, 0, 0) -- black, like the ink.
    rgba = np.zeros(ink.shape + (4,), dtype=np.uint8)
    rgba[..., 3] = (ink * 255).round().astype(np.uint8)
    data = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    assert mean_abs_diff(to_mnist(decode_image(data)), reference) < CLOSE


def test_white_ink_on_transparent_png(ink, reference):
    rgba = np.full(ink.shape + (4,), 255, dtype=np.uint8)
    rgba[..., 3] = (ink * 255).round().astype(np.uint8)
    data = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    assert mean_abs_diff(to_mnist(decode_image(data)), reference) < CLOSE


def test_dark_ink_on_paper_with_transparent_margins(ink, reference):
    # A scanned sheet with rounded, transparent corners/margins: margins must read as paper.
    paper = np.asarray(dark_on_light(ink).convert("RGBA")).copy()
    paper[:6, :, 3] = 0
    paper[:, :6, 3] = 0
    data = encode(Image.fromarray(paper, "RGBA"), "PNG")
    assert mean_abs_diff(to_mnist(decode_image(data)), reference) < CLOSE


def test_la_ink_on_transparent(ink, reference):
    la = np.zeros(ink.shape + (2,), dtype=np.uint8)
    la[..., 1] = (ink * 255).round().astype(np.uint8)
    assert mean_abs_diff(from_file(Image.fromarray(la, "LA")), reference) < CLOSE


def test_palette_png_with_transparent_background(ink, reference):
    # Palette entry 0 is transparent white, the rest an ink ramp: 'P' + tRNS, as GIF-era art.
    indices = (ink * 15).round().astype(np.uint8)
    image = Image.fromarray(indices, "P")
    ramp = [255 - 17 * i for i in range(16)]
    image.putpalette([v for level in ramp for v in (level, level, level)])
    data = encode(image, "PNG", transparency=0)
    decoded = decode_image(data)
    assert decoded.mode == "P" and "transparency" in decoded.info
    assert mean_abs_diff(to_mnist(decoded), reference) < 0.03  # 16 grey levels only


@pytest.mark.parametrize("peak", [1020, 65535], ids=["12-bit-range", "full-16-bit"])
def test_16bit_png_is_scaled_by_its_range(ink, reference, peak):
    # Light-on-dark 16-bit data whose values all exceed 255: clipping at 255 would flatten the
    # anti-aliased edges into a solid blob.
    values = (ink * peak).round().astype(np.uint16)
    data = encode(Image.fromarray(values), "PNG")  # uint16 -> mode I;16
    decoded = decode_image(data)
    assert decoded.mode.startswith("I")
    assert mean_abs_diff(to_mnist(decoded), reference) < CLOSE


def test_16bit_dark_on_light_scan(ink, reference):
    values = (60000 - 50000 * ink).round().astype(np.uint16)
    data = encode(Image.fromarray(values), "TIFF")
    assert mean_abs_diff(to_mnist(decode_image(data)), reference) < CLOSE


def test_float_tiff_with_nan_is_handled(ink, reference):
    values = ink.astype(np.float32) * 3.5 - 1.0  # arbitrary float range
    values[0, 0] = np.nan
    data = encode(Image.fromarray(values), "TIFF")
    assert mean_abs_diff(to_mnist(decode_image(data)), reference) < CLOSE


