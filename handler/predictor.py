"""The one predictor: load an artifact once, then image bytes -> predictions or per-image errors.

    predictor = Predictor.load("artifacts/lenet.pt")          # or a .mar
    predictor.predict([png_bytes, jpeg_bytes])                 # [Prediction | ImageError, ...]
    predictor.explain([png_bytes])                             # [Explanation | ImageError, ...]

The TorchServe handler, the batch engines, the load-test pool and every benchmark use it, so a
file gets the same digit and the same probabilities whichever way it is scored. The work splits
in two: `handler.inputs.prepare` (decode + preprocess, torch-free, may run in other processes)
and `complete` (one batched forward pass, softmax in float64, answers in input order).

Explanations (`explain`, `complete_explanations`): the model input rounded to 8 bits (MNIST's
own depth), so that the PNG returned IS the input, exactly: the prediction and Captum's
integrated gradients (`EXPLAIN_STEPS` steps from a blank image, towards the predicted digit) are
computed on `normalize(pixels of that PNG)`. Rounding moves a pixel by at most 1/510, so an
explanation's probabilities may differ from `predict`'s in the third decimal; for an image
already in MNIST's form they are the same.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from handler import MODEL_NAME, TORCH_THREADS_ENV
from handler.artifact import load_torchscript
from handler.calibration import Calibration
from handler.inputs import Prepared, prepare
from handler.normalization import IMAGE_SIZE, MNIST_MEAN, MNIST_STD, normalize
from handler.schemas import ErrorBody, Explanation, ImageError, Prediction

# Integrated gradients' steps (Gauss-Legendre): on MNIST test digits, 16 steps keep the
# attributions' sum within 1 % (median; 3 % at p95) of the logit's rise and the map within 4 %
# of its peak from a 256-step one, at ~4-5 ms of one core per image (handler/limits.py).
EXPLAIN_STEPS = 16
EXPLAIN_METHOD = (f"integrated gradients (Captum), {EXPLAIN_STEPS} Gauss-Legendre steps from a "
                  "blank image, towards the predicted digit")  # fmt: skip


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

        self._integrated_gradients = None  # Captum's, made on the first explanation

    @classmethod
    def load(cls, path: str | Path, device: str | int | None = "auto",
             explanations: bool = False) -> Predictor:  # fmt: skip
        """Load a TorchScript `.pt` or a `.mar` (raises `handler.artifact.ArtifactError`).

        `explanations=True` also readies `explain` now (imports Captum, ~0.5 s, and runs one),
        so that the first explanation asked for is not the slow one.
        """
        device = choose_device(device)
        module, metadata = load_torchscript(path, device)
        predictor = cls(module, metadata, device)
        predictor.warm_up(explanations)
        return predictor

    def warm_up(self, explanations: bool = False) -> None:
        """Run one forward pass (the first TorchScript call optimises the graph), and with
        `explanations` two attributions (its first calls with gradients profile the graph)."""
        blank = np.zeros((1, 1, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        self.probabilities(blank)
        if explanations:
            for _ in range(2):
                self.attributions(blank + 1.0, np.zeros(1, np.int64))

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

    # --- explanations ---------------------------------------------------------------------
    def explain(self, images: Sequence[bytes]) -> list[Explanation | ImageError]:
        """One explanation per image: an `Explanation`, or an `ImageError` saying what was wrong."""
        return self.complete_explanations(prepare(images))

    def complete_explanations(self, prepared: Prepared) -> list[Explanation | ImageError]:
        """Explanations for prepared images, in input order: one forward pass and one batch of
        integrated gradients over the good ones."""
        pixels = to_pixels(prepared.inputs)
        inputs = normalize(pixels)[:, np.newaxis]
        probs = self.probabilities(inputs)
        maps = self.attributions(inputs, probs.argmax(axis=1))
        return [
            image_error(error) if row is None
            else Explanation.build(probs[row], encode_png(pixels[row]), maps[row], EXPLAIN_METHOD,
                                   self.calibration.uncertain_below)
            for row, error in zip(prepared.rows, prepared.errors, strict=True)
        ]  # fmt: skip

    def attributions(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(N, 1, 28, 28) normalised inputs and N target digits -> (N, 28, 28) float32
        integrated gradients of each target's logit, from a blank image (`EXPLAIN_STEPS`)."""
        if len(inputs) == 0:
            return np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        x = torch.from_numpy(np.ascontiguousarray(inputs, np.float32)).to(self.device)
        blank = torch.full_like(x, BLANK_INPUT)
        # Gradients are needed whatever the caller's mode (TorchServe's or a test's).
        with torch.inference_mode(False), torch.enable_grad():
            maps = self._ig().attribute(x, blank, target=torch.from_numpy(targets).to(self.device),
                                        n_steps=EXPLAIN_STEPS, method="gausslegendre")
        return maps.detach()[:, 0].cpu().numpy()

    def _ig(self):
        if self._integrated_gradients is None:
            # Imported here: only the explanation path needs Captum (~0.5 s to import).
            from captum.attr import IntegratedGradients

            self._integrated_gradients = IntegratedGradients(self.module)
        return self._integrated_gradients


# The model input of a blank image (no ink anywhere): the baseline attributions start from.
BLANK_INPUT = float(normalize(np.zeros(1, np.uint8))[0])


def to_pixels(inputs: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) normalised model inputs -> (N, 28, 28) uint8 pixels, rounded to nearest:
    the 8-bit image those inputs are closest to (`normalize` maps it back)."""
    pixels = (inputs[:, 0] * MNIST_STD + MNIST_MEAN) * 255.0
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """A (28, 28) uint8 array as an 8-bit grayscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
