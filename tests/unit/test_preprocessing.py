"""Unit tests of handler.preprocessing: every format and mode a user may send, the MNIST-style
geometry (ink cropped, longer side 20 px, centre of mass at (14, 14)), inversion, transparency,
high bit depths, and every way a bad upload must become InvalidImage with a useful message."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

from handler.normalization import MNIST_MEAN, MNIST_STD, normalize
from handler.preprocessing import (
    MAX_IMAGE_PIXELS,
    InvalidImage,
    decode_image,
    preprocess,
    to_mnist,
)
from project.paths import REPO_ROOT
from samples.digits import encode_png
from tests.images import encode, png_claiming_size

# --- fixtures and helpers ---------------------------------------------------------------------


def _ink_mask(
    size: tuple[int, int] = (120, 90), offset: tuple[int, int] = (0, 0), weight: float = 1 / 9
) -> np.ndarray:
    """A '4'-like glyph (asymmetric, so rotations and flips are detectable) as ink in [0, 1];
    `weight` is the stroke width as a fraction of the glyph's size."""
    width, height = size
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    ox, oy = offset
    x0, y0 = width * 0.3 + ox, height * 0.15 + oy
    s = min(width, height) * 0.6
    stroke = max(2, int(s * weight))
    corner = [(x0 + s * 0.45, y0), (x0, y0 + s * 0.65), (x0 + s * 0.7, y0 + s * 0.65)]
    draw.line(corner, 255, stroke)
    draw.line([(x0 + s * 0.5, y0 + s * 0.25), (x0 + s * 0.5, y0 + s * 1.05)], 255, stroke)
    return np.asarray(canvas, dtype=np.float32) / 255.0


@pytest.fixture(scope="module")
def ink() -> np.ndarray:
    return _ink_mask()


@pytest.fixture(scope="module")
def reference(ink) -> np.ndarray:
    """What the glyph should become: white-on-black L input needs no inversion or cleaning."""
    return to_mnist(Image.fromarray((ink * 255).astype(np.uint8), "L"))


