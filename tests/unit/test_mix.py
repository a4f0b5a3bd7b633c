"""The realistic traffic mix (`samples/mix.py`): deterministic, its kinds and sizes as specified,
request packing within the handler's limits, the folder writer, and labels a trained model
agrees with."""

from __future__ import annotations

import csv
import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from handler import limits
from samples import mix

SEED = 7


@pytest.fixture(scope="module")
def items(mnist_test) -> list[mix.MixItem]:
    """A 120-item mix: every kind, two of them 12 MP photos (items 26 and 93)."""
    return mix.build_mix(120, SEED, digits=mnist_test)


def of_kind(items, kind):
    return [item for item in items if item.kind == kind]


def test_same_seed_same_bytes_and_a_prefix_is_stable(mnist_test, items):
    again = mix.build_mix(30, SEED, digits=mnist_test)
    assert [(i.kind, i.label, i.data) for i in again] == [(i.kind, i.label, i.data)
                                                          for i in items[:30]]  # fmt: skip
    other = mix.build_mix(30, SEED + 1, digits=mnist_test)
    assert [i.data for i in other] != [i.data for i in again]


def test_labels_are_the_mnist_labels(mnist_test, items):
    _, labels = mnist_test
    assert all(item.label == int(labels[item.mnist_index]) for item in items)


def test_kind_schedule_follows_the_shares():
    counts = Counter(mix.kind_schedule(2000))
    for kind, share in mix.SHARES.items():
        assert abs(counts[kind] - share * 2000) <= 1, (kind, counts)
    assert set(mix.kind_schedule(8)) == {"mnist", "scan", "photo"}  # 12 MP only every ~67 items
    assert set(mix.kind_schedule(40, ["scan", "photo12mp"])) == {"scan", "photo12mp"}
    assert mix.kind_schedule(3, ["photo12mp"]) == ["photo12mp"] * 3
    with pytest.raises(ValueError, match="unknown kinds"):
        mix.kind_schedule(3, ["tiff"])


def test_mnist_items_are_28x28_pngs(items):
    assert of_kind(items, "mnist")
    assert all(i.fmt == "png" and i.size == (28, 28) for i in of_kind(items, "mnist"))


def test_scans_are_small_png_or_jpeg_with_dark_grounds_and_transparency(mnist_test):
    scans = mix.build_mix(80, SEED, ["scan"], digits=mnist_test)
    low, high = mix.SCAN_SIDE
    assert all(low <= min(i.size) and max(i.size) <= high for i in scans)
    assert {i.fmt for i in scans} == {"png", "jpg"}
    images = [Image.open(io.BytesIO(i.data)) for i in scans]
    assert any(im.mode == "RGBA" for im in images), "no drawing on a transparent canvas"
    dark = [im for im in images if np.asarray(im.convert("L")).mean() < 100]
    assert dark, "no light-on-dark scan"


def test_photos_are_1_to_3_megapixel_jpegs(items):
    photos = of_kind(items, "photo")
    assert photos
    low, high = mix.PHOTO_MEGAPIXELS
    for photo in photos:
        width, height = photo.size
        assert photo.fmt == "jpg" and low * 0.99 <= width * height / 1e6 <= high * 1.01


def test_12mp_photos_are_4000x3000_jpegs_that_fit_the_request_limit(items):
    photos = of_kind(items, "photo12mp")
    assert len(photos) == 2
    for photo in photos:
        assert photo.fmt == "jpg" and sorted(photo.size) == [3000, 4000]
        assert len(photo.data) <= mix.PHOTO_MAX_BYTES  # under the server's body limit too
        assert photo.cost <= limits.MAX_REQUEST_PIXELS // 3  # three fit in one request


def test_pack_respects_the_image_count_and_the_request_pixel_cost(items):
    costs = [item.cost for item in items]
    groups = mix.pack(costs, max_images=4)
    assert [i for g in groups for i in g] == list(range(len(items)))
    for group in groups:
        assert len(group) <= 4
        assert sum(costs[i] for i in group) <= limits.MAX_REQUEST_PIXELS
    assert mix.pack([], 4) == []


def test_write_folder_writes_files_and_labels(tmp_path, items):
    written = mix.write_folder(tmp_path, items[:10])
    with open(tmp_path / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["label"]) for r in rows] == [i.label for i in items[:10]]
    assert [(tmp_path / r["path"]).read_bytes() for r in rows] == [i.data for i in items[:10]]
    assert written == sum(len(i.data) for i in items[:10])


def test_the_trained_model_gets_most_of_each_kind_right(trained_model, items):
    from handler.predictor import Predictor

    answers = Predictor.load(trained_model, "cpu").predict([i.data for i in items])
    for kind in mix.KINDS:
        pairs = [(i, a) for i, a in zip(items, answers, strict=True) if i.kind == kind]
        right = sum(getattr(a, "digit", None) == i.label for i, a in pairs)
        assert right >= 0.9 * len(pairs), f"{kind}: {right} of {len(pairs)} right"


def test_a_pool_of_the_mix_draws_requests_within_the_limits_and_keeps_kinds(tmp_path, items):
    import random

    from samples.pool import ImagePool

    pool = ImagePool([i.data for i in items], [i.label for i in items],
                     [i.mnist_index for i in items], kinds=[i.kind for i in items])  # fmt: skip
    loaded = ImagePool.load(pool.save(tmp_path / "pool.json"))
    assert loaded.kinds == pool.kinds and loaded.images == pool.images
    rng, max_bytes = random.Random(0), 3_000_000
    for _ in range(200):
        picks = pool.pick(rng, 8, max_bytes)
        assert 1 <= len(picks) <= 8 and len(set(picks)) == len(picks)
        assert sum(pool.costs[i] for i in picks) <= limits.MAX_REQUEST_PIXELS
        assert sum(len(pool.b64[i]) for i in picks) <= max_bytes
    # An image whose base64 text alone is over the body limit is never drawn for a JSON body.
    largest = max(range(len(pool)), key=lambda i: len(pool.b64[i]))
    tight = len(pool.b64[largest]) - 1
    assert all(largest not in pool.pick(rng, 8, tight) for _ in range(200))
    photos = pool.subset("photo12mp")
    assert photos.kinds == ["photo12mp"] * 2 and set(photos.images) <= set(pool.images)
