"""The hostile-input corpus itself (`tests/hostile_corpus/`): the breadth the reliability page
promises, and legitimate cases that really are the digits they claim to be."""

from __future__ import annotations

import pytest

from handler.preprocessing import MAX_IMAGE_PIXELS, InvalidImage, preprocess
from tests.hostile_corpus import build_corpus

REQUIRED = {
    "empty_body", "random_bytes_1k", "png_truncated_half", "text_plain", "html", "svg", "pdf",
    "json_invalid_base64", "json_wrong_field", "json_malformed", "json_deeply_nested_lists",
    "png_header_30000x30000", "oversize_body", "png_1x1_black", "png_blank_black",
    "png_16bit", "png_palette", "png_1bit", "png_rgba", "jpeg_cmyk", "gif_animated",
    "photo_4000x3000",
}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(mnist_test):
    images, labels = mnist_test
    return build_corpus(images, labels, max_image_pixels=MAX_IMAGE_PIXELS)


def test_corpus_is_large_and_covers_the_required_kinds(corpus):
    ids = [case.id for case in corpus]
    assert len(ids) == len(set(ids)) >= 30
    assert REQUIRED <= set(ids), f"missing cases: {sorted(REQUIRED - set(ids))}"


def test_raw_image_cases_decode_or_fail_as_they_claim(corpus):
    """Offline, through the handler's own preprocessing: a 'digit' or 'prediction' case with a
    raw image body decodes, and a rejected raw image fails as an InvalidImage (JSON, form and
    over-size cases are the server's business and are left to the integration test)."""
    raw = [c for c in corpus if c.content_type.startswith("image/") and c.status is None]
    assert len(raw) >= 20
    for case in raw:
        if case.expect == "reject":
            with pytest.raises(InvalidImage):
                preprocess(case.body)
        else:
            assert preprocess(case.body).shape == (1, 28, 28), case.id
