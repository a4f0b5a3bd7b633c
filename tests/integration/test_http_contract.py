"""The HTTP contract of the real TorchServe serving lenet.mar (session server from conftest).

Every body is validated against `handler.schemas`; expected digits are compared with the MNIST
label or with the answer the same image gets on its own, never with typed-in numbers.
"""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from deploy.keys import auth_headers
from handler import MODEL_NAME
from handler.schemas import (
    MODEL_NAME_HEADER,
    MODEL_VERSION_HEADER,
    ErrorResponse,
    ImageError,
    MultiPrediction,
    Prediction,
    parse_response,
)
from samples.digits import encode_png
from tests.server_access import max_request_size

TIMEOUT = 30


def post(server, token="default", **kwargs) -> requests.Response:
    token = server.inference_token if token == "default" else token
    headers = {**auth_headers(token), **kwargs.pop("headers", {})}
    return requests.post(server.predict_url, headers=headers, timeout=TIMEOUT, **kwargs)


def ok_prediction(resp: requests.Response) -> Prediction:
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = parse_response(resp.content)
    assert isinstance(body, Prediction), body
    return body


def same_answer(a: Prediction, b: Prediction) -> bool:
    """Equal up to float rounding: a batched forward pass may differ in the last bits."""
    return a.digit == b.digit and all(
        abs(x - y) < 1e-5 for x, y in zip(a.probabilities, b.probabilities, strict=True)
    )


def bad_request(resp: requests.Response, status: int = 400) -> ErrorResponse:
    assert resp.status_code == status, resp.text
    body = parse_response(resp.content)
    assert isinstance(body, ErrorResponse), body
    assert body.code == status
    return body


@pytest.fixture(scope="module")
def digits(mnist_test):
    """Eight test digits the served model classifies correctly, as (png, label)."""
    images, labels = mnist_test
    return [(encode_png(images[i]), int(labels[i])) for i in range(8)]


def served_model(server) -> dict:
    """The management API's description of the served model."""
    (model,) = requests.get(f"{server.management_url}/models/{MODEL_NAME}", timeout=TIMEOUT,
                            headers=auth_headers(server.management_token)).json()  # fmt: skip
    return model


# Authorisation (no key, wrong key, management key) and the disabled model API are checked in
# tests/integration/test_security.py against the same session server; that the worker runs the
# archive's own handler code, in tests/integration/test_server.py.


def test_every_answer_names_the_served_model_version(torchserve, digits):
    """The handler's headers pass TorchServe's frontend, and match the management API."""
    model = served_model(torchserve)
    for resp in (post(torchserve, data=digits[0][0], headers={"Content-Type": "image/png"}),
                 post(torchserve, data=b"not an image", headers={"Content-Type": "image/png"})):
        assert resp.status_code in (200, 400), resp.text
        assert resp.headers[MODEL_NAME_HEADER] == MODEL_NAME
        assert resp.headers[MODEL_VERSION_HEADER] == model["modelVersion"] != ""


# --- input formats ----------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream"])
def test_raw_body(torchserve, digits, content_type):
    png, label = digits[0]
    answer = ok_prediction(post(torchserve, data=png, headers={"Content-Type": content_type}))
    assert answer.digit == label
    assert answer.confidence == max(answer.probabilities)


def test_curl_upload_file_put(torchserve, digits):
    """`curl -T digit.png URL` sends a PUT with the raw bytes."""
    png, label = digits[1]
    resp = requests.put(torchserve.predict_url, data=png, timeout=TIMEOUT,
                        headers=auth_headers(torchserve.inference_token))  # fmt: skip
    assert ok_prediction(resp).digit == label


def test_multipart_several_files_keep_order(torchserve, digits):
    files = {f"f{i}": (f"d{i}.png", png, "image/png") for i, (png, _) in enumerate(digits)}
    resp = post(torchserve, files=files)
    assert resp.status_code == 200, resp.text
    body = parse_response(resp.content)
    assert isinstance(body, MultiPrediction)
    assert [p.digit for p in body.predictions] == [label for _, label in digits]


def test_multipart_single_file_is_a_plain_prediction(torchserve, digits):
    png, label = digits[2]
    assert ok_prediction(post(torchserve, files={"image": ("x.png", png)})).digit == label


def test_json_single_and_multi(torchserve, digits):
    b64 = [base64.b64encode(png).decode() for png, _ in digits[:3]]
    single = ok_prediction(post(torchserve, json={"image": b64[0]}))
    assert single.digit == digits[0][1]
    resp = post(torchserve, json={"images": b64})
    assert resp.status_code == 200, resp.text
    multi = parse_response(resp.content)
    assert isinstance(multi, MultiPrediction)
    assert [p.digit for p in multi.predictions] == [label for _, label in digits[:3]]
    assert same_answer(multi.predictions[0], single)  # same image, same answer, whatever the format


