"""The training job end to end: a quick real run, calibration, determinism, splits, augmentation,
synthetic digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handler.artifact import load_torchscript
from handler.normalization import normalize
from train import calibrate, cli
from train.augment import Handwriting, handwriting, random_affine
from train.loop import FitConfig, fit
from train.mnist import load_verified
from train.model import LeNet5
from train.synth import cached_stroke_digits, stroke_digits


@pytest.fixture(scope="module")
def real_mnist(mnist_dir):
    return load_verified(mnist_dir)


def test_quick_run_learns_mnist_and_records_metrics(quick_run):
    out, metrics = quick_run
    assert metrics["test_accuracy"] > 0.90, metrics["test_accuracy"]
    assert metrics["val_accuracy"] > 0.90
    assert metrics["params"] == 61_706
    assert metrics["variant"] == "modern" and metrics["device"] == "cpu"
    assert metrics["quick"] is True
    assert metrics["train_images"] == cli.QUICK_TRAIN_SIZE + cli.QUICK_SYNTH
    assert metrics["synthetic_images"] == cli.QUICK_SYNTH and metrics["augment"] == "handwriting"
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


def test_quick_run_stores_its_calibration_in_the_artifact(quick_run):
    out, metrics = quick_run
    _, metadata = load_torchscript(out / "lenet.pt")
    block = metadata["calibration"]
    assert block == metrics["calibration"]
    assert block["temperature"] > 0 and 0.0 <= block["uncertain_below"] <= 1.0
    assert block["target_error_among_confident"] == calibrate.TARGET_ERROR
    assert block["fitted_on"] == {"mnist_val": 5000, "realworld_val": cli.QUICK_CALIBRATION}
    assert block["threshold_chosen_on"] == "realworld_val"
    for summary in (*metrics["calibration_validation"].values(), metrics["calibration_mnist_test"]):
        assert 0 <= summary["ece_calibrated"] <= 1 and 0 <= summary["flagged_share"] <= 1
    # The validation NLL cannot get worse: T = 1 is among the temperatures searched.
    joint = metrics["calibration_validation"]
    assert (
        sum(s["nll_calibrated"] for s in joint.values())
        <= sum(s["nll_uncalibrated"] for s in joint.values()) + 1e-9
    )
    assert metadata["synthetic_training_data"]["count"] == cli.QUICK_SYNTH


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


def test_progress_bars_write_nothing_when_stderr_is_not_a_terminal(capfd):
    images = torch.from_numpy(normalize(np.zeros((256, 28, 28), dtype=np.uint8))).unsqueeze(1)
    labels = torch.arange(256) % 10
    config = FitConfig(epochs=1, batch_size=32, progress=True)  # progress asked for, no terminal
    fit(LeNet5(), (images, labels), (images[:64], labels[:64]), config, torch.Generator())
    err = capfd.readouterr().err
    assert "\r" not in err and "epoch 1/1" not in err


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


def _bright_square_batch(n: int = 8) -> torch.Tensor:
    images = torch.from_numpy(normalize(np.zeros((n, 28, 28), dtype=np.uint8))).unsqueeze(1)
    images[:, :, 10:18, 10:18] = 2.0
    return images


def test_handwriting_augmentation_is_seeded_and_keeps_background():
    images = _bright_square_batch()
    a = handwriting(images, torch.Generator().manual_seed(3))
    b = handwriting(images, torch.Generator().manual_seed(3))
    c = handwriting(images, torch.Generator().manual_seed(4))
    assert a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, c)
    background = float(images[0, 0, 0, 0])
    assert torch.allclose(a[:, :, 0, 0], torch.full((8, 1), background))
    assert float(a.max()) <= 2.0 + 1e-5  # no ink brighter than the brightest input


def test_stroke_width_and_low_resolution_parts_change_the_ink():
    images = _bright_square_batch()
    plain = Handwriting(
        width_share=0.0,
        lowres_share=0.0,
        elastic_px=0.0,
        max_degrees=0.0,
        max_shear=0.0,
        max_aspect=0.0,
        scale=(1.0, 1.0),
        max_shift_px=0.0,
        share=1.0,
    )
    unchanged = handwriting(images, torch.Generator().manual_seed(0), plain)
    torch.testing.assert_close(unchanged, images)
    background = float(images[0, 0, 0, 0])

    def ink(batch: torch.Tensor) -> torch.Tensor:
        return (batch > background + 0.5).sum(dim=(1, 2, 3)).float()

    def only(**change) -> Handwriting:
        return Handwriting(**{**vars(plain), **change})

    wider = handwriting(images, torch.Generator().manual_seed(0), only(width_share=1.0))
    assert not torch.equal(ink(wider), ink(images))  # half thicker, half thinner
    blurred = handwriting(images, torch.Generator().manual_seed(0), only(lowres_share=1.0))
    assert float((blurred - images).abs().max()) > 0.5  # edges softened
    assert float(blurred.max()) == pytest.approx(2.0, abs=1e-4)  # ink stretched back


def test_synthetic_digits_are_deterministic_and_mnist_shaped():
    one, labels = stroke_digits(60, seed=5, workers=1, chunk=20)
    two, _ = stroke_digits(60, seed=5, workers=2, chunk=20)
    other, _ = stroke_digits(60, seed=6, workers=1, chunk=20)
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, other)
    assert one.shape == (60, 28, 28) and one.dtype == np.float32
    assert labels.tolist() == [i % 10 for i in range(60)]
    # The serving preprocessing framed them like MNIST: the longer side of the ink is 20 px.
    for digit in one:
        rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
        assert 19 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21
    assert one.max() == pytest.approx(1.0)


def test_cached_synthetic_digits_equal_fresh_ones_and_serve_smaller_counts(tmp_path):
    fresh, labels = stroke_digits(30, seed=5, workers=1)
    first, first_labels = cached_stroke_digits(30, seed=5, cache_dir=tmp_path)
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(first_labels, labels)
    (cached,) = tmp_path.glob("seed5-30-*.npy")
    again, _ = cached_stroke_digits(20, seed=5, cache_dir=tmp_path)  # a prefix, read back
    np.testing.assert_array_equal(again, fresh[:20])
    assert list(tmp_path.glob("*.npy")) == [cached]
