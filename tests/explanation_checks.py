"""What the explanation tests compare with, shared by tests/unit/test_explanations.py
(`Predictor.explain`) and tests/unit/test_explanations_handler.py (the handler's explain path):
an explanation equal to another up to float rounding, and a model stand-in that records the
inputs of every forward pass.
"""

from __future__ import annotations

import numpy as np
import torch

from handler.schemas import Explanation


def assert_same(answer, expected: Explanation) -> None:
    """The same explanation up to float rounding (the images beside it in the batch differ)."""
    assert isinstance(answer, Explanation), answer
    assert answer.input_png == expected.input_png
    assert answer.prediction.digit == expected.prediction.digit
    np.testing.assert_allclose(answer.prediction.probabilities, expected.prediction.probabilities,
                               atol=1e-6)  # fmt: skip
    peak = np.abs(expected.attribution).max()
    np.testing.assert_allclose(answer.attribution, expected.attribution, atol=1e-3 * peak)


class Recording(torch.nn.Module):
    """Stands in for the model and keeps every input it is given."""

    def __init__(self, real) -> None:
        super().__init__()
        self.real, self.inputs = real, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.real(x)
