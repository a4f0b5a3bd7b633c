"""The one predictor: load an artifact once, then image bytes -> predictions or per-image errors.

    predictor = Predictor.load("artifacts/lenet.pt")          # or a .mar
    predictor.predict([png_bytes, jpeg_bytes])                 # [Prediction | ImageError, ...]

The TorchServe handler, the batch engines, the load-test pool and every benchmark use it, so a
file gets the same digit and the same probabilities whichever way it is scored. The work splits
in two: `handler.inputs.prepare` (decode + preprocess, torch-free, may run in other processes)
and `complete` (one batched forward pass, softmax in float64, answers in input order).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from handler import MODEL_NAME, TORCH_THREADS_ENV
from handler.artifact import load_torchscript
from handler.calibration import Calibration
from handler.inputs import Prepared, prepare
from handler.normalization import IMAGE_SIZE
from handler.schemas import ErrorBody, ImageError, Prediction


def choose_device(requested: str | int | None = "auto") -> torch.device:
    """The device to run on.

    `"auto"` (or None) picks CUDA when available; an int is a GPU index as TorchServe assigns
    it (`gpu_id`), used only when CUDA is usable; any other string goes to `torch.device`.
    """
    if isinstance(requested, int):
        return torch.device(f"cuda:{requested}" if torch.cuda.is_available() else "cpu")
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def torch_threads(configured: int | str | None = None) -> int:
    """Intra-op threads: `$LENET_TORCH_THREADS`, else `configured`, else 1; 0 keeps torch's.

    One by default: LeNet's forward pass is tiny, and beside a JVM frontend or busy decode
    workers more threads only oversubscribe the cores.
    """
    value = os.environ.get(TORCH_THREADS_ENV) or configured
    return 1 if value in (None, "") else int(value)


def image_error(message: str) -> ImageError:
    """The answer slot of an image that could not be used."""
    return ImageError(error=ErrorBody(code=400, type="InvalidImage", message=message))


class Predictor:
    """A loaded LeNet-5 and its metadata; `predict` turns image bytes into answers."""

    def __init__(self, module: torch.jit.ScriptModule, metadata: dict,
                 device: torch.device | str = "cpu") -> None:  # fmt: skip
        self.module = module
        self.metadata = metadata
        self.device = torch.device(device)
        self.name = str(metadata.get("name") or MODEL_NAME)
        self.version = str(metadata.get("version") or "")
        # The temperature and the uncertain threshold the training job fitted (identity if none).
        self.calibration = Calibration.from_metadata(metadata)

    @classmethod
    def load(cls, path: str | Path, device: str | int | None = "auto") -> Predictor:
        """Load a TorchScript `.pt` or a `.mar` (raises `handler.artifact.ArtifactError`)."""
        device = choose_device(device)
        module, metadata = load_torchscript(path, device)
        predictor = cls(module, metadata, device)
        predictor.warm_up()
        return predictor

    def warm_up(self) -> None:
        """Run one forward pass: the first TorchScript call optimises the graph."""
        self.probabilities(np.zeros((1, 1, IMAGE_SIZE, IMAGE_SIZE), np.float32))

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """(N, 1, 28, 28) normalised float32 inputs -> (N, 10) float64 logits."""
        if len(inputs) == 0:
            return np.empty((0, 10), np.float64)
        with torch.inference_mode():
            return self.module(torch.from_numpy(inputs).to(self.device)).double().cpu().numpy()

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """(N, 1, 28, 28) inputs -> (N, 10) calibrated probabilities: the softmax of the logits
        over the artifact's temperature, in float64 (they sum to 1 tightly, and every caller
        gets the same)."""
        return self.calibration.probabilities(self.logits(inputs))

    def complete(self, prepared: Prepared) -> list[Prediction | ImageError]:
        """Answers for prepared images, in input order: one forward pass over the good ones."""
        probs = self.probabilities(prepared.inputs)
        return [
            image_error(error) if row is None
            else Prediction.from_probabilities(probs[row], self.calibration.uncertain_below)
            for row, error in zip(prepared.rows, prepared.errors, strict=True)
        ]

    def predict(self, images: Sequence[bytes]) -> list[Prediction | ImageError]:
        """One answer per image: a `Prediction`, or an `ImageError` saying what was wrong."""
        return self.complete(prepare(images))