def dark_on_light(ink: np.ndarray, paper: int = 235, pen: int = 30) -> Image.Image:
    return Image.fromarray((paper + (pen - paper) * ink).round().astype(np.uint8), "L")


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Pixel difference of two 28x28 results, forgiving a translation of at most one pixel.

    Centring rounds the centre of mass to whole pixels (as MNIST did), so a centre that sits
    near x.5 may land one pixel either way after a lossy re-encoding; the shape must still match.
    """
    best = float("inf")
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.roll(np.roll(a, dy, axis=0), dx, axis=1)
            best = min(best, float(np.abs(shifted - b).mean()))
    return best


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    mass = pixels.sum()
    rows, cols = np.arange(pixels.shape[0]), np.arange(pixels.shape[1])
    return float(pixels.sum(1) @ rows / mass), float(pixels.sum(0) @ cols / mass)


def ink_extent(pixels: np.ndarray, level: float = 0.05) -> tuple[int, int]:
    rows = np.flatnonzero((pixels > level).any(axis=1))
    cols = np.flatnonzero((pixels > level).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


# Same glyph, different encodings: close to the reference. Lossy JPEG gets a wider tolerance.
CLOSE = 0.02
CLOSE_LOSSY = 0.04


# --- output contract --------------------------------------------------------------------------


def test_to_mnist_contract(reference):
    assert reference.shape == (28, 28)
    assert reference.dtype == np.float32
    assert reference.min() >= 0.0 and reference.max() <= 1.0
    assert reference.max() == pytest.approx(1.0)  # ink stretched to full intensity
    assert reference[0].sum() == 0 and reference[:, 0].sum() == 0  # MNIST's empty margin


def test_preprocess_is_normalised_to_mnist(ink, reference):
    data = encode(dark_on_light(ink), "PNG")
    out = preprocess(data)
    assert out.shape == (1, 28, 28) and out.dtype == np.float32
    np.testing.assert_allclose(out, normalize(to_mnist(decode_image(data)))[np.newaxis])
    # Background is exactly MNIST's black after normalisation.
    assert out[0, 0, 0] == pytest.approx(-MNIST_MEAN / MNIST_STD)


# --- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [(0, 0), (-25, -10), (30, 15), (-30, 20)])
@pytest.mark.parametrize("size", [(120, 90), (400, 300), (64, 64)])
def test_centre_of_mass_lands_at_14_14_and_longer_side_is_20(size, offset):
    out = to_mnist(dark_on_light(_ink_mask(size, (offset[0] * size[0] // 120, offset[1]))))
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5, (cy, cx)
    assert max(ink_extent(out, level=0.0)) == 20


def test_aspect_ratio_is_kept_for_a_wide_stroke():
    canvas = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(canvas).rectangle([40, 90, 240, 119], fill=0)  # 201 x 30 bar, ratio ~6.7
    out = to_mnist(canvas)
    height, width = ink_extent(out, level=0.0)
    assert width == 20
    assert 2 <= height <= 4  # 20 / 6.7 = 3 px, not stretched to a square


def test_scale_invariance(ink, reference):
    big = Image.fromarray((ink * 255).astype(np.uint8)).resize((480, 360), Image.Resampling.BICUBIC)
    assert mean_abs_diff(to_mnist(big), reference) < CLOSE_LOSSY


# --- inversion, background, contrast ----------------------------------------------------------


def test_dark_on_light_equals_light_on_dark(ink, reference):
    assert mean_abs_diff(to_mnist(dark_on_light(ink)), reference) < CLOSE


@pytest.mark.parametrize("chalk", [True, False], ids=["chalk-on-blackboard", "pen-on-paper"])
def test_small_digit_on_a_large_noisy_photo_either_polarity(ink, reference, chalk):
    rng = np.random.default_rng(11)
    canvas = np.zeros((600, 800), dtype=np.float32)
    canvas[300:390, 400:520] = ink  # the digit covers ~1 % of the photo
    paper, pen = (40.0, 210.0) if chalk else (215.0, 45.0)
    photo = np.clip(paper + rng.normal(0, 6, canvas.shape) + (pen - paper) * canvas, 0, 255)
    out = to_mnist(Image.fromarray(photo.astype(np.uint8), "L"))
    assert mean_abs_diff(out, reference) < CLOSE_LOSSY


def test_low_contrast_pencil_on_grey_paper_is_stretched(ink, reference):
    out = to_mnist(dark_on_light(ink, paper=170, pen=120))
    assert out.max() == pytest.approx(1.0)
    assert mean_abs_diff(out, reference) < CLOSE


def test_uneven_lighting_and_grain_are_removed(ink, reference):
    rng = np.random.default_rng(7)
    height, width = ink.shape
    ramp = np.linspace(-30, 30, width, dtype=np.float32)[np.newaxis, :]  # shadow across the page
    paper = 215 + ramp + rng.normal(0, 4, size=ink.shape)
    photo = np.clip(paper * (1 - ink) + 40 * ink, 0, 255).astype(np.uint8)
    data = encode(Image.fromarray(photo, "L").convert("RGB"), "JPEG", quality=75)
    out = to_mnist(decode_image(data))
    assert mean_abs_diff(out, reference) < 0.05
    # No paper grain survives far from the glyph: the margin of the 28x28 field stays black.
    assert out[:3].max() == 0 and out[-3:].max() == 0


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (50, 40), 255),
        Image.new("L", (50, 40), 0),
        Image.new("RGB", (300, 200), (200, 190, 170)),
        Image.new("RGBA", (40, 40), (0, 0, 0, 0)),
    ],
    ids=["white", "black", "cream-rgb", "fully-transparent"],
)
def test_blank_image_gives_zeros(image):
    out = to_mnist(image)
    assert out.shape == (28, 28) and not out.any()


def test_blank_noisy_paper_photo_gives_zeros():
    rng = np.random.default_rng(3)
    paper = np.clip(rng.normal(210, 5, size=(240, 320)), 0, 255).astype(np.uint8)
    data = encode(Image.fromarray(paper, "L"), "JPEG", quality=70)
    assert not to_mnist(decode_image(data)).any()


@pytest.mark.parametrize("margin", [0, 1])
def test_tightly_cropped_bold_digit(margin):
    # A user crops right to a marker-written digit: ink covers ~40 % of the picture and touches
    # the border. Background and noise estimates must not mistake the ink for paper (a
    # per-tile low percentile did, and stripped the strokes' cores).
    glyph = _ink_mask((120, 90), weight=1 / 5)
    rows, cols = np.flatnonzero(glyph.any(1)), np.flatnonzero(glyph.any(0))
    crop = glyph[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    bold = Image.fromarray((crop * 255).astype(np.uint8)).resize(
        (crop.shape[1] * 4, crop.shape[0] * 4), Image.Resampling.BICUBIC
    )
    framed = np.pad(np.asarray(bold, dtype=np.float32) / 255.0, margin * 4)
    assert framed.mean() > 0.35  # genuinely ink-heavy
    # The same glyph on a roomy sheet, where paper is plentiful everywhere, is the yardstick.
    expected = to_mnist(dark_on_light(np.pad(framed, 150)))
    out = to_mnist(dark_on_light(framed))
    assert mean_abs_diff(out, expected) < CLOSE
    assert out.max() == pytest.approx(1.0)


def test_hairline_pen_on_a_large_photo_is_thickened_to_mnist_width(reference):
    # A fine ballpoint line photographed at high resolution: 1/40 of the glyph's size, which
    # would be half a pixel in the 20 px box. It must come out about as bold as MNIST strokes.
    hairline = _ink_mask((1200, 900), weight=1 / 40)
    out = to_mnist(dark_on_light(hairline))
    assert out.max() == pytest.approx(1.0)
    # Stroke width in the field: inked area over centre-line length (transitions / 2.55).
    mask = (out > 0.5).astype(np.int8)
    transitions = np.count_nonzero(np.diff(mask, axis=0)) + np.count_nonzero(np.diff(mask, axis=1))
    width = 2.55 * mask.sum() / transitions
    assert width >= 1.5, width  # MNIST: median 2.3 px, 1st percentile 1.3 px
    assert (out > 0.5).sum() >= 0.6 * (reference > 0.5).sum()


def test_speck_of_dust_does_not_stretch_the_box(ink, reference):
    image = dark_on_light(ink)
    ImageDraw.Draw(image).rectangle([2, 2, 3, 3], fill=30)  # a 2x2 dot in the corner
    assert mean_abs_diff(to_mnist(image), reference) < CLOSE


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params", "tolerance"),
    [
        ("PNG", {}, CLOSE),
        ("JPEG", {"quality": 85}, CLOSE_LOSSY),
        ("BMP", {}, CLOSE),
        ("TIFF", {}, CLOSE),
        ("TIFF", {"compression": "tiff_lzw"}, CLOSE),
        ("WEBP", {"lossless": True}, CLOSE),
        ("WEBP", {"quality": 80}, CLOSE_LOSSY),
        ("GIF", {}, CLOSE),
    ],
    ids=["png", "jpeg", "bmp", "tiff", "tiff-lzw", "webp-lossless", "webp-lossy", "gif"],
)
def test_every_format_decodes_to_the_same_digit(ink, reference, fmt, params, tolerance):
    data = encode(dark_on_light(ink).convert("RGB"), fmt, **params)
    assert mean_abs_diff(preprocess(data)[0], normalize(reference)) * MNIST_STD < tolerance


def test_every_format_decodes_in_a_fresh_process(ink):
    # A TorchServe worker's first request meets Pillow with only its core plugins loaded; here
    # the test process has long since loaded them all, so decode in a clean interpreter.
    payload = {
        fmt: encode(dark_on_light(ink).convert("RGB"), fmt).hex()
        for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
    }
    script = (
        "import json, sys\n"
        "from handler.preprocessing import preprocess\n"
        "for fmt, data in json.load(sys.stdin).items():\n"
        "    assert preprocess(bytes.fromhex(data)).shape == (1, 28, 28), fmt\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_jpeg_exif_orientation_6_is_applied(ink, reference):
    upright = dark_on_light(ink).convert("RGB")
    # Orientation 6 = "rotate 90 degrees clockwise to display": store it rotated the other way.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated_data = encode(stored, "JPEG", quality=90, exif=exif)
    decoded = decode_image(rotated_data)
    assert stored.size != upright.size and decoded.size == upright.size
    fixed = mean_abs_diff(to_mnist(decoded), reference)
    assert fixed < CLOSE_LOSSY
    # Without the tag the same pixels are a sideways glyph: the EXIF step is what fixed it.
    plain = to_mnist(decode_image(encode(stored, "JPEG", quality=90)))
    assert mean_abs_diff(plain, reference) > max(CLOSE_LOSSY, 3 * fixed)


def test_animated_gif_uses_the_first_frame(ink, reference):
    first = dark_on_light(ink).convert("P")
    second = dark_on_light(ink.T.copy()).convert("P")  # a different (transposed) glyph
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = to_mnist(decode_image(data))
    assert mean_abs_diff(out, reference) < CLOSE
    assert mean_abs_diff(out, to_mnist(second)) > 3 * CLOSE


def test_multipage_tiff_uses_the_first_page(ink, reference):
    first, second = dark_on_light(ink), dark_on_light(ink[::-1].copy())
    data = encode(first, "TIFF", save_all=True, append_images=[second])
    assert mean_abs_diff(to_mnist(decode_image(data)), reference) < CLOSE


def test_large_photo_is_downscaled_early(ink, reference):
    # How fast is `make bench-preprocess`'s job (a benchmark, not a timed unit test); this checks
    # the mechanism that makes it fast: libjpeg decodes at a reduced DCT scale.
    photo = dark_on_light(ink).resize((4000, 3000), Image.Resampling.BILINEAR).convert("RGB")
    data = encode(photo, "JPEG", quality=90)
    decoded = decode_image(data)
    assert max(decoded.size) < 1000  # decoded at 1/8 DCT scale, not 12 megapixels
    out = preprocess(data)[0]
    assert mean_abs_diff(out, normalize(reference)) * MNIST_STD < CLOSE_LOSSY


# --- input already in MNIST's form --------------------------------------------------------------


def test_mnist_test_pngs_pass_through_unchanged(mnist_test):
    """A PNG of an MNIST digit comes back as exactly the IDX pixels the model was trained on."""
    images, _ = mnist_test
    for image in images[:300]:
        out = to_mnist(decode_image(encode_png(image)))
        np.testing.assert_array_equal(out, image.astype(np.float32) * (1 / 255))


@pytest.mark.parametrize(
    "change",
    ["shifted 3 px", "inverted", "grey background", "box of 16 px"],
)
def test_digits_not_in_mnist_form_are_normalised(mnist_test, change):
    """Near misses of MNIST's form take the full path and come out in that form."""
    image = mnist_test[0][0]
    pixels = {
        "shifted 3 px": np.roll(image, (3, 3), axis=(0, 1)),
        "inverted": 255 - image,
        "grey background": np.maximum(image, 60),
        "box of 16 px": np.asarray(
            Image.fromarray(image).resize((22, 22), Image.Resampling.BOX).crop((-3, -3, 25, 25))
        ),
    }[change]
    out = to_mnist(decode_image(encode_png(pixels.astype(np.uint8))))
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5, (change, cy, cx)
    assert max(ink_extent(out, level=0.0)) == 20, change
    assert out[0].sum() == 0 and out[:, 0].sum() == 0, change  # black margin again


