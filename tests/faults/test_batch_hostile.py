"""The batch job against hostile folders, concurrent runs, full disks and signals: real files
(FIFOs, device symlinks, sparse 20 GB files, names that are not UTF-8 or hold line breaks), a
real tmpfs filled up, real SIGTERM/SIGKILL of the job, a real second run on the same output.

Each test runs the CLI as a subprocess, as a user does, and checks the output with the job's
own reader: every file exactly once, no torn row, the right exit status and one clear line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest

from batch import EXIT_INTERRUPTED, EXIT_JOB_FAILED, EXIT_OK, EXIT_ROW_ERRORS
from batch.csv_jsonl_output import encode_row
from batch.decode import MAX_FILE_BYTES
from batch.http_status import BODY_LIMIT
from batch.open_output import read_rows
from project.paths import REPO_ROOT

pytestmark = pytest.mark.faults

HANG_LIMIT_S = 120  # a job that has not finished by then is hanging


@pytest.fixture
def model(model_path) -> Path:
    return model_path


@pytest.fixture
def job(batch_cli, digit_files) -> SimpleNamespace:
    """The batch CLI as a user runs it, and MNIST digits written as files."""
    return SimpleNamespace(run=batch_cli.run, command=batch_cli.command, rows=batch_cli.rows,
                           write_digits=digit_files)  # fmt: skip


def hostile_folder(job, folder: Path) -> dict[bytes, str]:
    """Digits under awkward names plus files no reader may block on or read whole.

    Returns {file name as bytes: "ok" | "error"}: what its row must be."""
    job.write_digits(folder, 4, per_folder=10)
    part = folder / "part000"
    root = os.fsencode(part)
    expected = {}
    renames = {b"00000.png": b"bad\xff\xfe.png", b"00001.png": b"new\nline.png",
               b"00002.png": b"carriage\rreturn.png", b"00003.png": b'quote",comma.png'}
    for old, new in renames.items():
        os.rename(os.path.join(root, old), os.path.join(root, new))
        expected[new] = "ok"
    os.mkfifo(os.path.join(root, b"fifo.png"))
    os.symlink("/dev/zero", os.path.join(root, b"zero.png"))
    with open(os.path.join(root, b"sparse.png"), "wb") as f:
        f.truncate(20 * 2**30)  # 20 GB of holes: no disk used, but read whole it never ends
    os.symlink(os.path.join(root, b"new\nline.png"), os.path.join(root, b"link.png"))
    expected.update({b"fifo.png": "error", b"zero.png": "error", b"sparse.png": "error",
                     b"link.png": "ok"})  # fmt: skip
    return expected


def check_rows(job, out: Path, expected: dict[bytes, str]) -> None:
    rows = job.rows(out)
    names = Counter(os.fsencode(r.path.rsplit("/", 1)[-1]) for r in rows)
    assert names == Counter(set(expected)), f"rows {names} for files {sorted(expected)}"
    for row in rows:
        want = expected[os.fsencode(row.path.rsplit("/", 1)[-1])]
        assert (row.error is None) == (want == "ok"), row
        if want == "error":
            assert row.error.startswith("UnreadableInput:"), row.error
    assert out.read_bytes().endswith(b"\n")


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_local_engine_never_hangs_and_carries_every_name(tmp_path, model, ext, job):
    """FIFO, /dev/zero and a 20 GB sparse file are error rows at once; names that are not
    UTF-8 or hold line breaks come back byte for byte; a resume finds nothing left to do."""
    folder = tmp_path / "in"
    expected = hostile_folder(job, folder)
    out = tmp_path / f"pred.{ext}"
    proc = job.run("score", folder, "-o", out, "--model", model, "--workers", "2",
                     timeout=HANG_LIMIT_S)  # fmt: skip
    assert proc.returncode == EXIT_ROW_ERRORS, proc.stderr
    check_rows(job, out, expected)
    assert f"over the cap of {MAX_FILE_BYTES:,} bytes" in out.read_text(errors="replace")
    again = job.run("score", folder, "-o", out, "--model", model, "--resume",
                      timeout=HANG_LIMIT_S)  # fmt: skip
    assert "0 scored now" in again.stderr, again.stderr
    check_rows(job, out, expected)


@pytest.mark.integration
def test_http_engine_never_hangs_and_carries_every_name(tmp_path, torchserve, job):
    """The http engine: same folder, same rows; the multipart fields never carry file names."""
    folder = tmp_path / "in"
    expected = hostile_folder(job, folder)
    big = folder / "part000" / "big.png"  # over the server's body limit, under the file cap
    big.write_bytes(os.urandom(BODY_LIMIT + 1))
    expected[b"big.png"] = "413"
    out = tmp_path / "pred.jsonl"
    env = {**os.environ, "LENET_INFERENCE_TOKEN": torchserve.inference_token or ""}
    proc = subprocess.run(job.command("score", folder, "-o", out, "--engine", "http", "--url",
                                        torchserve.inference_url, "--images-per-request", "4"),
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=HANG_LIMIT_S)  # fmt: skip
    assert proc.returncode == EXIT_ROW_ERRORS, proc.stderr
    rows = {os.fsencode(r.path.rsplit("/", 1)[-1]): r for r in job.rows(out)}
    assert rows[b"big.png"].error.startswith(
        f"HTTP 413: the request is over the server's body limit (TorchServe's max_request_size, "
        f"{BODY_LIMIT:,}")
    del expected[b"big.png"]
    rows.pop(b"big.png")
    out.write_bytes(b"".join(encode_row(r, "jsonl") for r in rows.values()))
    check_rows(job, out, expected)


def test_second_run_on_the_same_output_is_refused(tmp_path, model, job):
    """One run per output: a second `--resume` while the first runs fails at once, naming the
    first; the first finishes with every file exactly once."""
    folder = tmp_path / "in"
    files = set(job.write_digits(folder, 100)) | slow_scans(folder, 150)
    out = tmp_path / "pred.csv"
    first = subprocess.Popen(job.command("score", folder, "-o", out, "--model", model,
                                           "--workers", "0", "--batch-size", "8"),
                             cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        lock = out.with_name(out.name + ".lock")
        deadline = time.monotonic() + 60
        while not (out.exists() and lock.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Hold the first run still while the second tries, however fast this host scores.
        first.send_signal(signal.SIGSTOP)
        try:
            second = job.run("score", folder, "-o", out, "--model", model, "--resume")
        finally:
            first.send_signal(signal.SIGCONT)
        assert second.returncode == EXIT_JOB_FAILED
        assert f"in use by another run (pid {first.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert first.wait(HANG_LIMIT_S) == EXIT_OK, first.stderr.read()
    finally:
        first.kill()
    rows = job.rows(out)
    assert Counter(r.path for r in rows) == Counter(list(files))
    assert not lock.exists(), "the lock file is removed when the run ends"


def slow_scans(folder: Path, count: int) -> set[str]:
    """`count` 799x799 PNGs of a bar (~0.1 s each to preprocess), so a run lasts a while."""
    from PIL import Image

    (folder / "scans").mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((799, 799), np.uint8)
    pixels[200:600, 350:450] = 255
    Image.fromarray(pixels).save(folder / "scans" / "0000.png")
    data = (folder / "scans" / "0000.png").read_bytes()
    for i in range(1, count):
        (folder / "scans" / f"{i:04d}.png").write_bytes(data)
    return {f"scans/{i:04d}.png" for i in range(count)}


def test_resume_refuses_rows_of_another_model_unless_asked(tmp_path, job):
    folder = tmp_path / "in"
    files = job.write_digits(folder, 6)
    old = _model_with_version(tmp_path / "old.pt", "test-untrained")
    new = _model_with_version(tmp_path / "new.pt", "test-v2")
    out = tmp_path / "pred.jsonl"
    assert job.run("score", folder, "-o", out, "--model", old).returncode == EXIT_OK
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]))  # half done
    refused = job.run("score", folder, "-o", out, "--model", new, "--resume")
    assert refused.returncode == EXIT_JOB_FAILED
    assert "lenet test-untrained (3 rows)" in refused.stderr and "--allow-mixed-models" in (
        refused.stderr)
    assert out.read_bytes() == b"".join(lines[:3]), "a refused resume writes nothing"
    mixed = job.run("score", folder, "-o", out, "--model", new, "--resume",
                      "--allow-mixed-models")  # fmt: skip
    assert mixed.returncode == EXIT_OK, mixed.stderr
    versions = Counter(r.model_version for r in job.rows(out))
    assert versions == {"test-untrained": 3, "test-v2": 3}
    assert sorted(r.path for r in job.rows(out)) == sorted(files)


def _model_with_version(path: Path, version: str) -> Path:
    import torch

    from handler import normalization
    from handler.artifact import METADATA_NAME
    from train.model import LeNet5

    torch.manual_seed(1)
    metadata = {"name": "lenet", "version": version, "variant": "modern",
                "normalization": normalization.describe()}  # fmt: skip
    torch.jit.save(torch.jit.script(LeNet5().eval()), str(path),
                   _extra_files={METADATA_NAME: json.dumps(metadata)})  # fmt: skip
    return path


@pytest.mark.integration
def test_resume_scores_transient_failures_again(tmp_path, torchserve, job):
    """Rows that failed because the server was unreachable (GaveUp) are scored again by
    --resume; the output then has each file once, all scored."""
    from project.ports import free_port

    folder = tmp_path / "in"
    files = job.write_digits(folder, 40)
    out = tmp_path / "pred.csv"
    env = {**os.environ, "LENET_INFERENCE_TOKEN": torchserve.inference_token or ""}

    def run(url: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(job.command("score", folder, "-o", out, "--engine", "http",
                                            "--url", url, "--max-attempts", "1", *extra),
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=HANG_LIMIT_S)  # fmt: skip

    down = run(f"http://127.0.0.1:{free_port()}")
    assert down.returncode == EXIT_ROW_ERRORS, down.stderr
    assert all(r.error.startswith("GaveUp") for r in job.rows(out))
    up = run(torchserve.inference_url, "--resume")
    assert up.returncode == EXIT_OK, up.stderr
    assert "40 retried" in up.stderr, up.stderr
    rows = job.rows(out)
    assert Counter(r.path for r in rows) == Counter(list(files))
    assert all(r.ok for r in rows)


@pytest.fixture
def tiny_disk(tmp_path) -> Path:
    """A real 48 KiB tmpfs (root only)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)],
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_full_disk_is_one_clear_error_and_no_torn_row(tmp_path, model, tiny_disk, ext, job):
    folder = tmp_path / "in"
    files = job.write_digits(folder, 300)
    out = tiny_disk / f"pred.{ext}"
    proc = job.run("score", folder, "-o", out, "--model", model, "--workers", "0")
    assert proc.returncode == EXIT_JOB_FAILED, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "the disk is full (ENOSPC)" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    data = out.read_bytes()
    assert data.endswith(b"\n"), "the last row is whole"
    written = list(read_rows(out, ext))  # every row parses
    assert 0 < len(written) < len(files)
    # Space again (a bigger tmpfs over the same file): --resume completes it, each file once.
    saved = data
    subprocess.run(["mount", "-o", "remount,size=2m", str(tiny_disk)], check=True)
    assert out.read_bytes() == saved
    resumed = job.run("score", folder, "-o", out, "--model", model, "--resume")
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert Counter(r.path for r in job.rows(out)) == Counter(list(files))


