"""The command line of `python -m train`: options grouped by concern, defaults and units in --help.

`build_parser()` is all there is; `train.cli` runs what it parses. The defaults of record live
here (and in `train.loop.FitConfig`, `train.augment.Handwriting`), so `--help` shows them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from project import paths
from train import calibrate
from train.augment import Handwriting
from train.loop import AUGMENTATIONS, FitConfig
from train.mnist import DEFAULT_CACHE_DIR, MIRRORS
from train.model import VARIANTS
from train.synth import DEFAULT_SYNTH_CACHE

DEFAULT_OUT = paths.ARTIFACTS_DIR
VALIDATION_SIZE = 5_000
QUICK_TRAIN_SIZE = 8_000  # --quick: enough for > 90 % test accuracy in a few seconds
QUICK_EPOCHS = 2
SYNTH_COUNT = 10_000  # stroke-model digits added to the 55,000 MNIST training images
QUICK_SYNTH = 300
CALIBRATION_COUNT = 1_000  # real-world validation images the calibration is fitted on
QUICK_CALIBRATION = 100


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for flags and for options whose help already explains them."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The command line, grouped by concern, defaults shown in --help."""
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description=description,
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
    opt.add_argument("--label-smoothing", type=float, default=FitConfig.label_smoothing,
                     help="cross-entropy label smoothing (validation loss is always plain "
                     "cross-entropy)")  # fmt: skip
    opt.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        default="handwriting",
        help="handwriting = slant, elastic, width, resolution (train.augment); affine = rotate, "
        "scale, shift only",
    )
    opt.add_argument(
        "--no-augment", dest="augment", action="store_const", const="none", help="= --augment none"
    )
    opt.add_argument("--handwriting-share", type=float, default=Handwriting.share,
                     help="share of images given the handwriting augmentation (the rest: affine)")
    opt.add_argument(
        "--synth",
        type=int,
        default=None,
        help=f"stroke-model digits added to the training set (default {SYNTH_COUNT:,}; "
        f"{QUICK_SYNTH} with --quick; 0 = MNIST only)",
    )
    opt.add_argument(
        "--synth-cache",
        type=Path,
        default=DEFAULT_SYNTH_CACHE,
        help="folder the drawn synthetic digits are kept in between runs",
    )
    opt.add_argument(
        "--no-synth-cache",
        dest="synth_cache",
        action="store_const",
        const=None,
        help="draw the synthetic digits afresh and keep nothing",
    )
    opt.add_argument("--seed", type=int, default=0, help="seeds init, shuffling, augmentation")
    opt.add_argument(
        "--quick",
        action="store_true",
        help=f"train on {QUICK_TRAIN_SIZE:,} images for a smoke test (seconds)",
    )

    cal = parser.add_argument_group("calibration")
    cal.add_argument(
        "--calibration-count",
        type=int,
        default=None,
        help=f"real-world validation images to fit on (default {CALIBRATION_COUNT:,}; "
        f"{QUICK_CALIBRATION} with --quick; 0 = MNIST validation only)",
    )
    cal.add_argument(
        "--target-error",
        type=float,
        default=calibrate.TARGET_ERROR,
        help="error rate allowed among answers not flagged uncertain (on validation data)",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N"
    )
    run.add_argument(
        "--threads",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="torch CPU threads (default: 2 where there are 2 cores). On an idle 2-core machine "
        "two train ~1.25x faster than one; when other jobs hold the cores, two wait for each "
        "other and one is faster: pass --threads 1 there",
    )
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
