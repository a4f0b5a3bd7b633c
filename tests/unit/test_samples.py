"""The real-world set's generator: deterministic, balanced, disjoint halves, decodable uploads."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from handler.preprocessing import decode_image, preprocess, to_mnist
from samples import distort, fonts, realworld, render, strokes


def test_items_are_deterministic():
    for half, index in (("val", 0), ("val", 37), ("test", 11), ("test", 123)):
        first = realworld.render_item(half, index)
        again = realworld.render_item(half, index)
        assert first == again
    # Another seed gives other images.
    assert realworld.render_item("val", 0, seed=1)[0] != realworld.render_item("val", 0)[0]


def test_parallel_build_equals_serial_build():
    serial = realworld.build("test", 220, workers=1)
    parallel = realworld.build("test", 220, workers=2)
    assert serial.uploads == parallel.uploads and serial.items == parallel.items


def test_halves_share_no_font_no_writer_and_no_image():
    val_fonts = {f.name for f in fonts.fonts_for("val")}
    test_fonts = {f.name for f in fonts.fonts_for("test")}
    assert val_fonts and test_fonts and not val_fonts & test_fonts
    assert val_fonts | test_fonts == {f.name for f in fonts.FONTS}

    plans = {
        half: [realworld.item_plan(half, i) for i in range(realworld.DEFAULT_COUNT)]
        for half in realworld.HALVES
    }
    used_fonts = {h: {p["font"] for p in plans[h] if "font" in p} for h in plans}
    writers = {h: {p["writer"] for p in plans[h] if "writer" in p} for h in plans}
    assert used_fonts["val"] == val_fonts and used_fonts["test"] == test_fonts
    assert not writers["val"] & writers["test"]
    # Training writers start far above both halves' writers.
    assert max(writers["val"] | writers["test"]) < realworld.TRAIN_WRITER_BASE
    assert all(realworld.TRAIN_WRITER_BASE not in r for r in realworld.WRITER_IDS.values())

    val = realworld.build("val", 100, workers=1)
    test = realworld.build("test", 100, workers=1)
    assert not {i["sha256"] for i in val.items} & {i["sha256"] for i in test.items}


def test_every_block_of_100_is_balanced():
    plans = [realworld.item_plan("val", i) for i in range(100, 200)]
    labels = np.bincount([p["label"] for p in plans], minlength=10)
    kinds = [p["source_kind"] for p in plans]
    presentations = [p["presentation"] for p in plans]
    assert labels.tolist() == [10] * 10
    assert kinds.count("font") == kinds.count("stroke") == 50
    assert {presentations.count(k) for k in render.PRESENTATIONS} == {20}


def test_metadata_describes_each_image():
    dataset = realworld.build("val", 40, workers=1)
    for data, item in zip(dataset.uploads, dataset.items, strict=True):
        assert {"label", "source", "source_kind", "style", "presentation", "params"} <= set(item)
        assert item["source"] == ("stroke" if item["source_kind"] == "stroke" else
                                  f"font:{item['font']}")  # fmt: skip
        image = Image.open(io.BytesIO(data))
        assert image.format.lower().replace("jpeg", "jpg") == item["format"]
        if item["source_kind"] == "stroke":
            assert item["style"] in strokes.VARIANTS[item["label"]]


def test_cache_serves_prefixes_and_extends_smaller_builds(tmp_path):
    small = realworld.load("val", 30, cache_dir=tmp_path, workers=1)
    inputs = realworld.model_inputs(small)
    assert inputs.shape == (30, 1, 28, 28)
    bigger = realworld.load("val", 50, cache_dir=tmp_path, workers=1)
    assert bigger.uploads[:30] == small.uploads
    assert bigger.uploads == realworld.build("val", 50, workers=1).uploads
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == [f"val-50-seed{realworld.DEFAULT_SEED}-{realworld.fingerprint()}"]
    # The prefix's preprocessed inputs came along and were extended, not recomputed wrongly.
    np.testing.assert_array_equal(realworld.model_inputs(bigger)[:30], inputs)
    again = realworld.load("val", 20, cache_dir=tmp_path, workers=1)
    assert again.uploads == small.uploads[:20]
    index = json.loads((tmp_path / folders[0] / "index.json").read_text())
    assert len(index["items"]) == 50 and index["fingerprint"] == realworld.fingerprint()


@pytest.mark.parametrize("kind", render.PRESENTATIONS)
def test_every_presentation_is_an_upload_preprocessing_reads(kind):
    writer = strokes.Writer.from_id(5)
    for label in (1, 4, 7):
        rng = np.random.default_rng([label, 99])
        mask, _ = writer.draw(label, rng)
        data = render.present(mask, kind, rng)
        image = decode_image(data)
        digit = to_mnist(image)
        assert digit.shape == (28, 28) and digit.max() > 0.9  # the ink was found
        assert preprocess(data).shape == (1, 28, 28)
    if kind == "dark":
        gray = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
        assert np.median(gray) < 128  # light ink on a dark ground
    if kind == "lowres":
        assert max(Image.open(io.BytesIO(data)).size) <= 14 + 2 * 8 + 20


def test_unknown_presentation_is_refused():
    with pytest.raises(ValueError, match="unknown presentation"):
        render.present(np.ones((10, 5)), "fax", np.random.default_rng(0))


def test_every_stroke_variant_draws_a_digit():
    rng = np.random.default_rng(0)
    writer = strokes.Writer.from_id(1)
    for label, variants in strokes.VARIANTS.items():
        for name in variants:
            forced = strokes.Writer(**{**vars(writer), "preferred": {label: name}, "loyalty": 1.0})
            mask, style = forced.draw(label, rng)
            assert style == name
            assert mask.ndim == 2 and mask.shape[0] >= 90 and mask.max() > 0.9, name


def test_writers_are_stable_and_differ():
    assert strokes.Writer.from_id(42) == strokes.Writer.from_id(42)
    assert strokes.Writer.from_id(42) != strokes.Writer.from_id(43)


def test_fonts_and_their_licences_are_shipped():
    for font in fonts.FONTS:
        assert font.path.is_file(), font.path
        assert (fonts.FONT_DIR / "licenses" / f"{font.package}.copyright").is_file()
        for label in range(10):
            glyph = fonts.glyph(font.file, label)
            assert glyph.shape[0] > 20 and glyph.max() > 0.9
    total = sum(p.stat().st_size for p in fonts.FONT_DIR.rglob("*") if p.is_file())
    assert total < 3_000_000  # a few MB at most in the repository


def test_change_width_thickens_and_thins():
    mask = np.zeros((40, 40), np.float32)
    mask[5:35, 17:23] = 1.0  # a 6 px stroke
    thicker, thinner = np.zeros_like(mask), np.zeros_like(mask)
    thicker[3:37, 15:25] = 1.0  # 2 px more on every side
    thinner[6:34, 18:22] = 1.0  # 1 px less on every side
    np.testing.assert_array_equal(distort.change_width(mask, 2), thicker)
    np.testing.assert_array_equal(distort.change_width(mask, -1), thinner)
    # The width estimate (2 area / perimeter) follows: w * L / (w + L) for a w x L bar.
    assert distort.stroke_width(mask) == pytest.approx(6 * 30 / 36)


def test_warp_slants_the_top_to_the_right():
    mask = np.zeros((60, 20), np.float32)
    mask[:, 8:12] = 1.0
    slanted = distort.warp(mask, np.random.default_rng(0), slant_deg=30)
    top = np.flatnonzero(slanted[2] > 0.5).mean()
    bottom = np.flatnonzero(slanted[-3] > 0.5).mean()
    assert top - bottom > 0.4 * slanted.shape[0] * np.tan(np.radians(30))
