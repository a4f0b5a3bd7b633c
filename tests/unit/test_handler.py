"""The handler's answers without a server, driven like TorchServe's own handler tests: a real
`ts.context.Context` with per-request `RequestProcessor`s, and `handle(data, context)`
(tests/handler_context.py).

Covered here: every input format (raw body, image formats and modes, multipart, JSON), the 400
error paths, and batching (good and bad requests in one forward pass). What configures the
handler (device, threads, calibration) is test_handler_config.py.

The model is conftest's `model_path` (trained when present, else untrained): answers are
compared with a direct forward pass of the same model, so they hold for either.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from handler import preprocessing, schemas
from handler.lenet_handler import LenetHandler
from project import paths
from samples.digits import encode_png
from tests.handler_context import make_context, run
from tests.images import encode


@pytest.fixture(scope="module")
def handler(model_dir) -> LenetHandler:
    threads = torch.get_num_threads()
    h = LenetHandler()
    h.initialize(make_context(model_dir))
    torch.set_num_threads(threads)
    return h


def expected(handler: LenetHandler, data: bytes) -> np.ndarray:
    """The probabilities of a direct forward pass on the shared preprocessing, softened by the
    temperature the artifact's metadata names (1 when it names none)."""
    temperature = handler.predictor.metadata.get("calibration", {}).get("temperature", 1.0)
    x = torch.from_numpy(preprocessing.preprocess(data))[None]
    with torch.inference_mode():
        logits = handler.predictor.module(x).double()
    return torch.softmax(logits / temperature, dim=1)[0].numpy()


def assert_matches(answer, handler, data):
    assert isinstance(answer, schemas.Prediction), answer
    np.testing.assert_allclose(answer.probabilities, expected(handler, data), atol=1e-5)


class CountingForward(torch.nn.Module):
    """Stands in for the model and records the shape of every forward pass."""

    def __init__(self, real: torch.nn.Module) -> None:
        super().__init__()
        self.real, self.calls = real, []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return self.real(x)


@pytest.fixture
def forward_calls(handler):
    """The shapes of the forward passes the handler runs during the test."""
    real = handler.predictor.module
    counting = CountingForward(real)
    handler.predictor.module = counting
    try:
        yield counting.calls
    finally:
        handler.predictor.module = real


# --- input formats ----------------------------------------------------------------------------
def test_raw_body(handler, digit, model_path):
    png = encode_png(digit[0])
    ((status, answer),) = run(handler, [{"body": bytearray(png)}])
    assert status == 200
    assert_matches(answer, handler, png)
    if model_path == paths.DEFAULT_ARTIFACT:
        assert answer.digit == digit[1]


@pytest.mark.parametrize(
    "fmt, mode",
    [("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "1"), ("PNG", "I;16"),
     ("JPEG", "L"), ("JPEG", "RGB"), ("BMP", "RGB"), ("GIF", "P"), ("TIFF", "L"), ("WEBP", "RGB")],
)  # fmt: skip
def test_image_formats_and_modes(handler, digit, fmt, mode):
    data = encode(digit[0], fmt, mode)
    ((status, answer),) = run(handler, [{"body": data}], ["application/octet-stream"])
    assert status == 200
    assert_matches(answer, handler, data)


def test_multipart_fields_in_order(handler, mnist_test):
    images, _ = mnist_test
    pngs = [encode_png(images[i]) for i in range(3)]
    ((status, body),) = run(handler, [{"b": pngs[0], "a": pngs[1], "c": pngs[2]}],
                            ["multipart/form-data; boundary=x"])  # fmt: skip
    assert status == 200 and isinstance(body, schemas.MultiPrediction)
    for answer, png in zip(body.predictions, pngs, strict=True):
        assert_matches(answer, handler, png)


def test_json_image_and_images(handler, mnist_test):
    images, _ = mnist_test
    pngs = [encode_png(images[i]) for i in range(2)]
    b64 = [base64.b64encode(p).decode() for p in pngs]
    rows = [
        {"body": {"image": b64[0]}},
        {"body": {"images": b64}},
        {"body": {"image": "data:image/png;base64," + b64[1]}},
    ]
    (s1, single), (s2, multi), (s3, data_url) = run(handler, rows, ["application/json"] * 3)
    assert (s1, s2, s3) == (200, 200, 200)
    assert_matches(single, handler, pngs[0])
    assert_matches(data_url, handler, pngs[1])
    for answer, png in zip(multi.predictions, pngs, strict=True):
        assert_matches(answer, handler, png)


# --- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "row, content_type, error_type, words",
    [
        ({"body": b"not an image"}, "image/png", "InvalidImage", ["'body'", "cannot decode"]),
        ({"body": b""}, "image/png", "InvalidRequest", ["empty"]),
        ({}, None, "InvalidRequest", ["no image"]),
        ({"body": "some text"}, "text/plain", "InvalidRequest", ["text"]),
        ({"body": {"picture": "x"}}, "application/json", "InvalidRequest", ["'image'"]),
        ({"body": {"image": "%%%"}}, "application/json", "InvalidImage", ["base64"]),
        ({"body": {"image": 7}}, "application/json", "InvalidImage", ["base64 string"]),
        ({"body": {"images": []}}, "application/json", "InvalidRequest", ["non-empty"]),
        ({"body": [1, 2]}, "application/json", "InvalidRequest", ["object"]),
        ({"field": "text value"}, "multipart/form-data", "InvalidImage", ["not a file", "-F"]),
        ({"\x89PNG\r\n": b"IHDR"}, "application/x-www-form-urlencoded", "InvalidRequest",
         ["-T", "Content-Type", "x-www-form-urlencoded"]),
    ],
)  # fmt: skip
def test_error_paths_answer_400_with_a_message(handler, row, content_type, error_type, words):
    ((status, body),) = run(handler, [row], [content_type])
    assert status == 400
    assert isinstance(body, schemas.ErrorResponse) and body.code == 400 and body.type == error_type
    for word in words:
        assert word in body.message, body.message


