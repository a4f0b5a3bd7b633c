"""The one place that defines how pixels become model inputs.

Training, the TorchServe handler, the batch job and the tests all import these constants and
`normalize`; nothing else may type them again. The values are the mean and standard deviation
of the 60,000 MNIST training images after scaling pixels to [0, 1].
"""

from __future__ import annotations

import numpy as np

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIZE = 28  # MNIST images are 28x28, one channel, white ink on a black background
CLASS_NAMES = [str(d) for d in range(10)]


def normalize(pixels: np.ndarray) -> np.ndarray:
    """Map float pixels in [0, 1] (any shape) to the model's input scale, as float32.

    `uint8` input is accepted and scaled by 1/255 first, so raw IDX arrays can be passed as-is.
    """
    if pixels.dtype == np.uint8:
        pixels = pixels.astype(np.float32) / 255.0
    return ((pixels.astype(np.float32, copy=False) - MNIST_MEAN) / MNIST_STD).astype(
        np.float32, copy=False
    )


def describe() -> dict:
    """The normalisation facts an artifact records about itself."""
    return {
        "mean": [MNIST_MEAN],
        "std": [MNIST_STD],
        "image_size": IMAGE_SIZE,
        "channels": 1,
        "foreground": "white ink on black background",
    }
