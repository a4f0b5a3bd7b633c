"""`python -m evaluation realworld` on a subset: in-process, and through a real TorchServe."""

from __future__ import annotations

import json

import pytest

from evaluation import scoring
from evaluation.cli import main
from samples import realworld

SUBSET = 100  # one balanced block: every label, source kind and presentation


def _report(out) -> dict:
    return json.loads((out / "realworld.json").read_text())


def test_subset_in_process_report(tmp_path, capsys, quick_run):
    model_dir, _ = quick_run
    out = tmp_path / "report"
    code = main(
        ["realworld", "--subset", str(SUBSET), "--no-http", "--model", str(model_dir / "lenet.pt"),
         "--baseline", str(model_dir / "lenet.pt"), "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    report = _report(out)
    assert report["set"]["count"] == {"val": SUBSET, "test": SUBSET}
    assert set(report["results"]) == {"baseline", "model"}
    model = report["results"]["model"]
    assert report["results"]["baseline"]["val"] == model["val"]  # the same file twice

    # The figures are what the model answers: recompute the validation accuracy by hand.
    dataset = realworld.load("val", SUBSET)
    logits = scoring.logits_in_process(model_dir / "lenet.pt", realworld.model_inputs(dataset))
    val = model["val"]["in_process"]
    assert val["accuracy"] == pytest.approx(float((logits.argmax(1) == dataset.labels).mean()))
    assert set(val["by"]) == {"source_kind", "source", "label", "style", "presentation"}
    assert set(val["by"]["source_kind"]) == {"font", "stroke"}
    assert sum(row["n"] for row in val["by"]["presentation"].values()) == SUBSET
    calibration = val["calibration"]
    assert calibration["temperature"] > 0 and len(calibration["reliability_calibrated"]) == 15
    assert "mnist_test" in model  # MNIST_DIR is set wherever the quick model could train

    for name in ("confusion_model_val.png", "reliability_model_test.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "accuracy (%) by source" in printed and "calibration" in printed


def test_bad_arguments_are_refused(tmp_path, capsys):
    assert main(["realworld", "--subset", "0", "--out", str(tmp_path)]) == 2
    assert main(["realworld", "--model", str(tmp_path / "missing.pt")]) == 2
    assert "not found" in capsys.readouterr().err
