"""Fixtures of the fault-injection tests: the image pool every fault test sends, and a private
TorchServe per test for the tests that kill its workers or restart it.

`pool` is session-scoped: tests/faults/test_faults.py and test_batch_exactly_once.py both use
it, and building it runs the served model over up to 1,024 MNIST digits, so it is built once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.predictor import Predictor
from samples.digits import LabelledImages, answered_correctly, encode_png

POOL_SIZE = 512


@pytest.fixture(scope="session")
def pool(mnist_test, mar_path, tmp_path_factory) -> tuple[Path, LabelledImages]:
    """MNIST test digits the served model gets right offline, as PNGs, and the load tests'
    pool file of them: under a fault, any wrong answer is then a serving defect."""
    from loadtests.pool import ImagePool

    images, labels = mnist_test
    candidates = LabelledImages([encode_png(images[i]) for i in range(2 * POOL_SIZE)],
                                [int(v) for v in labels[: 2 * POOL_SIZE]],
                                list(range(2 * POOL_SIZE)))  # fmt: skip
    good = answered_correctly(Predictor.load(mar_path, device="cpu"), candidates, limit=POOL_SIZE)
    path = tmp_path_factory.mktemp("pool") / "pool.npz"
    ImagePool(good.images, good.labels, good.indices).save(path)
    return path, good


@pytest.fixture
def fault_server(torchserve_factory):
    """A private TorchServe per test: its workers get killed, it gets restarted."""
    return torchserve_factory()
