"""The training job end to end: a quick real run, determinism, splits, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handler.normalization import normalize
from train import cli
from train.augment import random_affine
from train.loop import FitConfig, fit
from train.mnist import load_verified
from train.model import LeNet5


@pytest.fixture(scope="module")
def real_mnist(mnist_dir):
    return load_verified(mnist_dir)


def test_quick_run_learns_mnist_and_records_metrics(quick_run):
    out, metrics = quick_run
    assert metrics["test_accuracy"] > 0.90, metrics["test_accuracy"]
    assert metrics["val_accuracy"] > 0.90
    assert metrics["params"] == 61_706
    assert metrics["variant"] == "modern" and metrics["device"] == "cpu"
    assert metrics["quick"] is True and metrics["train_images"] == cli.QUICK_TRAIN_SIZE
    assert metrics["images_per_second"] > 0 and metrics["train_seconds"] > 0
    assert sorted(metrics["per_class_accuracy"]) == [str(d) for d in range(10)]
    per_class = np.array(list(metrics["per_class_accuracy"].values()))
    assert per_class.min() > 0.7
    assert len(metrics["history"]) == metrics["epochs"] == cli.QUICK_EPOCHS
    assert 1 <= metrics["best_epoch"] <= metrics["epochs"]
    # The kept epoch is the one with the lowest validation loss.
    losses = [h["val_loss"] for h in metrics["history"]]
    assert metrics["best_epoch"] == int(np.argmin(losses)) + 1
    for name in (
        "lenet.pt",
        "lenet.json",
        "lenet.onnx",
        "metrics.json",
        "training_curves.png",
        "confusion_matrix.png",
        "predictions.png",
    ):
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert not list(out.glob(".*.tmp")), "temporary files left behind"
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _short_fit(mnist, seed: int) -> list:
    """One small seeded epoch with augmentation, the same code path as the job."""
    torch.manual_seed(seed)
    train = (cli.to_tensor(mnist.train_x[:1500]), torch.from_numpy(mnist.train_y[:1500]).long())
    val = (cli.to_tensor(mnist.train_x[-500:]), torch.from_numpy(mnist.train_y[-500:]).long())
    model = LeNet5()
    result = fit(
        model, train, val, FitConfig(epochs=1, progress=False), torch.Generator().manual_seed(seed)
    )
    return [(h.train_loss, h.train_accuracy, h.val_loss, h.val_accuracy) for h in result.history]


def test_same_seed_gives_same_metrics_and_another_seed_does_not(real_mnist):
    torch.set_num_threads(2)
    first = _short_fit(real_mnist, seed=1)
    second = _short_fit(real_mnist, seed=1)
    other = _short_fit(real_mnist, seed=2)
    assert first == second
    assert first != other


def test_validation_is_the_last_5000_training_images(real_mnist):
    train, val, test = cli.split(real_mnist, quick=False)
    assert len(train[0]) == 55_000 and len(val[0]) == 5_000 and len(test[0]) == 10_000
    np.testing.assert_array_equal(val[1].numpy(), real_mnist.train_y[55_000:])
    expected = normalize(real_mnist.train_x[55_000:])
    np.testing.assert_array_equal(val[0][:, 0].numpy(), expected)
    assert train[0].shape[1:] == (1, 28, 28) and train[0].dtype == torch.float32


def test_augmentation_is_seeded_and_keeps_background():
    images = torch.from_numpy(normalize(np.zeros((4, 28, 28), dtype=np.uint8))).unsqueeze(1)
    images[:, :, 10:18, 10:18] = 2.0  # a bright square in the middle
    a = random_affine(images, torch.Generator().manual_seed(3))
    b = random_affine(images, torch.Generator().manual_seed(3))
    assert a.shape == images.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, images)
    background = float(images[0, 0, 0, 0])
    # Corners are shifted-in area: they must be background, not zero.
    assert torch.allclose(a[:, :, 0, 0], torch.full((4, 1), background))