def test_over_limit_image_is_400(handler):
    side = int(preprocessing.MAX_IMAGE_PIXELS**0.5) + 1
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")  # tiny file, huge canvas
    ((status, body),) = run(handler, [{"body": buf.getvalue()}])
    assert status == 400 and body.type == "InvalidImage"


def test_all_bad_multi_request_is_400_naming_each_image(handler):
    ((status, body),) = run(handler, [{"x": b"junk", "y": b"more junk"}], ["multipart/form-data"])
    assert status == 400 and isinstance(body, schemas.ErrorResponse)
    assert "'x'" in body.message and "'y'" in body.message


def test_unexpected_decoder_failure_is_a_400_not_a_crash(handler, digit, monkeypatch):
    def boom(_data):
        raise MemoryError("simulated")

    monkeypatch.setattr(preprocessing, "preprocess", boom)
    ((status, body),) = run(handler, [{"body": encode_png(digit[0])}])
    # A 4xx naming what is wrong with the image, never the internal exception's name
    assert status == 400 and "more memory to decode" in body.message
    assert "MemoryError" not in body.message


# --- batching ---------------------------------------------------------------------------------
def test_batch_mixing_good_and_bad_requests_uses_one_forward_pass(handler, mnist_test,
                                                                 forward_calls):
    images, _ = mnist_test
    pngs = [encode_png(images[i]) for i in range(4)]
    rows = [
        {"body": pngs[0]},
        {"body": b"broken"},
        {"a": pngs[1], "bad": b"??", "c": pngs[2]},
        {"k": b"v"},
        {"body": {"images": [base64.b64encode(pngs[3]).decode()]}},
    ]
    cts = ["image/png", "image/png", "multipart/form-data", "application/x-www-form-urlencoded",
           "application/json"]  # fmt: skip
    results = run(handler, rows, cts)
    assert forward_calls == [(4, 1, 28, 28)], "all good images of the batch go through ONE forward"
    assert [s for s, _ in results] == [200, 400, 200, 400, 200]
    assert_matches(results[0][1], handler, pngs[0])
    good_a, bad, good_c = results[2][1].predictions
    assert_matches(good_a, handler, pngs[1])
    assert_matches(good_c, handler, pngs[2])
    assert isinstance(bad, schemas.ImageError) and "'bad'" in bad.error.message
    assert_matches(results[4][1], handler, pngs[3])  # one-element list: a plain Prediction


def test_batch_of_only_bad_requests_runs_no_forward(handler, forward_calls):
    results = run(handler, [{"body": b"x"}, {"body": b"y"}])
    assert [s for s, _ in results] == [400, 400]
    assert forward_calls == [], "no usable image: the model must not run"
