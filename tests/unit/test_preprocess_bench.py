"""`python -m tools.preprocess_bench`: the preprocessing benchmark's report, and the preview of
what the model sees, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from project.paths import REPO_ROOT
from tests.images import encode


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.preprocess_bench", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)  # fmt: skip


def test_bench_prints_json_then_a_table(tmp_path):
    result = run_tool("--bench", "--repeat", "3", "--mnist-dir", str(tmp_path))  # synthetic
    assert result.returncode == 0, result.stderr[-2000:]
    document, _, table = result.stdout.partition("\n}\n")
    rows = json.loads(document + "\n}")["preprocess_ms"]
    assert set(rows) == {
        "png_28x28_mnist", "png_28x28_inverted", "jpeg_300x300_rgb", "jpeg_4000x3000_photo"
    }  # fmt: skip
    for row in rows.values():
        assert row["runs"] == 3 and 0 < row["median_ms"] <= row["p95_ms"]
    assert rows["jpeg_4000x3000_photo"]["bytes"] > rows["png_28x28_mnist"]["bytes"]
    assert "median ms" in table and "jpeg_4000x3000_photo" in table


def test_preview_writes_what_the_model_sees(tmp_path, mnist_test):
    images, _ = mnist_test
    scan = Image.fromarray(255 - images[0]).resize((112, 112))  # dark ink on light paper
    good = tmp_path / "digit.jpg"
    good.write_bytes(encode(scan, "JPEG", mode="RGB", quality=90))
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    result = run_tool(str(good), str(bad), "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 1  # one input failed
    assert "cannot decode 12 bytes as an image" in result.stderr
    with Image.open(tmp_path / "out" / "digit.mnist.png") as written:
        assert written.size == (28, 28) and written.mode == "L"
        pixels = np.asarray(written)
    # A digit in MNIST's form: light ink at full intensity, a black margin all round.
    assert pixels.max() == 255
    assert not pixels[[0, -1]].any() and not pixels[:, [0, -1]].any()
