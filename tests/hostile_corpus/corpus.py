"""`build_corpus`: every case of every kind, in a stable order with unique ids."""

from __future__ import annotations

import numpy as np

from samples.digits import encode_png
from tests.hostile_corpus.case import DIGIT_INDICES, Case
from tests.hostile_corpus.encoding import upscale
from tests.hostile_corpus.legitimate import (
    add_contract_cases,
    add_digit_cases,
    add_no_digit_cases,
    add_photo_case,
)
from tests.hostile_corpus.malformed import (
    add_broken_image_cases,
    add_json_cases,
    add_not_image_cases,
    add_oversize_case,
)
from tests.hostile_corpus.work_limits import add_limit_cases
from tests.images import encode
from tests.server_access import TORCHSERVE_DEFAULT_MAX_REQUEST_SIZE


def build_corpus(
    images: np.ndarray,
    labels: np.ndarray,
    max_request_size: int = TORCHSERVE_DEFAULT_MAX_REQUEST_SIZE,
    max_image_pixels: int | None = None,
) -> list[Case]:
    """Every hostile and unusual case, in a stable order with unique ids.

    `images`, `labels`: the MNIST test set (uint8 `(N, 28, 28)`, white ink on black) the
    legitimate cases are made of. `max_request_size` is the server's body limit (the over-size
    case sends one byte more); `max_image_pixels` is the handler's decode limit: the 4000x3000
    photo is a legitimate image that must be answered when it is within the limit, and refused
    (4xx) otherwise.
    """
    digit = {i: (images[i], int(labels[i])) for i in DIGIT_INDICES}
    cases: list[Case] = []

    def add(*args, **kwargs) -> None:
        cases.append(Case(*args, **kwargs))

    px0, label0 = digit[0]
    plain_png = encode_png(px0)
    jpeg = encode(upscale(px0, 280).convert("RGB"), "JPEG", quality=90)

    # What has no usable image, refused; then real images, answered; then work multipliers and
    # client forms. The order is the corpus's: ids and results files list cases in it.
    add_not_image_cases(add, plain_png)
    add_broken_image_cases(add, plain_png, jpeg)
    add_json_cases(add)
    add_oversize_case(add, max_request_size)
    add_no_digit_cases(add)
    add_digit_cases(add, digit, plain_png, jpeg)
    add_photo_case(add, px0, label0, max_request_size, max_image_pixels)
    add_limit_cases(add, plain_png, label0)
    add_contract_cases(add, plain_png, label0)

    ids = [case.id for case in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise AssertionError(f"duplicate corpus ids: {sorted(duplicates)}")
    return cases
