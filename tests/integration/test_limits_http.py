"""The request limits against the real session TorchServe: every answer of the hostile corpus is
small, whatever its request held, and each limit's refusal names the limit and its value.

The per-request routing of explanations and predictions batched together is tested in
test_explanations_http.py.
"""

from __future__ import annotations

import re

import pytest
import requests

from deploy.keys import auth_headers
from handler import limits
from handler.schemas import ErrorResponse
from tests.hostile_corpus import build_corpus

pytestmark = pytest.mark.integration

ANSWER_LIMIT = 32 * 1024  # the largest answer: 64 slots of ~400 bytes


def _post(server, url: str, body: bytes, content_type: str) -> requests.Response:
    headers = {"Content-Type": content_type, **auth_headers(server.inference_token)}
    return requests.post(url, data=body, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def corpus(mnist_test):
    images, labels = mnist_test
    return build_corpus(images, labels, max_image_pixels=limits.MAX_IMAGE_PIXELS)


def test_every_answer_is_bounded_and_limits_name_themselves(torchserve, corpus):
    """Whatever a request holds (160,000 entries, 20,000 parts, 10 KB names), its answer stays
    under 32 KB; a 413 from the handler says which limit and its value."""
    sizes = {}
    for case in corpus:
        if case.id == "oversize_body":  # the frontend's own 413, empty body
            continue
        resp = _post(torchserve, torchserve.predict_url, case.body, case.content_type)
        sizes[case.id] = len(resp.content)
        assert len(resp.content) <= ANSWER_LIMIT, f"{case.id}: {len(resp.content)} bytes"
        if resp.status_code == 413:
            error = ErrorResponse.model_validate_json(resp.content)
            assert error.type == "RequestTooLarge", error
            assert "limit" in error.message and re.search(r"\d", error.message), error.message
    largest = max(sizes, key=sizes.get)
    print(f"largest answer: {largest} ({sizes[largest]} bytes) over {len(sizes)} cases")
