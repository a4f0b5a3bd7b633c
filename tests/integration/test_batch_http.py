"""The batch job's http engine against a real TorchServe: parity with the local engine, bad
images, retries and failover, a refused token. (A server restart in the middle of a job is
tests/faults/test_batch_exactly_once.py::test_server_restart_during_batch.)

Servers are tests/conftest.py's `torchserve` (session) and `torchserve_factory` (private, for the
one-slot queue): real TorchServe process groups serving `model_store/lenet.mar`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from batch import EXIT_JOB_FAILED, EXIT_OK, EXIT_ROW_ERRORS
from batch.discover import iter_files
from batch.http_engine import HttpEngine, RetryPolicy
from batch.open_output import open_output
from project.ports import free_port
from tests.images import FORMATS, write_image


def _mixed_folder(root: Path, mnist_test, count: int) -> tuple[dict[str, int], set[str]]:
    images, labels = mnist_test
    good = {}
    for i in range(count):
        ext = list(FORMATS)[i % len(FORMATS)]
        rel = f"f{i % 3}/{i:04d}.{ext}"
        write_image(root / rel, images[i])
        good[rel] = int(labels[i])
    bad = {"f0/empty.png": b"", "f1/text.png": b"not an image at all", "f2/0005x.jpg": b"\xff\xd8"}
    for rel, data in bad.items():
        (root / rel).write_bytes(data)
    os.symlink(root / "missing.png", root / "f1/dangling.png")
    return good, set(bad) | {"f1/dangling.png"}


def test_http_and_local_engines_agree_file_by_file(torchserve, mar_path, tmp_path, mnist_test,
                                                   batch_cli):  # fmt: skip
    server = torchserve
    folder = tmp_path / "in"
    good, bad = _mixed_folder(folder, mnist_test, 120)
    local_out, http_out = tmp_path / "local.jsonl", tmp_path / "http.jsonl"
    local = batch_cli.run("score", folder, "-o", local_out, "--model", mar_path, "--workers", "2")
    assert local.returncode == EXIT_ROW_ERRORS, local.stderr
    # No --management-url: the model version comes from the handler's X-Model-Version header.
    http = batch_cli.run("score", folder, "-o", http_out, "--engine", "http", "--url",
                         server.inference_url, "--concurrency", "4", "--images-per-request", "8",
                         server=server)  # fmt: skip
    assert http.returncode == EXIT_ROW_ERRORS, http.stderr
    local_rows = {r.path: r for r in batch_cli.rows(local_out)}
    http_rows = {r.path: r for r in batch_cli.rows(http_out)}
    assert len(batch_cli.rows(http_out)) == len(http_rows) == len(good) + len(bad)
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


def test_refused_token_fails_the_job_with_a_clear_message(torchserve, tmp_path, digit_files,
                                                          batch_cli):  # fmt: skip
    server = torchserve
    folder = tmp_path / "in"
    digit_files(folder, 10)
    out = tmp_path / "pred.csv"
    proc = batch_cli.run("score", folder, "-o", out, "--engine", "http", "--url",
                         server.inference_url, "--no-progress", server=server,
                         env={"LENET_INFERENCE_TOKEN": "not-the-key"})  # fmt: skip
    assert proc.returncode == EXIT_JOB_FAILED, proc.stderr
    assert "inference token was refused" in proc.stderr and "InvalidKeyException" in proc.stderr
    assert all(r.error is None for r in batch_cli.rows(out)), "a refused key is no per-row error"


def test_dead_url_is_retried_then_rows_fail_and_a_live_url_takes_over(torchserve, tmp_path,
                                                                      digit_files, batch_cli):
    server = torchserve
    folder = tmp_path / "in"
    files = digit_files(folder, 24)
    dead = f"http://127.0.0.1:{free_port()}"
    only_dead = batch_cli.run("score", folder, "-o", tmp_path / "dead.csv", "--engine", "http",
                              "--url", dead, "--max-attempts", "2", "--no-progress",
                              server=server)  # fmt: skip
    assert only_dead.returncode == EXIT_ROW_ERRORS, only_dead.stderr
    rows = batch_cli.rows(tmp_path / "dead.csv")
    assert sorted(r.path for r in rows) == sorted(files)
    assert all(r.error.startswith("GaveUp: 2 attempts") for r in rows)
    both = batch_cli.run("score", folder, "-o", tmp_path / "both.csv", "--engine", "http",
                         "--url", dead, "--url", server.inference_url, "--max-attempts", "4",
                         "--images-per-request", "4", "--no-progress", server=server)  # fmt: skip
    assert both.returncode == EXIT_OK, both.stderr
    assert sorted(r.path for r in batch_cli.rows(tmp_path / "both.csv")) == sorted(files)


def test_queue_full_503s_are_retried_until_every_row_is_scored(torchserve_factory, tmp_path,
                                                               digit_files, batch_cli):
    # A one-slot job queue and far more requests in flight than it holds: TorchServe answers
    # many of them 503 (queue full); each must be retried, never become an error row.
    srv = torchserve_factory(config_overrides={"job_queue_size": "1"})
    folder = tmp_path / "in"
    files = digit_files(folder, 200)
    engine = HttpEngine([srv.inference_url], token_source=lambda: srv.inference_token,
                        concurrency=12, images_per_request=1,
                        retry=RetryPolicy(max_attempts=30, base=0.05, cap=0.5))
    out = tmp_path / "pred.jsonl"
    writer, _ = open_output(out, resume=False, overwrite=False)
    with writer:
        for row in engine.score(folder, iter_files(folder)):
            writer.write(row)
    rows = batch_cli.rows(out)
    assert sorted(r.path for r in rows) == sorted(files)
    assert [r.error for r in rows if r.error] == []
    assert engine.retries > 0, "a one-slot queue under 12 concurrent requests must answer 503"
