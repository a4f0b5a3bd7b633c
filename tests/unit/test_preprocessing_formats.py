"""handler.preprocessing on every format a user may send (PNG, JPEG, BMP, GIF, TIFF, WebP; EXIF
orientation, first frame or page, large photos decoded reduced) and on digits already in MNIST's
form, which pass through unchanged."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from handler.normalization import MNIST_STD, normalize
from handler.preprocessing import decode_image, preprocess, to_mnist
from project.paths import REPO_ROOT
from samples.digits import encode_png
from tests.glyphs import (
    CLOSE,
    CLOSE_LOSSY,
    centre_of_mass,
    dark_on_light,
    from_file,
    ink_extent,
    ink_mask,
    mean_abs_diff,
)
from tests.images import encode

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
    # It also shows that preprocessing needs no torch: it runs in torch-free decode workers.
    script = (
        "import json, sys\n"
        "from handler.preprocessing import preprocess\n"
        "for fmt, data in json.load(sys.stdin).items():\n"
        "    assert preprocess(bytes.fromhex(data)).shape == (1, 28, 28), fmt\n"
        "assert 'torch' not in sys.modules\n"
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
    # the mechanism that makes it fast: libjpeg decodes luma only, at a reduced DCT scale.
    photo = dark_on_light(ink).resize((4000, 3000), Image.Resampling.BILINEAR).convert("RGB")
    data = encode(photo, "JPEG", quality=90)
    decoded = decode_image(data)
    assert max(decoded.size) < 1000  # decoded at 1/8 DCT scale, not 12 megapixels
    assert decoded.mode == "L"
    out = preprocess(data)[0]
    assert mean_abs_diff(out, normalize(reference)) * MNIST_STD < CLOSE_LOSSY


def test_phone_photo_with_a_small_digit_in_a_shadow(ink, reference):
    # 12 MP, the digit a fifth of the frame's height, off-centre, under a shadow across the
    # page, with sensor noise, as a JPEG: what a phone sends.
    rng = np.random.default_rng(9)
    height, width = 3000, 4000
    glyph = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(
        (800, 600), Image.Resampling.BICUBIC), dtype=np.float32) / 255  # fmt: skip
    canvas = np.zeros((height, width), dtype=np.float32)
    canvas[1900:2500, 900:1700] = glyph
    shadow = np.linspace(-25, 15, width, dtype=np.float32)[np.newaxis, :]
    paper = 200 + shadow + rng.normal(0, 5, (height, width)).astype(np.float32)
    photo = np.clip(paper * (1 - canvas) + 50 * canvas, 0, 255).astype(np.uint8)
    out = from_file(Image.fromarray(photo, "L").convert("RGB"), "JPEG", quality=85)
    assert mean_abs_diff(out, reference) < 0.05


def test_large_png_scan_is_area_reduced_to_the_same_digit(ink, reference):
    big = dark_on_light(ink_mask((2400, 1800)))  # a 4 MP lossless scan: reduced before work
    assert mean_abs_diff(from_file(big), from_file(dark_on_light(ink_mask()))) < CLOSE_LOSSY
    assert mean_abs_diff(from_file(big), reference) < CLOSE_LOSSY


def test_colour_jpeg_is_decoded_straight_to_luma(ink, reference):
    blue_pen = np.stack([235 - 200 * ink, 235 - 170 * ink, 235 - 40 * ink], axis=-1)
    data = encode(Image.fromarray(blue_pen.round().astype(np.uint8), "RGB"), "JPEG", quality=90)
    decoded = decode_image(data)
    assert decoded.mode == "L" and decoded.size == (120, 90)
    assert mean_abs_diff(to_mnist(decoded), reference) < CLOSE_LOSSY


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


