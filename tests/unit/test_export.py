"""The exported artifacts: TorchScript + metadata, ONNX, atomic writes (`train.export`)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

from handler import MODEL_NAME
from handler.artifact import load_torchscript
from handler.normalization import describe
from train.cli import to_tensor
from train.export import atomic_path
from train.model import LeNet5

REQUIRED_KEYS = {
    "name",
    "version",
    "variant",
    "normalization",
    "class_names",
    "input_shape",
    "test_accuracy",
    "val_accuracy",
    "data_sha256",
    "train_config",
    "seed",
    "torch_version",
    "git_commit",
    "created_at",
}


@pytest.fixture(scope="module")
def artifacts(quick_run):
    return quick_run


@pytest.fixture(scope="module")
def test_images(mnist_test):
    test_x, test_y = mnist_test
    return to_tensor(test_x[:512]), test_y[:512]


def test_metadata_round_trips_through_load_torchscript(artifacts):
    out, metrics = artifacts
    module, metadata = load_torchscript(out / "lenet.pt")
    assert REQUIRED_KEYS <= metadata.keys()
    assert metadata == json.loads((out / "lenet.json").read_text())
    assert metadata["name"] == MODEL_NAME and metadata["version"]
    assert metadata["normalization"] == describe()
    assert metadata["class_names"] == [str(d) for d in range(10)]
    assert metadata["input_shape"] == [1, 28, 28]
    assert metadata["test_accuracy"] == metrics["test_accuracy"]
    assert metadata["train_config"]["quick"] is True
    assert len(metadata["data_sha256"]) == 4
    assert isinstance(module, torch.jit.ScriptModule)


def test_torchscript_matches_eager(artifacts, test_images):
    out, _ = artifacts
    scripted, metadata = load_torchscript(out / "lenet.pt")
    eager = LeNet5(metadata["variant"]).eval()
    eager.load_state_dict(scripted.state_dict())
    x, labels = test_images
    with torch.no_grad():
        ts_out, eager_out = scripted(x), eager(x)
    torch.testing.assert_close(ts_out, eager_out, atol=1e-5, rtol=0)
    # And it is a trained model, not random weights.
    assert (ts_out.argmax(1).numpy() == labels).mean() > 0.9


@pytest.mark.parametrize("batch", [1, 7, 512])
def test_onnx_matches_torchscript_for_any_batch_size(artifacts, test_images, batch):
    out, _ = artifacts
    scripted, _ = load_torchscript(out / "lenet.pt")
    session = ort.InferenceSession(str(out / "lenet.onnx"), providers=["CPUExecutionProvider"])
    x = test_images[0][:batch]
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ts_out = scripted(x).numpy()
    assert onnx_out.shape == (batch, 10)
    np.testing.assert_allclose(onnx_out, ts_out, atol=1e-5, rtol=0)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "lenet.pt"
    target.write_bytes(b"old model")
    with pytest.raises(RuntimeError, match="crash"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a mod")
        raise RuntimeError("crash while saving")
    assert target.read_bytes() == b"old model"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "lenet.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert target.read_text() == "{}"
    assert list(target.parent.iterdir()) == [target]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask, "artifact must not stay 0600"
