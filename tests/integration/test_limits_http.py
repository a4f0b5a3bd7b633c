"""The request limits and the per-request routing, against the real session TorchServe (server-
side batching on: batchSize 16, maxBatchDelay 20 ms, so concurrent requests share a batch).

- `POST /explanations/lenet` is refused per request (404 `ExplanationsUnavailable`), and the
  prediction requests batched with it keep their 200 and their digit: counted over concurrent
  mixed traffic;
- every answer of the hostile corpus is small, whatever its request held, and each limit's
  refusal names the limit and its value.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from deploy.keys import auth_headers
from handler import MODEL_NAME, limits
from handler.schemas import ErrorResponse, Prediction
from tests.hostile_corpus import build_corpus

pytestmark = pytest.mark.integration

ANSWER_LIMIT = 32 * 1024  # the largest answer: 64 slots of ~400 bytes


def _post(server, url: str, body: bytes, content_type: str) -> requests.Response:
    headers = {"Content-Type": content_type, **auth_headers(server.inference_token)}
    return requests.post(url, data=body, headers=headers, timeout=60)


def test_explanations_never_change_the_predictions_batched_with_them(torchserve, mnist_png):
    """400 requests from 16 threads, every 5th an explanation (in random order): each
    explanation gets its own 404, every prediction its 200 and its digit; no worker restart."""
    png, label = mnist_png
    explain_url = f"{torchserve.inference_url}/explanations/{MODEL_NAME}"
    kinds = ["explain" if i % 5 == 0 else "predict" for i in range(400)]
    random.Random(17).shuffle(kinds)
    before = torchserve.worker_pids()

    def send(kind: str) -> tuple[str, int, str]:
        url = explain_url if kind == "explain" else torchserve.predict_url
        resp = _post(torchserve, url, png, "image/png")
        return kind, resp.status_code, resp.text

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, kinds))
    counts = Counter((kind, status) for kind, status, _ in results)
    print(f"statuses over {len(results)} mixed requests: {dict(counts)}")
    assert counts == {("predict", 200): kinds.count("predict"),
                      ("explain", 404): kinds.count("explain")}, counts  # fmt: skip
    for kind, _, text in results:
        if kind == "predict":
            assert Prediction.model_validate_json(text).digit == label
        else:
            assert ErrorResponse.model_validate_json(text).type == "ExplanationsUnavailable"
    assert torchserve.worker_pids() == before


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
