"""What the fault-injection tests (tests/faults/test_faults.py, test_batch_exactly_once.py) measure
with: each test's figures recorded for docs/reliability.md, pool digits written as image files,
an http batch job's arguments, its output read back and tallied against the labels while it
runs and after, and one normal request checked for the right digit.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

import requests

from deploy.keys import auth_headers
from handler.schemas import Prediction
from project.paths import RESULTS_DIR
from tests.images import write_labelled_pngs

RESULTS = RESULTS_DIR / "faults"


def record(name: str, data: dict) -> dict:
    """Print a test's figures and keep them as JSON for docs/reliability.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"test": name, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    return data


def write_images(pool, directory: Path, count: int) -> dict[str, int]:
    """`count` PNG files (pool digits, repeated under distinct names); {relative path: label}."""
    _, digits = pool
    return write_labelled_pngs(directory, digits.images, digits.labels, count, per_folder=1000)


def http_job(images: Path, output: Path, server, summary: Path | None = None) -> list[str]:
    """Arguments of `python -m batch score` with the http engine against `server`, resumable."""
    args = ["score", str(images), "--output", str(output), "--engine", "http",
            "--url", server.inference_url, "--resume", "--no-progress", "--concurrency", "4"]
    return args + (["--summary", str(summary)] if summary else [])  # fmt: skip


def data_rows(output: Path) -> int:
    """Complete data rows in a CSV written so far (header excluded, torn tail ignored)."""
    if not output.is_file():
        return 0
    data = output.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return max(0, complete.count(b"\n") - 1)


def wait_rows(proc, output: Path, rows: int, timeout: float = 300) -> int:
    """Wait until the output holds `rows` rows; fails if the job ends or hangs first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = data_rows(output)
        if seen >= rows:
            return seen
        if proc.poll() is not None:
            raise AssertionError(f"batch job exited ({proc.returncode}) at {seen} < {rows} rows")
        time.sleep(0.005)
    raise AssertionError(f"batch job reached {data_rows(output)} < {rows} rows in {timeout} s")


def tally(output: Path, labels: dict[str, int]) -> dict:
    """What the output holds against what was asked: counted, for the results and the asserts."""
    with open(output, newline="") as fh:
        rows = list(csv.DictReader(fh))
    counts = Counter(row["path"] for row in rows)
    errors = [row for row in rows if row["error"]]
    wrong = [row["path"] for row in rows
             if not row["error"] and int(row["digit"]) != labels.get(row["path"], -1)]  # fmt: skip
    return {
        "images": len(labels),
        "rows": len(rows),
        "lost": len(set(labels) - set(counts)),
        "duplicated": sum(n - 1 for n in counts.values() if n > 1),
        "unknown": len(set(counts) - set(labels)),
        "error_rows": len(errors),
        "wrong_digits": len(wrong),
        "examples": {"errors": [f"{r['path']}: {r['error']}" for r in errors[:3]],
                     "wrong": wrong[:3]},  # fmt: skip
    }


def assert_exactly_once(counted: dict) -> None:
    """Every file has exactly one row, no row is an error, and every digit is its label."""
    bad = {k: counted[k] for k in ("lost", "duplicated", "unknown", "error_rows", "wrong_digits")
           if counted[k]}  # fmt: skip
    assert not bad, f"{bad}, e.g. {counted['examples']}"


def predict_ok(server, pool) -> None:
    """One normal request gets the right digit."""
    _, digits = pool
    resp = requests.post(server.predict_url, data=digits.images[0], timeout=30,
                         headers={"Content-Type": "image/png",
                                  **auth_headers(server.inference_token)})  # fmt: skip
    assert resp.status_code == 200, resp.text[:300]
    assert Prediction.model_validate_json(resp.content).digit == digits.labels[0]