# --- modes ------------------------------------------------------------------------------------


def _modes(ink: np.ndarray) -> dict[str, Image.Image]:
    gray = dark_on_light(ink)
    rgb = gray.convert("RGB")
    blue_pen = np.stack([235 - 200 * ink, 235 - 170 * ink, 235 - 40 * ink], axis=-1)
    return {
        "L": gray,
        "RGB": rgb,
        "RGB-blue-pen": Image.fromarray(blue_pen.round().astype(np.uint8), "RGB"),
        "RGBA-opaque": rgb.convert("RGBA"),
        "LA-opaque": gray.convert("LA"),
        "P": rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
        "1": gray.point(lambda v: 255 if v > 128 else 0).convert("1"),
        "CMYK": rgb.convert("CMYK"),
        "YCbCr": rgb.convert("YCbCr"),
        "HSV": rgb.convert("HSV"),
        "LAB": rgb.convert("LAB"),
        "I": gray.convert("I"),
        "F": gray.convert("F"),
    }


@pytest.mark.parametrize(
    "mode",
    ["L", "RGB", "RGB-blue-pen", "RGBA-opaque", "LA-opaque", "P", "1", "CMYK", "YCbCr", "HSV",
     "LAB", "I", "F"],
)
def test_every_mode_gives_the_same_digit(ink, reference, mode):
    image = _modes(ink)[mode]
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
    image = Image.fromarray(la, "LA")
    assert mean_abs_diff(to_mnist(decode_image(encode(image, "PNG"))), reference) < CLOSE


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


def test_pa_mode(ink, reference):
    image = dark_on_light(ink).convert("RGBA").convert("PA")
    assert mean_abs_diff(to_mnist(image), reference) < CLOSE


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

