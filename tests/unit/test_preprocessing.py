"""Unit tests of handler.preprocessing: the output contract, the MNIST-style geometry (ink
cropped, longer side 20 px, centre of mass at (14, 14)), inversion, background, contrast, blank
pictures and specks. Formats, modes and refusals have their own files beside this one."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from handler.normalization import MNIST_MEAN, MNIST_STD, normalize
from handler.preprocessing import decode_image, preprocess, to_mnist
from tests import glyphs
from tests.images import encode

# --- output contract --------------------------------------------------------------------------


def test_to_mnist_contract(reference):
    assert reference.shape == (28, 28)
    assert reference.dtype == np.float32
    assert reference.min() >= 0.0 and reference.max() <= 1.0
    assert reference.max() == pytest.approx(1.0)  # ink stretched to full intensity
    assert reference[0].sum() == 0 and reference[:, 0].sum() == 0  # MNIST's empty margin


def test_preprocess_is_normalised_to_mnist(ink, reference):
    data = encode(glyphs.dark_on_light(ink), "PNG")
    out = preprocess(data)
    assert out.shape == (1, 28, 28) and out.dtype == np.float32
    np.testing.assert_allclose(out, normalize(to_mnist(decode_image(data)))[np.newaxis])
    # Background is exactly MNIST's black after normalisation.
    assert out[0, 0, 0] == pytest.approx(-MNIST_MEAN / MNIST_STD)


# --- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [(0, 0), (-25, -10), (30, 15), (-30, 20)])
@pytest.mark.parametrize("size", [(120, 90), (400, 300), (64, 64)])
def test_centre_of_mass_lands_at_14_14_and_longer_side_is_20(size, offset):
    out = to_mnist(
        glyphs.dark_on_light(glyphs.ink_mask(size, (offset[0] * size[0] // 120, offset[1])))
    )
    cy, cx = glyphs.centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5, (cy, cx)
    assert max(glyphs.ink_extent(out, level=0.0)) == 20


def test_aspect_ratio_is_kept_for_a_wide_stroke():
    canvas = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(canvas).rectangle([40, 90, 240, 119], fill=0)  # 201 x 30 bar, ratio ~6.7
    out = to_mnist(canvas)
    height, width = glyphs.ink_extent(out, level=0.0)
    assert width == 20
    assert 2 <= height <= 4  # 20 / 6.7 = 3 px, not stretched to a square


def test_scale_invariance(ink, reference):
    big = Image.fromarray((ink * 255).astype(np.uint8)).resize((480, 360), Image.Resampling.BICUBIC)
    assert glyphs.mean_abs_diff(glyphs.from_file(big), reference) < glyphs.CLOSE_LOSSY


# --- inversion, background, contrast ----------------------------------------------------------


def test_dark_on_light_equals_light_on_dark(ink, reference):
    light_on_dark = glyphs.from_file(Image.fromarray((ink * 255).astype(np.uint8), "L"))
    assert glyphs.mean_abs_diff(light_on_dark, reference) < glyphs.CLOSE
    assert (
        glyphs.mean_abs_diff(glyphs.from_file(glyphs.dark_on_light(ink)), reference) < glyphs.CLOSE
    )


@pytest.mark.parametrize("chalk", [True, False], ids=["chalk-on-blackboard", "pen-on-paper"])
def test_small_digit_on_a_large_noisy_photo_either_polarity(ink, reference, chalk):
    rng = np.random.default_rng(11)
    canvas = np.zeros((600, 800), dtype=np.float32)
    canvas[300:390, 400:520] = ink  # the digit covers ~1 % of the photo
    paper, pen = (40.0, 210.0) if chalk else (215.0, 45.0)
    photo = np.clip(paper + rng.normal(0, 6, canvas.shape) + (pen - paper) * canvas, 0, 255)
    out = glyphs.from_file(Image.fromarray(photo.astype(np.uint8), "L"), "JPEG", quality=90)
    assert glyphs.mean_abs_diff(out, reference) < glyphs.CLOSE_LOSSY


def test_low_contrast_pencil_on_grey_paper_is_stretched(ink, reference):
    out = glyphs.from_file(glyphs.dark_on_light(ink, paper=170, pen=120))
    assert out.max() == pytest.approx(1.0)
    assert glyphs.mean_abs_diff(out, reference) < glyphs.CLOSE


def test_uneven_lighting_and_grain_are_removed(ink, reference):
    rng = np.random.default_rng(7)
    height, width = ink.shape
    ramp = np.linspace(-30, 30, width, dtype=np.float32)[np.newaxis, :]  # shadow across the page
    paper = 215 + ramp + rng.normal(0, 4, size=ink.shape)
    photo = np.clip(paper * (1 - ink) + 40 * ink, 0, 255).astype(np.uint8)
    data = encode(Image.fromarray(photo, "L").convert("RGB"), "JPEG", quality=75)
    out = to_mnist(decode_image(data))
    assert glyphs.mean_abs_diff(out, reference) < 0.05
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
    out = glyphs.from_file(image)
    assert out.shape == (28, 28) and not out.any()


def test_blank_noisy_paper_photo_gives_zeros():
    rng = np.random.default_rng(3)
    paper = np.clip(rng.normal(210, 5, size=(240, 320)), 0, 255).astype(np.uint8)
    data = encode(Image.fromarray(paper, "L"), "JPEG", quality=70)
    assert not to_mnist(decode_image(data)).any()


@pytest.mark.parametrize("margin", [0, 1])
def test_tightly_cropped_bold_digit(margin):
    # A user crops right to a marker-written digit: ink covers ~40 % of the picture and touches
    # the border. Background and noise estimates must not mistake the ink for paper, or the
    # strokes lose their cores.
    glyph = glyphs.ink_mask((120, 90), weight=1 / 5)
    rows, cols = np.flatnonzero(glyph.any(1)), np.flatnonzero(glyph.any(0))
    crop = glyph[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    bold = Image.fromarray((crop * 255).astype(np.uint8)).resize(
        (crop.shape[1] * 4, crop.shape[0] * 4), Image.Resampling.BICUBIC
    )
    framed = np.pad(np.asarray(bold, dtype=np.float32) / 255.0, margin * 4)
    assert framed.mean() > 0.35  # genuinely ink-heavy
    # The same glyph on a roomy sheet, where paper is plentiful everywhere, is the yardstick.
    expected = glyphs.from_file(glyphs.dark_on_light(np.pad(framed, 150)))
    out = glyphs.from_file(glyphs.dark_on_light(framed))
    assert glyphs.mean_abs_diff(out, expected) < glyphs.CLOSE
    assert out.max() == pytest.approx(1.0)


def test_hairline_pen_on_a_large_photo_is_thickened_to_mnist_width(reference):
    # A fine ballpoint line photographed at high resolution: 1/40 of the glyph's size, which
    # would be half a pixel in the 20 px box. It must come out about as bold as MNIST strokes.
    hairline = glyphs.ink_mask((1200, 900), weight=1 / 40)
    out = glyphs.from_file(glyphs.dark_on_light(hairline).convert("RGB"), "JPEG", quality=90)
    assert out.max() == pytest.approx(1.0)
    # Stroke width in the field: inked area over centre-line length (transitions / 2.55).
    mask = (out > 0.5).astype(np.int8)
    transitions = np.count_nonzero(np.diff(mask, axis=0)) + np.count_nonzero(np.diff(mask, axis=1))
    width = 2.55 * mask.sum() / transitions
    assert width >= 1.5, width  # MNIST: median 2.3 px, 1st percentile 1.3 px
    assert (out > 0.5).sum() >= 0.6 * (reference > 0.5).sum()


@pytest.mark.parametrize(
    ("fmt", "tolerance"), [("PNG", glyphs.CLOSE), ("JPEG", glyphs.CLOSE_LOSSY)]
)
def test_speck_of_dust_does_not_stretch_the_box(ink, reference, fmt, tolerance):
    image = glyphs.dark_on_light(ink)
    ImageDraw.Draw(image).rectangle([2, 2, 3, 3], fill=30)  # a 2x2 dot in the corner
    assert glyphs.mean_abs_diff(glyphs.from_file(image, fmt), reference) < tolerance


def test_specks_and_a_pen_tick_on_a_scan_do_not_stretch_the_box(ink, reference):
    rng = np.random.default_rng(5)
    sheet = np.pad(ink, 60)  # a roomy scan: the digit in the middle of a 240x210 sheet
    for y, x in rng.integers(5, 40, size=(4, 2)):  # dust in the top-left margin
        sheet[y : y + 2, x : x + 2] = 1.0
    sheet[-20:-18, 190:198] = 1.0  # a pen tick near the bottom-right corner
    scan = np.clip(glyphs.dark_on_light(sheet) + rng.normal(0, 3, sheet.shape), 0, 255)
    out = glyphs.from_file(Image.fromarray(scan.astype(np.uint8), "L"), "JPEG", quality=85)
    assert glyphs.mean_abs_diff(out, reference) < glyphs.CLOSE_LOSSY

