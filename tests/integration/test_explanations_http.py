"""`POST /explanations/lenet` on the real session TorchServe (server-side batching on: batchSize
16, maxBatchDelay 20 ms, so concurrent requests share a batch).

- each input form answers 200 with schema-valid explanations (`handler.schemas.Explanation`,
  `MultiExplanation`), the model headers, and the digit `/predictions` gives;
- bad input gets the 4xx of predictions, word for word; an explanations request over its image
  limit gets 413 naming it;
- explanations and predictions sent together, good and bad, from 16 threads: every request gets
  its own status and its own digit, counted; no worker restarts (the session server has no
  explanation budget, so every status follows from the request alone);
- with the budget spent, explanations get 429 and predictions carry on; the page's app then
  answers with the prediction alone (a private server with a tiny budget).
"""

from __future__ import annotations

import base64
import io
import json
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from client import multipart_body
from deploy.keys import auth_headers
from handler import MODEL_NAME, limits
from handler.schemas import (
    MODEL_NAME_HEADER,
    ErrorResponse,
    Explanation,
    ImageError,
    MultiExplanation,
    Prediction,
    parse_explanation,
    parse_response,
)
from samples.digits import encode_png
from tests.web_app import WebApp

pytestmark = pytest.mark.integration
TIMEOUT = 60


def post(server, url: str, body: bytes, content_type: str) -> requests.Response:
    headers = {"Content-Type": content_type, **auth_headers(server.inference_token)}
    return requests.post(url, data=body, headers=headers, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def digits(mnist_test) -> list[tuple[bytes, int]]:
    images, labels = mnist_test
    return [(encode_png(images[i]), int(labels[i])) for i in range(8)]


def test_one_image_answers_its_explanation(torchserve, digits, mnist_test):
    png, label = digits[0]
    resp = post(torchserve, torchserve.explain_url, png, "image/png")
    assert resp.status_code == 200, resp.text
    assert resp.headers[MODEL_NAME_HEADER] == MODEL_NAME
    explanation = parse_explanation(resp.content)
    assert isinstance(explanation, Explanation)
    assert explanation.prediction.digit == label
    predicted = parse_response(post(torchserve, torchserve.predict_url, png, "image/png").content)
    np.testing.assert_allclose(explanation.prediction.probabilities, predicted.probabilities,
                               atol=1e-5)  # fmt: skip
    # An MNIST digit is already what the model sees: the PNG is the test image itself.
    shown = np.asarray(Image.open(io.BytesIO(explanation.input_bytes())))
    assert np.array_equal(shown, mnist_test[0][0])
    attribution = np.asarray(explanation.attribution)
    assert attribution.shape == (28, 28) and np.isfinite(attribution).all()
    assert (attribution[shown == 0] == 0).all() and attribution.max() > 0


def test_several_images_in_every_form_answer_in_input_order(torchserve, digits):
    pngs = [png for png, _ in digits[:3]]
    labels = [label for _, label in digits[:3]]
    multipart, ctype = multipart_body([pngs[0], b"not an image", pngs[1]])
    as_json = {"images": [base64.b64encode(p).decode() for p in pngs]}
    for body, content_type, expected in (
        (multipart, ctype, [labels[0], None, labels[1]]),
        (json.dumps(as_json).encode(), "application/json", labels),
    ):
        resp = post(torchserve, torchserve.explain_url, body, content_type)
        assert resp.status_code == 200, resp.text
        answer = parse_explanation(resp.content)
        assert isinstance(answer, MultiExplanation)
        got = [None if isinstance(e, ImageError) else e.prediction.digit
               for e in answer.explanations]  # fmt: skip
        assert got == expected


@pytest.mark.parametrize(
    ("body", "content_type", "status", "type_"),
    [
        (b"Shopping list: milk, eggs.", "application/octet-stream", 400, "InvalidImage"),
        (b"", "image/png", 400, "InvalidRequest"),
        (b"a=1&b=2", "application/x-www-form-urlencoded", 400, "InvalidRequest"),
        (b'{"images": []}', "application/json", 400, "InvalidRequest"),
    ],
    ids=["text", "empty", "form-urlencoded", "no-images"],
)
def test_bad_input_gets_the_4xx_of_predictions(torchserve, body, content_type, status, type_):
    explained = post(torchserve, torchserve.explain_url, body, content_type)
    predicted = post(torchserve, torchserve.predict_url, body, content_type)
    assert explained.status_code == predicted.status_code == status, explained.text
    error = ErrorResponse.model_validate_json(explained.content)
    assert error.type == type_
    assert explained.json() == predicted.json()


def test_an_explanations_request_over_its_image_limit_is_413(torchserve, digits):
    pngs = [png for png, _ in digits] * 2
    body, ctype = multipart_body(pngs[: limits.MAX_IMAGES_PER_EXPLANATION + 1])
    resp = post(torchserve, torchserve.explain_url, body, ctype)
    assert resp.status_code == 413, resp.text
    error = ErrorResponse.model_validate_json(resp.content)
    assert error.type == "RequestTooLarge"
    assert f"{limits.MAX_IMAGES_PER_EXPLANATION} images per explanations request" in error.message
    body, ctype = multipart_body(pngs[: limits.MAX_IMAGES_PER_EXPLANATION])
    resp = post(torchserve, torchserve.explain_url, body, ctype)
    assert resp.status_code == 200 and len(resp.content) < 80_000


def test_explanations_and_predictions_batched_together_keep_their_own_answers(torchserve,
                                                                              digits):  # fmt: skip
    """480 requests from 16 threads in random order: good and bad, predictions and explanations.
    Each gets the status of its own kind and content, and a good one its own digit."""
    kinds = [(kind, good) for kind in ("predict", "explain") for good in (True, False)]
    plan = [(kind, good, i % len(digits)) for i, (kind, good) in
            enumerate(kinds[i % 4] for i in range(480))]  # fmt: skip
    random.Random(16).shuffle(plan)
    before = torchserve.worker_pids()

    def send(item) -> tuple[str, bool, int, int, bytes]:
        kind, good, index = item
        png, label = digits[index]
        url = torchserve.explain_url if kind == "explain" else torchserve.predict_url
        resp = post(torchserve, url, png if good else b"broken" + png[:40], "image/png")
        return kind, good, label, resp.status_code, resp.content

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, plan))
    counts = Counter((kind, good, status) for kind, good, _, status, _ in results)
    print(f"statuses over {len(results)} mixed requests: {dict(counts)}")
    assert counts == {("predict", True, 200): 120, ("predict", False, 400): 120,
                      ("explain", True, 200): 120, ("explain", False, 400): 120}, counts
    wrong = 0
    for kind, good, label, _, content in results:
        if not good:
            assert ErrorResponse.model_validate_json(content).type == "InvalidImage"
        elif kind == "explain":
            explanation = parse_explanation(content)
            assert isinstance(explanation, Explanation)
            wrong += explanation.prediction.digit != label
        else:
            wrong += Prediction.model_validate_json(content).digit != label
    assert wrong == 0, f"{wrong} wrong digits"
    assert torchserve.worker_pids() == before