def test_summary_into_a_missing_folder_fails_before_any_work(tmp_path, model, job):
    folder = tmp_path / "in"
    job.write_digits(folder, 2)
    out = tmp_path / "pred.csv"
    proc = job.run("score", folder, "-o", out, "--model", model,
                     "--summary", tmp_path / "nope" / "s.json")  # fmt: skip
    assert proc.returncode == EXIT_JOB_FAILED
    assert "folder" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def _job_tree(proc: subprocess.Popen, workers: int, timeout: float = 60) -> list[psutil.Process]:
    """The job's descendants (fork server, decode workers) once they are all up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tree = psutil.Process(proc.pid).children(recursive=True)
        if len(tree) >= workers + 1:
            return tree
        time.sleep(0.1)
    raise AssertionError(f"the job started only {tree}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_orphans_after_the_job_is_killed(tmp_path, model, sig, job):
    """Its fork server and decode workers exit with the job, whatever the signal; SIGTERM
    unwinds (exit 130, rows whole) and --resume then completes every file exactly once."""
    folder = tmp_path / "in"
    files = job.write_digits(folder, 3000)
    out = tmp_path / "pred.csv"
    proc = subprocess.Popen(job.command("score", folder, "-o", out, "--model", model,
                                          "--workers", "2", "--chunk-size", "8",
                                          "--batch-size", "16"),
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        tree = _job_tree(proc, workers=2)
        deadline = time.monotonic() + 60
        while (not out.exists() or out.stat().st_size < 4096) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        status = proc.wait(30)
        _, alive = psutil.wait_procs(tree, timeout=10)
        print(f"{sig.name}: exit {status}; descendants {[p.pid for p in tree]}, alive after "
              f"10 s: {[p.pid for p in alive]}")
        assert not alive, f"orphans left: {[(p.pid, p.cmdline()) for p in alive]}"
        if sig == signal.SIGTERM:
            assert status == EXIT_INTERRUPTED, proc.stderr.read()
            assert "interrupted" in proc.stderr.read()
            assert out.read_bytes().endswith(b"\n")
    finally:
        proc.kill()
    resumed = job.run("score", folder, "-o", out, "--model", model, "--resume")
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert Counter(r.path for r in job.rows(out)) == Counter(list(files))
