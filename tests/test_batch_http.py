"""The batch job's http engine against a real TorchServe: parity with the local engine,
restart mid-run, bad images, retries and failover, a refused token.

Servers are tests/conftest.py's `torchserve` (session) and `torchserve_factory` (private, for the
restart): real TorchServe process groups serving `model_store/lenet.mar` (skips without it).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from batch import EXIT_JOB_FAILED, EXIT_OK, EXIT_ROW_ERRORS
from batch.discover import iter_files
from batch.output import open_output
from tests.batch_helpers import (
    REPO_ROOT,
    mnist_digits,
    read_output,
    run_batch,
    write_digits,
    write_image,
)

pytestmark = pytest.mark.integration


def _env_for(srv) -> dict[str, str]:
    """The CLI finds the server's keys through deploy.keys, like a user's shell would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENET_")}
    env["LENET_KEY_FILE"] = str(srv.key_file)
    return env


def _run(env: dict, *args) -> subprocess.CompletedProcess:
    from tests.batch_helpers import batch_command

    return subprocess.run(batch_command(*args), cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _mixed_folder(root: Path, count: int) -> tuple[dict[str, int], set[str]]:
    images, labels = mnist_digits(count)
    good = {}
    for i in range(count):
        ext = ["png", "jpg", "bmp", "gif", "tiff", "webp"][i % 6]
        rel = f"f{i % 3}/{i:04d}.{ext}"
        write_image(root / rel, images[i])
        good[rel] = int(labels[i])
    bad = {"f0/empty.png": b"", "f1/text.png": b"not an image at all", "f2/0005x.jpg": b"\xff\xd8"}
    for rel, data in bad.items():
        (root / rel).write_bytes(data)
    os.symlink(root / "missing.png", root / "f1/dangling.png")
    return good, set(bad) | {"f1/dangling.png"}


def test_http_and_local_engines_agree_file_by_file(torchserve, mar_path, tmp_path):
    server = torchserve
    folder = tmp_path / "in"
    good, bad = _mixed_folder(folder, 120)
    local_out, http_out = tmp_path / "local.jsonl", tmp_path / "http.jsonl"
    local = run_batch("score", folder, "-o", local_out, "--model", mar_path, "--workers", "2")
    assert local.returncode == EXIT_ROW_ERRORS, local.stderr
    # No --management-url: the model version comes from the handler's X-Model-Version header.
    http = _run(_env_for(server), "score", folder, "-o", http_out, "--engine", "http",
                "--url", server.inference_url, "--concurrency", "4", "--images-per-request", "8")
    assert http.returncode == EXIT_ROW_ERRORS, http.stderr
    local_rows = {r.path: r for r in read_output(local_out)}
    http_rows = {r.path: r for r in read_output(http_out)}
    assert len(read_output(http_out)) == len(http_rows) == len(good) + len(bad)
    assert set(http_rows) == set(local_rows) == set(good) | bad
    for rel in bad:
        assert http_rows[rel].error and local_rows[rel].error, rel
    assert "FileNotFoundError" in http_rows["f1/dangling.png"].error
    assert "InvalidImage" in http_rows["f1/text.png"].error
    for rel in good:
        h, loc = http_rows[rel], local_rows[rel]
        assert h.error is None, f"{rel}: {h.error}"
        assert h.digit == loc.digit, rel
        np.testing.assert_allclose(h.probabilities, loc.probabilities, atol=1e-5, err_msg=rel)
        assert (h.model, h.model_version) == (loc.model, loc.model_version)
        assert h.model_version, "every row names the model version"
    correct = sum(http_rows[rel].digit == label for rel, label in good.items())
    assert correct >= 0.95 * len(good)


def test_restart_mid_run_loses_and_doubles_nothing(torchserve_factory, tmp_path):
    from batch.http_engine import HttpEngine, RetryPolicy

    srv = torchserve_factory()
    folder = tmp_path / "in"
    files = write_digits(folder, 1500, per_folder=300)
    out = tmp_path / "pred.csv"
    writer, _ = open_output(out, resume=False, overwrite=False)
    rows_seen = threading.Event()
    restarted = threading.Event()
    failures: list[BaseException] = []

    def restart_when_busy():
        try:
            rows_seen.wait(120)
            srv.restart()
            restarted.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    bouncer = threading.Thread(target=restart_when_busy)
    bouncer.start()
    engine = HttpEngine([srv.inference_url], token_source=lambda: srv.inference_token,
                        concurrency=4, images_per_request=4,
                        retry=RetryPolicy(max_attempts=12, base=0.25, cap=8.0))
    written_at_restart = None
    with writer:
        for row in engine.score(folder, iter_files(folder)):
            writer.write(row)
            if writer.rows_written == 100:
                rows_seen.set()
            if restarted.is_set() and written_at_restart is None:
                written_at_restart = writer.rows_written
            if rows_seen.is_set() and not restarted.is_set() and not failures:
                time.sleep(0.05)  # hold the job mid-run until the restart has happened
    bouncer.join(timeout=300)
    assert not failures, failures
    assert restarted.is_set() and written_at_restart is not None
    assert written_at_restart < len(files), "the restart did not happen mid-run"
    rows = read_output(out)
    paths = [r.path for r in rows]
    assert len(paths) == len(set(paths)) == len(files), "rows lost or doubled"
    assert set(paths) == set(files)
    assert [r for r in rows if r.error] == [], "every image must be scored after the restart"
    assert engine.retries > 0, "the restart must have been bridged by retries"


def test_refused_token_fails_the_job_with_a_clear_message(torchserve, tmp_path):
    server = torchserve
    folder = tmp_path / "in"
    write_digits(folder, 10)
    env = _env_for(server)
    env["LENET_INFERENCE_TOKEN"] = "not-the-key"
    out = tmp_path / "pred.csv"
    proc = _run(env, "score", folder, "-o", out, "--engine", "http", "--url",
                server.inference_url, "--no-progress")
    assert proc.returncode == EXIT_JOB_FAILED, proc.stderr
    assert "inference token was refused" in proc.stderr and "InvalidKeyException" in proc.stderr
    assert all(r.error is None for r in read_output(out)), "a 401 is not a per-row error"


def test_dead_url_is_retried_then_rows_fail_and_a_live_url_takes_over(torchserve, tmp_path):
    server = torchserve
    from project.ports import free_port

    folder = tmp_path / "in"
    files = write_digits(folder, 24)
    dead = f"http://127.0.0.1:{free_port()}"
    env = _env_for(server)
    only_dead = _run(env, "score", folder, "-o", tmp_path / "dead.csv", "--engine", "http",
                     "--url", dead, "--max-attempts", "2", "--no-progress")
    assert only_dead.returncode == EXIT_ROW_ERRORS, only_dead.stderr
    rows = read_output(tmp_path / "dead.csv")
    assert sorted(r.path for r in rows) == sorted(files)
    assert all(r.error.startswith("GaveUp: 2 attempts") for r in rows)
    both = _run(env, "score", folder, "-o", tmp_path / "both.csv", "--engine", "http",
                "--url", dead, "--url", server.inference_url, "--max-attempts", "4",
                "--images-per-request", "4", "--no-progress")
    assert both.returncode == EXIT_OK, both.stderr
    assert sorted(r.path for r in read_output(tmp_path / "both.csv")) == sorted(files)


def test_queue_full_503s_are_retried_until_every_row_is_scored(torchserve_factory, tmp_path):
    from batch.http_engine import HttpEngine, RetryPolicy

    # A one-slot job queue and far more requests in flight than it holds: TorchServe answers
    # many of them 503 (queue full); each must be retried, never become an error row.
    srv = torchserve_factory(config_overrides={"job_queue_size": "1"})
    folder = tmp_path / "in"
    files = write_digits(folder, 200)
    engine = HttpEngine([srv.inference_url], token_source=lambda: srv.inference_token,
                        concurrency=12, images_per_request=1,
                        retry=RetryPolicy(max_attempts=30, base=0.05, cap=0.5))
    out = tmp_path / "pred.jsonl"
    writer, _ = open_output(out, resume=False, overwrite=False)
    with writer:
        for row in engine.score(folder, iter_files(folder)):
            writer.write(row)
    rows = read_output(out)
    assert sorted(r.path for r in rows) == sorted(files)
    assert [r.error for r in rows if r.error] == []
    assert engine.retries > 0, "a one-slot queue under 12 concurrent requests must answer 503"