def test_bad_image_in_multi_request_gets_its_own_slot(torchserve, digits):
    files = {
        "good0": ("a.png", digits[0][0]),
        "broken": ("b.png", b"\x89PNG\r\n\x1a\n not really"),
        "good1": ("c.png", digits[1][0]),
    }
    resp = post(torchserve, files=files)
    assert resp.status_code == 200, resp.text
    body = parse_response(resp.content)
    assert isinstance(body, MultiPrediction)
    first, broken, last = body.predictions
    assert (first.digit, last.digit) == (digits[0][1], digits[1][1])
    assert isinstance(broken, ImageError)
    assert broken.error.type == "InvalidImage" and "'broken'" in broken.error.message


# --- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, what",
    [
        (b"this is not an image", "cannot decode"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot decode"),
        (b"GIF89a", "cannot decode"),
    ],
)
def test_undecodable_single_image_is_400(torchserve, body, what):
    err = bad_request(post(torchserve, data=body, headers={"Content-Type": "image/png"}))
    assert err.type == "InvalidImage"
    assert what in err.message and "'body'" in err.message


def test_empty_body_is_400(torchserve):
    err = bad_request(post(torchserve, data=b"", headers={"Content-Type": "image/png"}))
    assert "no image" in err.message or "empty" in err.message


def test_json_errors_are_400(torchserve):
    assert "base64" in bad_request(post(torchserve, json={"image": "%%%"})).message
    assert "'image' or 'images'" in bad_request(post(torchserve, json={"picture": "x"})).message


def test_form_urlencoded_trap_is_400_with_how_to(torchserve, digits):
    """`curl --data-binary @digit.png URL` without -H: requests sends the same Content-Type."""
    resp = post(torchserve, data=digits[0][0],
                headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    err = bad_request(resp)
    assert "-T" in err.message and "Content-Type" in err.message


def test_body_over_max_request_size_is_413(torchserve):
    limit = max_request_size(torchserve)
    resp = post(torchserve, data=b"\0" * (limit + 1), headers={"Content-Type": "image/png"})
    assert resp.status_code == 413
    # The server is still fine afterwards.
    ping = requests.get(f"{torchserve.inference_url}/ping", timeout=TIMEOUT,
                        headers=auth_headers(torchserve.inference_token))  # fmt: skip
    assert ping.status_code == 200


# --- batching ---------------------------------------------------------------------------------
def test_concurrent_mixed_requests_each_get_their_own_answer(torchserve, digits):
    """Good and bad requests batched together (batchSize > 1): every request keeps its status
    and its answer, identical to what it gets when sent alone."""
    assert served_model(torchserve)["batchSize"] > 1, "no server-side batching: nothing to test"
    cases = []
    for i in range(48):
        png, label = digits[i % len(digits)]
        if i % 3 == 1:
            cases.append(("bad", b"garbage %d" % i, None))
        elif i % 3 == 2:
            cases.append(("multi", {"a": png, "z": b"junk", "b": digits[0][0]}, label))
        else:
            cases.append(("good", png, label))
    alone = ok_prediction(post(torchserve, data=digits[0][0],
                               headers={"Content-Type": "image/png"}))  # fmt: skip

    def send(case):
        kind, payload, _ = case
        if kind == "multi":
            return post(torchserve, files={k: (k, v) for k, v in payload.items()})
        return post(torchserve, data=payload, headers={"Content-Type": "image/png"})

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(send, cases))
    for (kind, _, label), resp in zip(cases, responses, strict=True):
        if kind == "bad":
            assert bad_request(resp).type == "InvalidImage"
        elif kind == "good":
            assert ok_prediction(resp).digit == label
        else:
            assert resp.status_code == 200, resp.text
            a, z, b = parse_response(resp.content).predictions
            assert a.digit == label and isinstance(z, ImageError) and same_answer(b, alone)


def test_every_error_body_is_json_schema_valid(torchserve):
    """TorchServe's own errors (refused key, unknown model) share the ErrorResponse shape."""
    for resp in (
        post(torchserve, token=None, data=b"x"),
        requests.post(
            f"{torchserve.inference_url}/predictions/nope",
            data=b"x",
            timeout=TIMEOUT,
            headers=auth_headers(torchserve.inference_token),
        ),  # fmt: skip
    ):
        assert resp.status_code >= 400
        body = json.loads(resp.content)
        assert set(body) == {"code", "type", "message"}, body
        assert body["code"] == resp.status_code
