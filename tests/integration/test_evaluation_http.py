"""`python -m evaluation realworld` through a real TorchServe agrees with the in-process scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.cli import main
from samples import realworld


def _report(out) -> dict:
    return json.loads((out / "realworld.json").read_text())


@pytest.mark.slow
def test_subset_over_http_agrees_with_in_process(tmp_path, quick_run):
    model_dir, _ = quick_run
    out = tmp_path / "report"
    code = main(
        ["realworld", "--subset", "40", "--no-mnist", "--model", str(model_dir / "lenet.pt"),
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    for half in realworld.HALVES:
        result = _report(out)["results"]["model"][half]
        http, local = result["http"], result["in_process"]
        assert http["agreement_with_in_process"]["same_digit"] == 1.0
        assert http["accuracy"] == local["accuracy"]
        # Float32 softmax on the server, float64 here: the same probabilities to ~1e-6.
        assert http["agreement_with_in_process"]["max_probability_difference"] < 1e-4
        assert np.isclose(http["calibration"]["ece_uncalibrated"],
                          local["calibration"]["ece_uncalibrated"], atol=1e-4)  # fmt: skip
