"""The batch folder-scoring job with the local engine: discovery, rows, errors, exit codes.

Real files in temp folders, a real TorchScript model (conftest's `model_path`), the CLI as a
subprocess (conftest's `batch_cli`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from batch import EXIT_JOB_FAILED, EXIT_OK, EXIT_ROW_ERRORS
from batch.discover import image_extensions, iter_files
from batch.local_engine import LocalEngine, LocalOptions
from handler import MODEL_NAME
from project import paths
from tests.images import FORMATS, write_image


@pytest.fixture(scope="module")
def model(model_path) -> Path:
    return model_path


def score_in_process(folder: Path, paths_in=None, **options) -> dict:
    """{path: row} from the local engine run in this process (`options`: LocalOptions)."""
    with LocalEngine(LocalOptions(**options)) as engine:
        return {r.path: r for r in engine.score(folder, paths_in or iter_files(folder))}


@pytest.fixture
def mixed_folder(tmp_path, mnist_test) -> tuple[Path, dict[str, int], set[str]]:
    """Nested folders: one MNIST digit per format, plus broken files of every kind.

    Returns (folder, {good path: label}, {bad path}).
    """
    root = tmp_path / "in"
    images, labels = mnist_test
    good = {}
    for i, ext in enumerate(list(FORMATS) * 2):
        rel = f"{'deep/er' if i % 2 else 'top'}/digit{i}.{ext}"
        write_image(root / rel, images[i])
        good[rel] = int(labels[i])
    bad = {
        "broken/empty.png": b"",
        "broken/text.png": b"this is not an image, whatever its name says",
        "broken/truncated.png": (root / "top/digit0.png").read_bytes()[:60],
        "broken/garbage.jpg": os.urandom(512),
    }
    for rel, data in bad.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    # Unreadable even for root: a symlink to nowhere.
    os.symlink(root / "nowhere.png", root / "broken/dangling.png")
    (root / "notes.txt").write_text("not selected: not an image extension")
    return root, good, set(bad) | {"broken/dangling.png"}


def test_discovery_is_recursive_sorted_and_uses_pillow_extensions(mixed_folder):
    root, good, bad = mixed_folder
    found = list(iter_files(root))
    assert set(found) == set(good) | bad
    assert "notes.txt" not in found
    assert found == list(iter_files(root)), "order must be deterministic"
    assert sorted(found, key=lambda p: p.split("/")) == found
    assert {".png", ".jpg", ".bmp", ".gif", ".tif", ".tiff", ".webp"} <= image_extensions()


def test_glob_selects_by_relative_path_or_name(mixed_folder):
    root, good, _ = mixed_folder
    assert set(iter_files(root, "*.bmp")) == {p for p in good if p.endswith(".bmp")}
    assert set(iter_files(root, "deep/*")) == {p for p in good if p.startswith("deep/")}
    assert set(iter_files(root, "*.txt")) == {"notes.txt"}


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_every_file_gets_exactly_one_row_and_bad_files_are_error_rows(mixed_folder, model,
                                                                     tmp_path, ext, batch_cli):
    root, good, bad = mixed_folder
    out = tmp_path / f"pred.{ext}"
    proc = batch_cli.run("score", root, "--output", out, "--model", model, "--workers", "2",
                     "--batch-size", "4", "--chunk-size", "3")
    assert proc.returncode == EXIT_ROW_ERRORS, proc.stderr
    rows = batch_cli.rows(out)
    assert sorted(r.path for r in rows) == sorted(set(good) | bad), "each file exactly once"
    by_path = {r.path: r for r in rows}
    for rel in bad:
        assert by_path[rel].error, f"{rel} should be an error row"
        assert by_path[rel].digit is None
    assert "FileNotFoundError" in by_path["broken/dangling.png"].error
    assert "InvalidImage" in by_path["broken/text.png"].error
    for rel in good:
        row = by_path[rel]
        assert row.error is None, f"{rel}: {row.error}"
        assert len(row.probabilities) == 10
        assert abs(sum(row.probabilities) - 1) < 1e-5
        assert row.digit == int(np.argmax(row.probabilities))
        assert row.confidence == max(row.probabilities)
        assert row.model == MODEL_NAME and row.model_version
    if model == paths.DEFAULT_ARTIFACT:
        correct = sum(by_path[rel].digit == label for rel, label in good.items())
        assert correct >= len(good) - 1, f"only {correct}/{len(good)} digits right"


def test_csv_and_jsonl_carry_identical_rows(mixed_folder, model, tmp_path, batch_cli):
    root, _, _ = mixed_folder
    for ext in ("csv", "jsonl"):
        proc = batch_cli.run("score", root, "-o", tmp_path / f"p.{ext}", "--model", model,
                             "--workers", "0")  # fmt: skip
        assert proc.returncode == EXIT_ROW_ERRORS, proc.stderr
    csv_rows = sorted(batch_cli.rows(tmp_path / "p.csv"), key=lambda r: r.path)
    jsonl_rows = sorted(batch_cli.rows(tmp_path / "p.jsonl"), key=lambda r: r.path)
    assert csv_rows == jsonl_rows


def test_worker_processes_give_the_same_answers_as_inline(tmp_path, model, digit_files):
    digits = digit_files(tmp_path / "in", 300, per_folder=100)
    results = {
        workers: score_in_process(tmp_path / "in", model=model, workers=workers, batch_size=64,
                                  chunk_size=16)
        for workers in (0, 2)
    }  # fmt: skip
    assert set(results[0]) == set(results[2]) == set(digits)
    for rel, row in results[0].items():
        np.testing.assert_allclose(results[2][rel].probabilities, row.probabilities, atol=1e-6)


def test_file_vanishing_mid_run_becomes_an_error_row(tmp_path, model, digit_files):
    digit_files(tmp_path / "in", 40, per_folder=40)
    victim = "part000/00020.png"

    def paths():
        for i, rel in enumerate(iter_files(tmp_path / "in")):
            if i == 10:  # discovered already, deleted before its worker reads it
                (tmp_path / "in" / victim).unlink()
            yield rel

    rows = score_in_process(tmp_path / "in", paths(), model=model, workers=2, chunk_size=4)
    assert len(rows) == 40
    assert rows[victim].error.startswith("FileNotFoundError")
    assert sum(r.error is None for r in rows.values()) == 39


def test_exit_codes(tmp_path, model, digit_files, batch_cli):
    folder = tmp_path / "in"
    digit_files(folder, 5)
    out = tmp_path / "p.csv"
    ok = batch_cli.run("score", folder, "-o", out, "--model", model)
    assert ok.returncode == EXIT_OK, ok.stderr
    again = batch_cli.run("score", folder, "-o", out, "--model", model)
    assert again.returncode == EXIT_JOB_FAILED
    assert "already exists" in again.stderr and "--resume" in again.stderr
    missing = batch_cli.run("score", folder, "-o", tmp_path / "q.csv", "--model",
                        tmp_path / "nope.pt")
    assert missing.returncode == EXIT_JOB_FAILED
    assert "nope.pt" in missing.stderr and "not found" in missing.stderr
    assert not (tmp_path / "q.csv").exists(), "a failed start must not leave an output behind"
    bad_ext = batch_cli.run("score", folder, "-o", tmp_path / "p.xlsx", "--model", model)
    assert bad_ext.returncode == EXIT_JOB_FAILED and ".xlsx" in bad_ext.stderr
    no_dir = batch_cli.run("score", tmp_path / "absent", "-o", tmp_path / "r.csv")
    assert no_dir.returncode == EXIT_JOB_FAILED and "not a folder" in no_dir.stderr
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    errors = batch_cli.run("score", folder, "-o", out, "--model", model, "--overwrite")
    assert errors.returncode == EXIT_ROW_ERRORS, errors.stderr
    assert len(batch_cli.rows(out)) == 6


def test_summary_json_and_plot(tmp_path, model, digit_files, batch_cli):
    folder = tmp_path / "in"
    labels = digit_files(folder, 60)
    (folder / "bad.png").write_bytes(b"nope")
    summary, plot = tmp_path / "summary.json", tmp_path / "plot.png"
    proc = batch_cli.run("score", folder, "-o", tmp_path / "p.jsonl", "--model", model,
                     "--summary", summary, "--plot", plot, "--workers", "2")
    assert proc.returncode == EXIT_ROW_ERRORS, proc.stderr
    data = json.loads(summary.read_text())
    # Memory of the whole job: the main process and each decode worker, measured.
    assert 50 < data["peak_rss_mb"] < 2000
    assert len(data["peak_rss_workers_mb"]) == 2
    assert all(10 < w < 2000 for w in data["peak_rss_workers_mb"])
    rows = batch_cli.rows(tmp_path / "p.jsonl")
    assert data["rows_total"] == len(labels) + 1 and data["rows_error"] == 1
    for d in range(10):
        assert data["per_digit"][str(d)] == sum(r.digit == d for r in rows)
    assert sum(data["confidence_histogram"]["counts"]) == len(labels)
    assert data["images_per_s"] > 0
    assert "per digit:" in proc.stderr and "errors" in proc.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as img:
        assert img.size[0] > 500 and img.size[1] > 200

