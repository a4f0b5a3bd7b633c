"""`python -m train`: MNIST -> LeNet-5 -> artifacts/ (TorchScript, ONNX, metrics, plots).

Defaults reproduce the reference model: the last 5,000 training images are the validation set
(model selection by validation loss), the test set is scored once at the end.
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
from project import paths
from train import export, plots
from train.loop import FitConfig, evaluate, fit
from train.mnist import (
    DEFAULT_CACHE_DIR,
    MIRRORS,
    Mnist,
    MnistError,
    load_verified,
    resolve_data_dir,
)
from train.model import VARIANTS, LeNet5, count_parameters, summary

logger = logging.getLogger(__name__)

DEFAULT_OUT = paths.ARTIFACTS_DIR
VALIDATION_SIZE = 5_000
QUICK_TRAIN_SIZE = 8_000  # --quick: enough for > 90 % test accuracy in a few seconds
QUICK_EPOCHS = 2


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for flags and for options whose help already explains them."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The command line, grouped by concern, defaults shown in --help."""
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description=__doc__,
        formatter_class=_HelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the four MNIST IDX files (.gz or not); default $MNIST_DIR, "
        "else download into --cache-dir",
    )
    data.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help="where downloaded MNIST files are kept",
    )
    data.add_argument(
        "--mirror",
        action="append",
        dest="mirrors",
        default=None,
        help=f"download mirror base URL, repeatable (default: {', '.join(MIRRORS)})",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--variant",
        choices=VARIANTS,
        default="modern",
        help="modern = ReLU + max pooling; classic = scaled tanh + avg pooling",
    )
    model.add_argument("--summary", action="store_true", help="print the per-layer table and exit")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs (default {FitConfig.epochs}; {QUICK_EPOCHS} with --quick)",
    )
    opt.add_argument("--batch-size", type=int, default=FitConfig.batch_size, help="images per step")
    opt.add_argument("--lr", type=float, default=FitConfig.max_lr, help="OneCycle peak lr (AdamW)")
    opt.add_argument(
        "--weight-decay", type=float, default=FitConfig.weight_decay, help="AdamW weight decay"
    )
    opt.add_argument(
        "--label-smoothing",
        type=float,
        default=FitConfig.label_smoothing,
        help="cross-entropy label smoothing (validation loss is always plain cross-entropy)",
    )
    opt.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="disable the random affine augmentation",
    )
    opt.add_argument("--seed", type=int, default=0, help="seeds init, shuffling, augmentation")
    opt.add_argument(
        "--quick",
        action="store_true",
        help=f"train on {QUICK_TRAIN_SIZE:,} images for a smoke test (seconds)",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N"
    )
    run.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="artifact folder")
    run.add_argument(
        "--model-version",
        default="1.0",
        help="version recorded in the metadata (the .mar version comes from it)",
    )
    run.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the tqdm progress bars"
    )
    return parser


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


def run(args: argparse.Namespace) -> dict:
    """Train, evaluate and write every artifact; returns the metrics dict."""
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    device = choose_device(args.device)
    epochs = (
        args.epochs
        if args.epochs is not None
        else (QUICK_EPOCHS if args.quick else FitConfig.epochs)
    )

    data_dir = resolve_data_dir(args.data_dir, args.cache_dir, args.mirrors or MIRRORS)
    mnist = load_verified(data_dir)
    train, val, test = split(mnist, args.quick)
    logger.info(
        "MNIST from %s: %d train, %d validation, %d test images on %s",
        data_dir,
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
        progress=args.progress,
    )
    result = fit(model, train, val, config, generator)
    val_loss, val_acc, _ = evaluate(model, *val)
    test_loss, test_acc, test_pred = evaluate(model, *test)  # the one look at the test set
    test_true = test[1].numpy()
    test_pred = test_pred.numpy()
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
        "data_sha256": mnist.sha256,
        "train_config": train_config(args) | {"epochs": epochs},
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
        "params": count_parameters(model),
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 2),
        "wall_seconds": round(time.perf_counter() - wall_start, 2),
        # The machine may be shared: CPU time and load average let a reader judge wall time.
        "cpu_seconds": round(time.process_time() - cpu_start, 2),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "images_per_second": round(result.images_per_second, 1),
        "seed": args.seed,
        "device": str(device),
        "threads": args.threads,
        "variant": args.variant,
        "quick": args.quick,
        "train_images": len(train[0]),
        "cpu": platform.processor() or platform.machine(),
        "history": [vars(h) for h in result.history],
    }
    export.write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for data problems, with one clear message)."""
    args = build_parser().parse_args(argv)
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
    print(
        f"test accuracy {100 * metrics['test_accuracy']:.2f} % "
        f"(val {100 * metrics['val_accuracy']:.2f} %, best epoch {metrics['best_epoch']}/"
        f"{metrics['epochs']}) | train {metrics['train_seconds']:.1f} s, "
        f"wall {metrics['wall_seconds']:.1f} s, {metrics['images_per_second']:,.0f} img/s "
        f"| artifacts in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
