"""What configures the handler, without a server (driven like TorchServe drives it, through
tests/handler_context.py): the device TorchServe assigns (`gpu_id`), torch's thread count from
the environment then the model config, a real GPU where there is one, and the calibration the
artifact's metadata carries (temperature and `uncertain` threshold), applied alike by the
handler and the batch job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from handler import MODEL_NAME, TORCH_THREADS_ENV, predictor, preprocessing, schemas
from handler.lenet_handler import LenetHandler
from samples.digits import encode_png
from tests.handler_context import make_context, run


@pytest.fixture
def keep_torch_threads():
    """`initialize` sets torch's threads for the whole process: restore them afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


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
