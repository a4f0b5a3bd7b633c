"""The handler without a server, driven like TorchServe's own handler tests: a real
`ts.context.Context` with per-request `RequestProcessor`s, and `handle(data, context)`.

The model is conftest's `model_path` (trained when present, else untrained): answers are
compared with a direct forward pass of the same model, so they hold for either.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from ts.context import Context, RequestProcessor

from handler import MODEL_NAME, TORCH_THREADS_ENV, predictor, preprocessing, schemas
from handler.lenet_handler import LenetHandler
from project import paths
from samples.digits import encode_png
from tests.images import encode


@pytest.fixture(scope="module")
def model_dir(model_path) -> Path:
    """The folder TorchServe would extract the archive into: it holds `lenet.pt`."""
    assert model_path.name == "lenet.pt", model_path
    return model_path.parent


def make_context(model_dir: Path, gpu_id=None, yaml_config=None) -> Context:
    manifest = {"model": {"modelName": MODEL_NAME, "serializedFile": "lenet.pt",
                          "handler": "lenet_handler.py", "modelVersion": "test"}}  # fmt: skip
    # TorchServe hands every handler a metrics sink; this handler emits no custom metric.
    return Context(MODEL_NAME, str(model_dir), manifest, 32, gpu_id, "0.12.0",
                   metrics=mock.MagicMock(), model_yaml_config=yaml_config or {})  # fmt: skip


@pytest.fixture
def keep_torch_threads():
    """`initialize` sets torch's threads for the whole process: restore them afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def handler(model_dir) -> LenetHandler:
    threads = torch.get_num_threads()
    h = LenetHandler()
    h.initialize(make_context(model_dir))
    torch.set_num_threads(threads)
    return h


def run(handler: LenetHandler, rows: list[dict], content_types: list[str | None] | None = None):
    """Send one TorchServe batch; returns [(status, parsed body)] per request."""
    context = make_context(Path("."))  # only its per-request status/headers are used
    content_types = content_types or ["image/png"] * len(rows)
    context.request_processor = [
        RequestProcessor({"Content-Type": ct} if ct else {}) for ct in content_types
    ]
    out = handler.handle(rows, context)
    assert len(out) == len(rows)
    results = []
    for idx, body in enumerate(out):
        status = context.get_response_status(idx)[0] or 200
        assert context.get_response_content_type(idx) == "application/json"
        # Every answer, good or bad, says which model produced it (the manifest's name, "test").
        headers = context.get_response_headers(idx)
        assert headers[schemas.MODEL_NAME_HEADER] == MODEL_NAME
        assert headers[schemas.MODEL_VERSION_HEADER] == "test"
        results.append((status, schemas.parse_response(body)))
    return results


@pytest.fixture(scope="module")
def digit(mnist_test):
    images, labels = mnist_test
    return images[0], int(labels[0])


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


# --- device and threads -----------------------------------------------------------------------
@pytest.fixture
def requested_device(monkeypatch):
    """The device the handler asks the model to be loaded onto; the load itself is cut short,
    so no tensor goes to a device this host lacks."""
    seen = {}

    class Loaded(Exception):
        pass

    def fake_load(path, device="cpu"):
        seen["device"], seen["path"] = device, str(path)
        raise Loaded

    monkeypatch.setattr(predictor, "load_torchscript", fake_load)
    seen["stop"] = Loaded
    return seen


@pytest.mark.parametrize(("gpu_id", "cuda", "device"),
                         [(3, True, "cuda:3"), (0, False, "cpu"), (None, True, "cpu")],
                         ids=["assigned-gpu", "gpu-id-but-no-cuda", "no-gpu-assigned"])
