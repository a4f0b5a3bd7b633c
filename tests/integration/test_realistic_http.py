"""Accuracy of the served model on realistic uploads, end to end over HTTP.

1,000 distinct MNIST TEST digits are rendered as photos/scans of dark ink on light paper
(`tests.realistic.render_realistic_set`, fixed seed: off-centre, any size, grain, gradients,
tints, JPEG or PNG) and sent to the real session TorchServe in multi-image requests through the
project's client. The served pipeline (decode -> MNIST-style normalisation -> LeNet) must get at
least 97 % of them right.
"""

from __future__ import annotations

import numpy as np
import pytest

from client import LenetClient
from handler.schemas import Prediction
from tests.realistic import render_realistic_set

pytestmark = pytest.mark.slow

COUNT = 1000
SEED = 1998  # fixed: the same uploads on every run
PER_REQUEST = 50  # multi-image requests keep 1,000 images to 20 round trips
MIN_ACCURACY = 0.97


def test_realistic_uploads_accuracy_over_http(torchserve, mnist_test):
    images, labels = mnist_test
    uploads, truth = render_realistic_set(images, labels, COUNT, SEED)
    client = LenetClient(torchserve.inference_url, token=torchserve.inference_token, timeout=60)
    answers = []
    with client:
        for start in range(0, COUNT, PER_REQUEST):
            answers += client.predict(uploads[start : start + PER_REQUEST])
    assert len(answers) == COUNT
    failed = [i for i, a in enumerate(answers) if not isinstance(a, Prediction)]
    assert not failed, f"{len(failed)} uploads were refused, e.g. {answers[failed[0]]}"
    predicted = np.array([a.digit for a in answers])
    accuracy = float((predicted == truth).mean())
    # Reported in the test log (pytest -rA / -s) so the figure can be quoted.
    print(f"\nrealistic HTTP accuracy: {accuracy:.2%} on {COUNT} MNIST test digits (seed {SEED})")
    assert accuracy >= MIN_ACCURACY, f"accuracy {accuracy:.2%} < {MIN_ACCURACY:.0%}"
