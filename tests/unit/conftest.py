"""Fixtures that several unit test files share: the model's folder and the MNIST inputs the
handler and explanation tests send. All are cheap, built from the root conftest's session-wide
`model_path` and `mnist_test`, so module scope is enough.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samples.digits import encode_png
from samples.render import render_realistic


@pytest.fixture(scope="module")
def model_dir(model_path) -> Path:
    """The folder TorchServe would extract the archive into: it holds `lenet.pt`."""
    assert model_path.name == "lenet.pt", model_path
    return model_path.parent


@pytest.fixture(scope="module")
def digit(mnist_test):
    images, labels = mnist_test
    return images[0], int(labels[0])


@pytest.fixture(scope="module")
def pngs(mnist_test) -> list[bytes]:
    images, _ = mnist_test
    return [encode_png(images[i]) for i in range(4)]


@pytest.fixture(scope="module")
def photo(mnist_test) -> bytes:
    """A photo-like JPEG: preprocessing resamples it, so its model input is not 8-bit."""
    images, _ = mnist_test
    return render_realistic(images[5], np.random.default_rng(5))
