"""`python -m train`: MNIST + synthetic handwriting -> LeNet-5 -> artifacts/ (TorchScript, ONNX,
metrics, plots).

The last 5,000 MNIST training images are the validation set (model selection by validation
loss); the MNIST test set is scored once at the end. Training adds digits from the stroke model
(`train.synth`, writers of neither real-world half) and augments every batch like other people's
handwriting (`train.augment.handwriting`). Afterwards the temperature and the `uncertain`
threshold are fitted on MNIST validation plus the real-world set's validation half
(`train.calibrate`) and stored in the artifact's metadata. The real-world test half is never read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from handler import MODEL_NAME, normalization
from handler.predictor import choose_device
from samples import realworld
from train import calibrate, export, plots
from train.augment import Handwriting
from train.loop import FitConfig, evaluate, fit, predict
from train.mnist import MIRRORS, Mnist, MnistError, load_verified, resolve_data_dir
from train.model import LeNet5, count_parameters, summary
from train.options import (
    CALIBRATION_COUNT,
    QUICK_CALIBRATION,
    QUICK_EPOCHS,
    QUICK_SYNTH,
    QUICK_TRAIN_SIZE,
    SYNTH_COUNT,
    VALIDATION_SIZE,
    build_parser,
)
from train.synth import cached_stroke_digits

logger = logging.getLogger(__name__)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 `(N, 28, 28)` -> normalised float32 `(N, 1, 28, 28)` via the shared normalize."""
    return torch.from_numpy(normalization.normalize(images)).unsqueeze(1)


def split(mnist: Mnist, quick: bool):
    """Train/validation/test tensors: validation = the last 5,000 training images."""
    n_train = len(mnist.train_x) - VALIDATION_SIZE
    train_x, train_y = mnist.train_x[:n_train], mnist.train_y[:n_train]
    if quick:
        train_x, train_y = train_x[:QUICK_TRAIN_SIZE], train_y[:QUICK_TRAIN_SIZE]
    val_x, val_y = mnist.train_x[n_train:], mnist.train_y[n_train:]

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64))

    return (
        (to_tensor(train_x), labels(train_y)),
        (to_tensor(val_x), labels(val_y)),
        (to_tensor(mnist.test_x), labels(mnist.test_y)),
    )


