"""Exactly-once output of the batch job across crashes: SIGKILL + --resume, torn last lines.

The job runs as a real subprocess and is killed with a real SIGKILL part-way through; the
resumed run must leave every input file in the output exactly once.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from batch import EXIT_JOB_FAILED, EXIT_OK
from batch.csv_jsonl_output import CSV_HEADER, encode_row, repair_torn_tail
from batch.output import Row
from handler import MODEL_NAME


@pytest.fixture(scope="module")
def model(model_path) -> Path:
    return model_path


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def assert_exactly_once(rows: list[Row], expected: set[str]) -> list[Row]:
    counts = Counter(r.path for r in rows)
    doubled = {p: n for p, n in counts.items() if n > 1}
    assert not doubled, f"rows written twice: {list(doubled)[:5]}"
    assert set(counts) == expected, (
        f"missing {sorted(expected - set(counts))[:5]}, extra {sorted(set(counts) - expected)[:5]}")
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_sigkill_mid_run_then_resume_scores_every_file_exactly_once(tmp_path, model, ext,
                                                                  digit_files, batch_cli):
    folder = tmp_path / "in"
    files = digit_files(folder, 3000)
    out = tmp_path / f"pred.{ext}"
    # Small batches so rows trickle out and the kill lands mid-stream, workers busy.
    proc = batch_cli.start("score", folder, "-o", out, "--model", model, "--workers", "2",
                           "--batch-size", "16", "--chunk-size", "8", "--no-progress",
                           log=tmp_path / "job.log")  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # a hang, not a slow host, fails this
        while count_lines(out) < 300:
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "no rows appeared within 300 s"
            time.sleep(0.01)
    finally:
        batch_cli.kill(proc)  # the job and its preprocessing workers, at once
    assert proc.returncode == -signal.SIGKILL
    written = count_lines(out)
    assert 300 <= written < len(files), f"kill landed after {written} lines"

    resumed = batch_cli.run("score", folder, "-o", out, "--model", model, "--resume",
                            "--no-progress")  # fmt: skip
    assert resumed.returncode == EXIT_OK, resumed.stderr
    rows = assert_exactly_once(batch_cli.rows(out), set(files))
    assert all(r.error is None for r in rows)
    # The resumed run really skipped the done prefix instead of rescoring everything.
    assert f"{len(files)} (" in resumed.stderr
    scored_now = int(resumed.stderr.split(" scored now")[0].rsplit("; ", 1)[1])
    assert scored_now <= len(files) - (written - (ext == "csv") - 1)


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_torn_last_line_is_repaired_on_resume(tmp_path, model, ext, digit_files, batch_cli):
    folder = tmp_path / "in"
    files = digit_files(folder, 20)
    out = tmp_path / f"pred.{ext}"
    assert batch_cli.run("score", folder, "-o", out, "--model", model).returncode == EXIT_OK
    rows = batch_cli.rows(out)
    # Simulate a crash mid-write: drop the last 5 rows, then leave half of the next one.
    keep, torn = rows[:15], rows[15]
    header = (",".join(CSV_HEADER) + "\n").encode() if ext == "csv" else b""
    out.write_bytes(header + b"".join(encode_row(r, ext) for r in keep)
                    + encode_row(torn, ext)[:37])
    resumed = batch_cli.run("score", folder, "-o", out, "--model", model, "--resume")
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert "torn last line" in resumed.stderr
    final = assert_exactly_once(batch_cli.rows(out), set(files))
    assert final[:15] == keep, "rows before the tear must be kept as they were"
    assert out.read_bytes().endswith(b"\n")


def test_repair_torn_tail_keeps_complete_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c":')
    assert repair_torn_tail(path) == len(b'{"c":')
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    assert repair_torn_tail(path) == 0
    path.write_bytes(b"no newline at all")
    assert repair_torn_tail(path) == len(b"no newline at all")
    assert path.read_bytes() == b""


def test_resume_skips_files_already_in_the_output(tmp_path, model, digit_files, batch_cli):
    folder = tmp_path / "in"
    files = digit_files(folder, 12)
    out = tmp_path / "pred.jsonl"
    earlier = Row("part000/00003.png", 3, 0.5, [0.5, 0.5] + [0.0] * 8, MODEL_NAME, "earlier-run")
    out.write_bytes(encode_row(earlier, "jsonl"))
    # Another model version wrote the earlier row: mixing is refused unless asked for.
    proc = batch_cli.run("score", folder, "-o", out, "--model", model, "--resume",
                         "--allow-mixed-models")  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr
    rows = assert_exactly_once(batch_cli.rows(out), set(files))
    assert rows[0] == earlier, "a done row is neither rescored nor rewritten"
    assert "11 scored now, 1 from earlier runs" in proc.stderr


def test_overwrite_replaces_and_plain_run_refuses(tmp_path, model, digit_files, batch_cli):
    folder = tmp_path / "in"
    files = digit_files(folder, 5)
    out = tmp_path / "pred.csv"
    out.write_text("precious,data\n")
    refused = batch_cli.run("score", folder, "-o", out, "--model", model)
    assert refused.returncode == EXIT_JOB_FAILED
    assert out.read_text() == "precious,data\n", "a refused run must not touch the file"
    resume_foreign = batch_cli.run("score", folder, "-o", out, "--model", model, "--resume")
    assert resume_foreign.returncode == EXIT_JOB_FAILED
    assert "header" in resume_foreign.stderr
    replaced = batch_cli.run("score", folder, "-o", out, "--model", model, "--overwrite")
    assert replaced.returncode == EXIT_OK, replaced.stderr
    assert_exactly_once(batch_cli.rows(out), set(files))


def test_corrupt_row_in_the_middle_stops_resume_with_its_line_number(tmp_path, model,
                                                                     digit_files, batch_cli):
    folder = tmp_path / "in"
    digit_files(folder, 3)
    out = tmp_path / "pred.jsonl"
    assert batch_cli.run("score", folder, "-o", out, "--model", model).returncode == EXIT_OK
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(lines[0] + b"{garbage\n" + b"".join(lines[1:]))
    proc = batch_cli.run("score", folder, "-o", out, "--model", model, "--resume")
    assert proc.returncode == EXIT_JOB_FAILED
    assert f"{out}:2: malformed row" in proc.stderr