def test_spent_explanation_budget_answers_429_and_predictions_carry_on(torchserve_factory,
                                                                      digits, tmp_path):
    """A server whose explanations may use 0.01 % of the worker: the saved-up burst is admitted,
    then explanations get 429 `ExplanationsBusy` with `Retry-After` while the predictions beside
    them all keep 200 and their digit; the page's app then answers a drawing with its
    prediction alone and says why the panels are empty."""
    server = torchserve_factory(model_config_overrides={"explain_share": 0.0001})
    before = server.worker_pids()
    png, label = digits[0]
    stop = time.monotonic() + 3

    def stream(kind: str) -> list[tuple[int, dict, bytes]]:
        url = server.explain_url if kind == "explain" else server.predict_url
        got = []
        while time.monotonic() < stop:
            resp = post(server, url, png, "image/png")
            got.append((resp.status_code, dict(resp.headers), resp.content))
        return got

    with ThreadPoolExecutor(8) as pool:
        explained = [pool.submit(stream, "explain") for _ in range(4)]
        predicted = [pool.submit(stream, "predict") for _ in range(4)]
        explained = [r for f in explained for r in f.result()]
        predicted = [r for f in predicted for r in f.result()]
    statuses = Counter(status for status, _, _ in explained)
    print(f"explanations {dict(statuses)}, predictions "
          f"{dict(Counter(s for s, _, _ in predicted))}")  # fmt: skip
    assert set(statuses) == {200, 429} and statuses[429] > statuses[200] > 0, statuses
    for status, headers, content in explained:
        if status == 429:
            assert ErrorResponse.model_validate_json(content).type == "ExplanationsBusy"
            assert int(headers["Retry-After"]) >= 1
    assert {status for status, _, _ in predicted} == {200}
    assert all(Prediction.model_validate_json(c).digit == label for _, _, c in predicted)
    assert server.worker_pids() == before

    app = WebApp(server.inference_url, tmp_path / "web.log",
                 env={"LENET_KEY_FILE": str(server.key_file), "LENET_INFERENCE_TOKEN": None})
    with app:
        deadline = time.monotonic() + 30
        while requests.get(f"{app.url}/api/health", timeout=10).json().get(
                "explanations") != "available":  # fmt: skip
            assert time.monotonic() < deadline, "the app never asked about explanations"
            time.sleep(0.2)
        answer = requests.post(f"{app.url}/api/predict", data=png, timeout=30,
                               headers={"Content-Type": "image/png"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["prediction"]["digit"] == label and body["explanation"] is None
    assert "busy with other explanations" in body["explanation_note"]
