"""The one predictor (`handler.predictor`), which the handler, the batch engines and the benches
share: answers in input order with a per-image error that costs no neighbour its answer, the
same model from an artifact and from its archive, and the device and thread choices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handler import MODEL_NAME, TORCH_THREADS_ENV
from handler.artifact import ArtifactError
from handler.predictor import Predictor, choose_device, torch_threads
from handler.schemas import ImageError, Prediction
from samples.digits import encode_png


@pytest.fixture(scope="module")
def loaded(model_path) -> Predictor:
    return Predictor.load(model_path, device="cpu")


def test_answers_keep_input_order_and_bad_images_get_their_own_error(loaded, mnist_test):
    images, _ = mnist_test
    pngs = [encode_png(images[i]) for i in range(3)]
    answers = loaded.predict([pngs[0], b"junk", pngs[1], b"", pngs[2]])
    assert [type(a) for a in answers] == [Prediction, ImageError, Prediction, ImageError,
                                          Prediction]  # fmt: skip
    assert "cannot decode 4 bytes" in answers[1].error.message
    assert "empty" in answers[3].error.message
    # Each good image gets the answer it gets alone: batching with bad ones changes nothing.
    for answer, png in zip(answers[::2], pngs, strict=True):
        (alone,) = loaded.predict([png])
        np.testing.assert_allclose(answer.probabilities, alone.probabilities, atol=1e-6)
        assert abs(sum(answer.probabilities) - 1) < 1e-9  # float64 softmax: sums tightly to 1
        assert answer.digit == int(np.argmax(answer.probabilities))


def test_nothing_to_predict_is_an_empty_answer(loaded):
    assert loaded.predict([]) == []


def test_archive_holds_the_same_model_as_the_artifact(mar_path, trained_model, mnist_test):
    """`model_store/lenet.mar` answers exactly like `artifacts/lenet.pt` (rebuild the archive
    with `make archive` after retraining if this fails)."""
    images, _ = mnist_test
    pngs = [encode_png(images[i]) for i in range(50)]
    from_mar = Predictor.load(mar_path, device="cpu")
    from_pt = Predictor.load(trained_model, device="cpu")
    assert from_mar.name == from_pt.name == MODEL_NAME
    assert from_mar.version == from_pt.version
    assert from_mar.predict(pngs) == from_pt.predict(pngs)


@pytest.mark.parametrize(("name", "command"), [("lenet.pt", "python -m train"),
                                               ("lenet.mar", "python -m deploy archive")])
def test_a_missing_model_names_the_command_that_builds_it(tmp_path, name, command):
    with pytest.raises(ArtifactError, match=f"not found; build it with `{command}`"):
        Predictor.load(tmp_path / name)


def test_a_model_trained_with_other_normalisation_is_refused(tmp_path):
    from train.export import save_torchscript
    from train.model import LeNet5

    path = tmp_path / "lenet.pt"
    save_torchscript(LeNet5(), path, {"name": MODEL_NAME,
                                      "normalization": {"mean": [0.5], "std": [0.5]}})
    with pytest.raises(ArtifactError, match="trained with normalisation"):
        Predictor.load(path, device="cpu")


@pytest.mark.parametrize(
    ("requested", "cuda", "device"),
    [("auto", True, "cuda"), ("auto", False, "cpu"), (None, True, "cuda"), (1, True, "cuda:1"),
     (1, False, "cpu"), ("cpu", True, "cpu")],
)  # fmt: skip
def test_device_choice(monkeypatch, requested, cuda, device):
    """CUDA availability is simulated: the choice, not the device, is under test."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert choose_device(requested) == torch.device(device)


@pytest.mark.parametrize(("env", "configured", "threads"),
                         [(None, None, 1), (None, 3, 3), ("2", 3, 2), ("0", None, 0)])
def test_torch_threads_env_then_configured_then_one(monkeypatch, env, configured, threads):
    if env is None:
        monkeypatch.delenv(TORCH_THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(TORCH_THREADS_ENV, env)
    assert torch_threads(configured) == threads