def train_config(args: argparse.Namespace) -> dict:
    """All arguments, JSON-friendly, for the metadata."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())}


def _pick(value: int | None, default: int, quick_default: int, quick: bool) -> int:
    return value if value is not None else (quick_default if quick else default)


def add_synthetic(train, count: int, seed: int, cache_dir: Path | None = None):
    """The training tensors with `count` stroke-model digits appended (cached in `cache_dir`)."""
    if count <= 0:
        return train
    images, labels = cached_stroke_digits(count, seed, cache_dir)
    return (
        torch.cat([train[0], to_tensor(images)]),
        torch.cat([train[1], torch.from_numpy(labels)]),
    )


def fit_calibration(model, val, count: int, target_error: float) -> tuple[dict, dict]:
    """Fit the calibration block on MNIST validation + `count` real-world validation images.

    Returns `(block, {set name: summary})`; the summaries are validation figures only.
    """
    sets = {"mnist_val": (predict(model, val[0]).double().numpy(), val[1].numpy())}
    if count > 0:
        rw = realworld.load("val", count)
        inputs = torch.from_numpy(realworld.model_inputs(rw))
        sets["realworld_val"] = (predict(model, inputs).double().numpy(), rw.labels)
    threshold_on = "realworld_val" if count > 0 else "mnist_val"
    block = calibrate.fit(sets, threshold_on, target_error)
    summaries = {
        name: calibrate.summary(lg, y, block["temperature"], block["uncertain_below"])
        for name, (lg, y) in sets.items()
    }
    return block, summaries


def run(args: argparse.Namespace) -> dict:
    """Train, calibrate, evaluate and write every artifact; returns the metrics dict."""
    wall_start, cpu_start = time.perf_counter(), _cpu_seconds()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    device = choose_device(args.device)
    epochs = _pick(args.epochs, FitConfig.epochs, QUICK_EPOCHS, args.quick)
    synth = _pick(args.synth, SYNTH_COUNT, QUICK_SYNTH, args.quick)
    calibration_count = _pick(
        args.calibration_count, CALIBRATION_COUNT, QUICK_CALIBRATION, args.quick
    )

    data_dir = resolve_data_dir(args.data_dir, args.cache_dir, args.mirrors or MIRRORS)
    mnist = load_verified(data_dir)
    train, val, test = split(mnist, args.quick)
    synth_start = time.perf_counter()
    train = add_synthetic(train, synth, args.seed, args.synth_cache)
    synth_seconds = time.perf_counter() - synth_start
    logger.info(
        "MNIST from %s + %d stroke-model digits (%.1f s): %d train, %d validation, "
        "%d test images on %s",
        data_dir,
        synth,
        synth_seconds,
        len(train[0]),
        len(val[0]),
        len(test[0]),
        device,
    )

    model = LeNet5(args.variant).to(device)
    config = FitConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        max_lr=args.lr,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        augment=args.augment,
        handwriting=Handwriting(share=args.handwriting_share),
        progress=args.progress,
    )
    result = fit(model, train, val, config, generator)
    val_loss, val_acc, _ = evaluate(model, *val)
    cal_start = time.perf_counter()
    calibration, cal_summaries = fit_calibration(model, val, calibration_count, args.target_error)
    cal_seconds = time.perf_counter() - cal_start
    test_loss, test_acc, test_pred = evaluate(model, *test)  # the one look at the test set
    test_true = test[1].numpy()
    test_pred = test_pred.numpy()
    test_calibration = calibrate.summary(
        predict(model, test[0]).double().numpy(),
        test_true,
        calibration["temperature"],
        calibration["uncertain_below"],
    )
    per_class = {
        name: float((test_pred[test_true == c] == c).mean())
        for c, name in enumerate(normalization.CLASS_NAMES)
    }

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    metadata = {
        "name": MODEL_NAME,
        "version": args.model_version,
        "variant": args.variant,
        "normalization": normalization.describe(),
        "class_names": normalization.CLASS_NAMES,
        "input_shape": [1, normalization.IMAGE_SIZE, normalization.IMAGE_SIZE],
        "test_accuracy": test_acc,
        "val_accuracy": val_acc,
        "calibration": calibration,
        "data_sha256": mnist.sha256,
        "synthetic_training_data": {
            "count": synth,
            "source": "samples.strokes",
            "writer_ids": [realworld.TRAIN_WRITER_BASE, realworld.TRAIN_WRITER_BASE + synth // 10],
        },
        "augmentation": {"kind": args.augment, **config.handwriting.describe()},
        "train_config": train_config(args)
        | {"epochs": epochs, "synth": synth, "calibration_count": calibration_count},
        "seed": args.seed,
        "torch_version": torch.__version__,
        "git_commit": export.git_commit(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    export.save_torchscript(model, out / f"{MODEL_NAME}.pt", metadata)
    export.save_onnx(model, out / f"{MODEL_NAME}.onnx")

    plots.training_curves(result.history, result.best_epoch, out / "training_curves.png")
    plots.confusion_matrix_plot(
        test_true, test_pred, normalization.CLASS_NAMES, out / "confusion_matrix.png"
    )
    plots.predictions_grid(mnist.test_x, test_true, test_pred, out / "predictions.png")

    metrics = {
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "val_accuracy": val_acc,
        "val_loss": val_loss,
        "per_class_accuracy": per_class,
        "calibration": calibration,
        "calibration_validation": cal_summaries,
        "calibration_mnist_test": test_calibration,
        "params": count_parameters(model),
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 2),
        "synth_seconds": round(synth_seconds, 2),
        "calibration_seconds": round(cal_seconds, 2),
        "wall_seconds": round(time.perf_counter() - wall_start, 2),
        # The machine may be shared: CPU time and load average let a reader judge wall time.
        # CPU seconds count this process and the helper processes it waited for.
        "cpu_seconds": round(_cpu_seconds() - cpu_start, 2),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "images_per_second": round(result.images_per_second, 1),
        "seed": args.seed,
        "device": str(device),
        "threads": args.threads,
        "variant": args.variant,
        "quick": args.quick,
        "augment": args.augment,
        "train_images": len(train[0]),
        "synthetic_images": synth,
        "cpu": platform.processor() or platform.machine(),
        "history": [vars(h) for h in result.history],
    }
    export.write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the synthesis/preprocessing pools)."""
    own = time.process_time()
    children = os.times()
    return own + children.children_user + children.children_system


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for data problems, with one clear message)."""
    args = build_parser(__doc__).parse_args(argv)
    # Our own progress at INFO; the ONNX exporter's libraries chat at INFO, so they stay at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("train").setLevel(logging.INFO)
    if args.summary:
        print(summary(LeNet5(args.variant)))
        return 0
    try:
        metrics = run(args)
    except MnistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cal = metrics["calibration"]
    print(
        f"test accuracy {100 * metrics['test_accuracy']:.2f} % "
        f"(val {100 * metrics['val_accuracy']:.2f} %, best epoch {metrics['best_epoch']}/"
        f"{metrics['epochs']}) | train {metrics['train_seconds']:.1f} s, "
        f"wall {metrics['wall_seconds']:.1f} s, CPU {metrics['cpu_seconds']:.1f} s, "
        f"{metrics['images_per_second']:,.0f} img/s "
        f"| T {cal['temperature']:.3f}, uncertain below {cal['uncertain_below']:.3f} "
        f"| artifacts in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
