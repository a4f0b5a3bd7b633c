"""Hostile and unusual input against the real session TorchServe.

Every case of `tests/hostile_corpus.py` (>= 30: empty and random bodies, truncated and corrupt
images, text/HTML/SVG/PDF, broken JSON, a PNG claiming 30000x30000 pixels, a decompression bomb,
an over-size body, 1x1/blank images, 16-bit/palette/1-bit/RGBA/CMYK images, an animated GIF, a
4000x3000 photo) gets either a 4xx with the JSON error body or the right answer. While the whole
corpus runs, no backend worker may die and restart: the worker pids reported by the management
API are the same before and after, and a normal digit right after is still classified correctly.
"""

from __future__ import annotations

import pytest
import requests

from handler.schemas import ErrorResponse, Prediction
from tests.hostile_corpus import TORCHSERVE_DEFAULT_MAX_REQUEST_SIZE, build_corpus
from tests.server_access import (
    configured_max_request_size,
    endpoints,
    max_image_pixels,
    worker_pids,
)

pytestmark = pytest.mark.integration

# Decoding is bounded by the handler, but the slowest legitimate case (the 12 Mpx photo) may
# take a while on a loaded 2-core machine; nothing should take longer than this.
REQUEST_TIMEOUT_S = 60


def _corpus():
    try:
        return build_corpus(
            max_request_size=configured_max_request_size() or TORCHSERVE_DEFAULT_MAX_REQUEST_SIZE,
            max_image_pixels=max_image_pixels(),
        )
    except FileNotFoundError as exc:  # no MNIST here: the legitimate cases can't be built
        pytest.skip(f"hostile corpus needs the MNIST test set: {exc}", allow_module_level=True)


CORPUS = _corpus()


def test_corpus_is_large_and_covers_the_required_kinds():
    """The corpus keeps the breadth the reliability page promises."""
    ids = {case.id for case in CORPUS}
    assert len(CORPUS) >= 30
    required = {
        "empty_body", "random_bytes_1k", "png_truncated_half", "text_plain", "html", "svg", "pdf",
        "json_invalid_base64", "json_wrong_field", "json_malformed", "json_deeply_nested_lists",
        "png_header_30000x30000", "oversize_body", "png_1x1_black", "png_blank_black",
        "png_16bit", "png_palette", "png_1bit", "png_rgba", "jpeg_cmyk", "gif_animated",
        "photo_4000x3000",
    }  # fmt: skip
    assert required <= ids, f"missing cases: {sorted(required - ids)}"


@pytest.fixture(scope="module")
def worker_pids_before(torchserve):
    """Worker pids at the start of the corpus, and the check that they survived it."""
    before = worker_pids(torchserve)
    assert before, "the management API reports no worker for the model"
    yield before


def post_case(server, case) -> requests.Response:
    """Send one corpus case exactly as a client would."""
    ep = endpoints(server)
    headers = {"Content-Type": case.content_type, **ep.inference_headers}
    return requests.post(ep.predict_url, data=case.body, headers=headers, timeout=REQUEST_TIMEOUT_S)


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_hostile_case(torchserve, worker_pids_before, case):
    """A 4xx with the JSON error body, or a correct answer for a legitimate image."""
    resp = post_case(torchserve, case)
    where = f"case {case.id} ({len(case.body)} bytes, {case.content_type}): HTTP {resp.status_code}"
    if case.expect == "reject":
        assert 400 <= resp.status_code < 500, f"{where}, expected 4xx: {resp.text[:300]}"
        if case.status is not None:
            assert resp.status_code == case.status, f"{where}, expected {case.status}"
        if resp.status_code == 413 and not resp.content:
            # TorchServe 0.12.0's frontend (Netty's HttpObjectAggregator) refuses an over-size
            # body before any handler runs, with an empty body: the status is the whole answer.
            # (Final release: no upstream fix; docs/reliability.md lists it.)
            return
        error = ErrorResponse.model_validate_json(resp.content)
        assert error.code == resp.status_code, f"{where}: body says {error.code}"
        assert error.message, f"{where}: the error says nothing about what was wrong"
    else:
        assert resp.status_code == 200, f"{where}, expected 200: {resp.text[:300]}"
        answer = Prediction.model_validate_json(resp.content)
        if case.expect == "digit":
            assert answer.digit == case.label, f"{where}: got {answer.digit}, not {case.label}"


def test_no_worker_restarted_and_server_still_answers(torchserve, worker_pids_before):
    """After the whole corpus (this test runs last): same workers, right digit."""
    control = next(case for case in CORPUS if case.id == "png_plain_mnist")
    png, label = control.body, control.label
    ep = endpoints(torchserve)
    resp = requests.post(
        ep.predict_url,
        data=png,
        headers={"Content-Type": "image/png", **ep.inference_headers},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert resp.status_code == 200, resp.text[:300]
    assert Prediction.model_validate_json(resp.content).digit == label
    assert worker_pids(torchserve) == worker_pids_before, "a worker died during the corpus"
