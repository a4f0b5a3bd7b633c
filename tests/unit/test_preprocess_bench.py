"""The preprocessing benchmark's command line (tools/preprocess_bench.py): what it prints and
writes. Its figures are measurements, not asserted here."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from project.paths import REPO_ROOT
from tools import legacy_baseline, preprocess_bench


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.preprocess_bench", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )


# The speed run times the baseline, which comes from git history (not in a shallow clone).
needs_baseline = pytest.mark.skipif(
    not legacy_baseline.available(), reason=legacy_baseline.unavailable_reason()
)


@needs_baseline
def test_bench_prints_json_a_table_and_the_targets(tmp_path):
    # An empty MNIST folder: a synthetic digit stands in and the set kinds are left out.
    result = run_tool("--repeat", "3", "--repeat-large", "1", "--mnist-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    document, _, table = result.stdout.partition("\n}\n")
    report = json.loads(document + "\n}")
    rows = report["preprocess_ms"]
    assert set(rows) == {
        "png_28x28_mnist", "png_28x28_inverted", "jpeg_300x300_rgb", "jpeg_4000x3000_photo"
    }
    for row in rows.values():
        assert row["decode_ms"] > 0 and row["legacy_ms"] > 0 and row["new_ms"] > 0
        assert row["speedup"] == round(row["legacy_ms"] / row["new_ms"], 2)
    assert rows["png_28x28_mnist"]["runs"] == 3 and rows["jpeg_4000x3000_photo"]["runs"] == 1
    assert rows["jpeg_4000x3000_photo"]["max_side"] == 4000
    # Every speed-up target, and the per-decode bound for every kind up to 400 px.
    names = [check["target"] for check in report["targets"]]
    assert "jpeg_300x300_rgb: legacy/new >= 8" in names
    assert "png_28x28_inverted: new/decode <= 3" in names
    assert not any(name.startswith("jpeg_4000x3000_photo: new/decode") for name in names)
    assert "legacy/new" in table and "jpeg_4000x3000_photo" in table
    assert ("met " in table) or ("NOT met" in table)


def test_preview_writes_what_the_model_sees(tmp_path):
    canvas = Image.new("RGB", (120, 90), (235, 235, 230))
    ImageDraw.Draw(canvas).line([(40, 15), (80, 15), (55, 75)], fill=(30, 30, 30), width=8)
    good = tmp_path / "digit.jpg"
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=90)
    good.write_bytes(buffer.getvalue())
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    result = run_tool("preview", str(good), str(bad), "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 1  # one input failed
    assert "cannot decode 12 bytes as an image" in result.stderr
    written = Image.open(tmp_path / "out" / "digit.mnist.png")
    assert written.size == (28, 28) and written.mode == "L"
    assert np.asarray(written)[0].max() == 0 and np.asarray(written).max() > 200


def test_without_the_baseline_bench_names_the_commit_and_the_fix(tmp_path, monkeypatch, capsys):
    # A commit no clone has stands in for a shallow clone's missing one.
    monkeypatch.setattr(legacy_baseline, "COMMIT", "0" * 40)
    monkeypatch.delitem(sys.modules, legacy_baseline.MODULE_NAME, raising=False)
    assert not legacy_baseline.available()
    assert preprocess_bench.main(["--repeat", "1", "--mnist-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "0" * 40 + ":handler/preprocessing.py" in error and "git fetch --unshallow" in error