def test_initialize_loads_onto_the_device_torchserve_assigned(model_dir, requested_device,
                                                              monkeypatch, keep_torch_threads,
                                                              gpu_id, cuda, device):  # fmt: skip
    """TorchServe's `gpu_id` decides: a worker it gave no GPU stays on the CPU even where CUDA
    exists (CUDA availability is simulated)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    with pytest.raises(requested_device["stop"]):
        LenetHandler().initialize(make_context(model_dir, gpu_id=gpu_id))
    assert requested_device["device"] == torch.device(device)
    assert requested_device["path"].endswith("lenet.pt")


def test_initialize_falls_back_to_cpu(model_dir, monkeypatch, keep_torch_threads):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    h = LenetHandler()
    h.initialize(make_context(model_dir, gpu_id=0))
    assert h.predictor.device == torch.device("cpu")
    assert next(iter(h.predictor.module.parameters())).device.type == "cpu"


@pytest.mark.parametrize(
    "env, yaml_threads, expected_threads", [(None, None, 1), (None, 2, 2), ("3", 2, 3)]
)
def test_torch_threads_from_env_then_model_config(model_dir, monkeypatch, keep_torch_threads,
                                                  env, yaml_threads, expected_threads):  # fmt: skip
    if env is None:
        monkeypatch.delenv(TORCH_THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(TORCH_THREADS_ENV, env)
    yaml_config = {"handler": {"torch_threads": yaml_threads}} if yaml_threads else {}
    LenetHandler().initialize(make_context(model_dir, yaml_config=yaml_config))
    assert torch.get_num_threads() == expected_threads


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_handler_runs_on_a_real_gpu(model_dir, digit, keep_torch_threads):
    h = LenetHandler()
    h.initialize(make_context(model_dir, gpu_id=0))
    assert h.predictor.device == torch.device("cuda:0")
    assert next(iter(h.predictor.module.parameters())).device == torch.device("cuda:0")
    ((status, answer),) = run(h, [{"body": encode_png(digit[0])}])
    assert status == 200 and isinstance(answer, schemas.Prediction)
    cpu = np.asarray(answer.probabilities)
    with torch.inference_mode():
        x = torch.from_numpy(preprocessing.preprocess(encode_png(digit[0])))[None]
        ref = torch.softmax(h.predictor.module.cpu()(x).double(), dim=1)[0].numpy()
    np.testing.assert_allclose(cpu, ref, atol=1e-4)


# --- calibration: the artifact's temperature and threshold, applied alike everywhere -----------
@pytest.fixture(scope="module")
def calibrated_dir(tmp_path_factory, mnist_test) -> Path:
    """An untrained LeNet-5 whose metadata carries a strong temperature, and a threshold at the
    median calibrated confidence of the first 40 test digits, so both visibly change answers."""
    from handler import normalization
    from handler.calibration import apply_temperature
    from handler.predictor import Predictor
    from train.export import save_torchscript
    from train.model import LeNet5

    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("calibrated")
    metadata = {"name": MODEL_NAME, "version": "test", "variant": "modern",
                "normalization": normalization.describe()}  # fmt: skip
    model = LeNet5("modern")
    save_torchscript(model, folder / "lenet.pt", metadata)
    inputs = np.stack([preprocessing.preprocess(encode_png(d)) for d in mnist_test[0][:40]])
    confidence = apply_temperature(Predictor.load(folder / "lenet.pt").logits(inputs), 2.5)
    threshold = float(np.median(confidence.max(axis=1)))
    metadata["calibration"] = {"temperature": 2.5, "uncertain_below": threshold,
                               "target_error_among_confident": 0.005}  # fmt: skip
    save_torchscript(model, folder / "lenet.pt", metadata)
    return folder


def test_calibration_in_the_metadata_is_applied_by_the_handler_and_the_batch_job(
        calibrated_dir, mnist_test, tmp_path, keep_torch_threads):  # fmt: skip
    from batch.discover import iter_files
    from batch.local_engine import LocalEngine, LocalOptions
    from handler.calibration import apply_temperature
    from handler.predictor import Predictor

    images, _ = mnist_test
    pngs = [encode_png(images[i]) for i in range(40)]
    predictor = Predictor.load(calibrated_dir / "lenet.pt", "cpu")
    assert predictor.calibration.temperature == 2.5
    logits = predictor.logits(np.stack([preprocessing.preprocess(p) for p in pngs]))
    expected = apply_temperature(logits, 2.5)
    assert not np.allclose(expected, apply_temperature(logits, 1.0))  # T really changes them

    h = LenetHandler()
    h.initialize(make_context(calibrated_dir))
    served = [body for _, body in run(h, [{"body": p} for p in pngs])]
    for i, png in enumerate(pngs):
        (tmp_path / f"{i:02d}.png").write_bytes(png)
    with LocalEngine(LocalOptions(model=calibrated_dir / "lenet.pt", workers=0)) as engine:
        rows = list(engine.score(tmp_path, iter_files(tmp_path)))
    for answer, row, probs in zip(served, rows, expected, strict=True):
        np.testing.assert_allclose(answer.probabilities, probs, rtol=0, atol=1e-12)
        assert row.probabilities == answer.probabilities  # identical, not just close
        # `uncertain` is set exactly below the artifact's threshold, in both.
        below = answer.confidence < predictor.calibration.uncertain_below
        assert answer.uncertain is below and row.uncertain is below
    assert {a.uncertain for a in served} == {True, False}, "the threshold must split this set"


def test_uncertain_is_published_in_the_json_schema():
    schema = schemas.json_schema()
    prediction = schema["$defs"]["Prediction"]["properties"]
    assert prediction["uncertain"]["type"] == "boolean"
    assert "threshold" in prediction["uncertain"]["description"]
