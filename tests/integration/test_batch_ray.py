"""The batch job's ray engine on a real two-node Ray cluster started on this machine.

The cluster is two `ray start --block` processes (a head and a worker node: separate raylets,
object stores and temp dirs under pytest's tmp path), every port chosen free, each node on its
own loopback address (127.0.0.2, 127.0.0.3: Ray's CLI gives a node that says 127.0.0.1 the
host's first interface instead; a node on any other address listens on every interface, so the
cluster has token authentication on, with a token of its own). The job runs as a subprocess
against `--address` (and once through Ray Client, `ray://`), exactly as a user runs it. Faults
are real: the worker node's raylet and the driver get SIGKILL part-way. Teardown stops every
process the cluster started and asserts that none, and none of its ports, is left.

The cluster itself (nodes, ports, tokens, stopping) is tests/ray_cluster.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from batch import EXIT_JOB_FAILED, EXIT_OK, EXIT_ROW_ERRORS
from project import paths
from tests.images import FORMATS, write_image
from tests.ray_cluster import RayCluster, alive, free_ports, listening_ports

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install '.[ray]'")

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> RayCluster:
    made = RayCluster(tmp_path_factory.mktemp("ray"))
    try:
        yield made.start()
    finally:
        seen = made.stop()
        left = [(p.pid, p.name()) for p in seen if alive(p)]
        left += [(p.pid, p.name()) for node in made.nodes for p in node.processes()]
        assert seen, "the cluster's processes were never found"
        assert not left, f"Ray processes left behind: {left}"
        assert not made.ports() & listening_ports(), "a port of the cluster is still listening"


@pytest.fixture(scope="module")
def model(model_path) -> Path:
    return model_path


def assert_exactly_once(rows, expected: set[str]) -> dict:
    counts = Counter(r.path for r in rows)
    assert not [p for p, n in counts.items() if n > 1], "rows written twice"
    assert set(counts) == expected, (
        f"missing {sorted(expected - set(counts))[:5]}, extra {sorted(set(counts) - expected)[:5]}")
    return {r.path: r for r in rows}


def expected_digits(folder: Path, rels, model: Path) -> dict[str, int]:
    """The digit the predictor gives each file, in this process: what every engine must say."""
    from handler.predictor import Predictor

    predictor = Predictor.load(model, "cpu")
    rels = sorted(rels)
    answers = predictor.predict([(folder / rel).read_bytes() for rel in rels])
    return {rel: a.digit for rel, a in zip(rels, answers, strict=True)}


def wait_for_rows(path: Path, count: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "rb") as f:
                if sum(1 for _ in f) >= count:
                    return
        except FileNotFoundError:
            pass
        assert proc.poll() is None, "the job ended before the fault could be injected"
        assert time.monotonic() < deadline, f"fewer than {count} rows after {timeout} s"
        time.sleep(0.05)


@pytest.fixture
def mixed_folder(tmp_path, mnist_test, digit_files) -> tuple[Path, set[str]]:
    """Digits in every format Pillow writes, 300 PNG digits, and broken files of every kind."""
    root = tmp_path / "in"
    digit_files(root / "png", 300)
    images, _ = mnist_test
    for i, ext in enumerate(FORMATS):
        write_image(root / f"formats/digit{i}.{ext}", images[i])
    bad = {"broken/empty.png": b"", "broken/text.png": b"not an image, whatever its name",
           "broken/truncated.png": (root / "formats/digit0.png").read_bytes()[:60]}
    for rel, data in bad.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.symlink(root / "nowhere.png", root / "broken/dangling.png")
    return root, set(bad) | {"broken/dangling.png"}


def test_two_nodes_score_the_same_rows_as_the_local_engine(cluster, mixed_folder, model,
                                                           tmp_path, batch_cli):
    """--address HOST:PORT into JSONL, and ray:// (Ray Client) into Parquet, against the local
    engine's CSV: identical rows, and rows scored on both nodes."""
    root, bad = mixed_folder
    local = batch_cli.run("score", root, "-o", tmp_path / "local.csv", "--model", model,
                          "--no-progress")  # fmt: skip
    assert local.returncode == EXIT_ROW_ERRORS, local.stderr
    # Small batches, so that both nodes' actors get some of a short job.
    proc = batch_cli.run("score", root, "-o", tmp_path / "ray.jsonl", "--model", model,
                         "--engine", "ray", "--address", cluster.head.address,
                         "--batch-size", "16", "--chunk-size", "16",
                         "--summary", tmp_path / "summary.json", "--no-progress",
                         env=cluster.env)  # fmt: skip
    assert proc.returncode == EXIT_ROW_ERRORS, proc.stderr[-3000:]

    local_rows = {r.path: r for r in batch_cli.rows(tmp_path / "local.csv")}
    ray_rows = assert_exactly_once(batch_cli.rows(tmp_path / "ray.jsonl"), set(local_rows))
    for path, want in local_rows.items():
        got = ray_rows[path]
        assert (got.digit, got.error, got.model, got.model_version) == (
            want.digit, want.error, want.model, want.model_version), path
        if want.probabilities is not None:
            assert max(abs(a - b) for a, b in zip(got.probabilities, want.probabilities,
                                                  strict=True)) < 1e-5, path  # fmt: skip
    assert {p for p, r in ray_rows.items() if r.error} == bad
    assert all(r.model_version for r in ray_rows.values())

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["engine"] == "ray" and summary["rows_total"] == len(local_rows)
    per_node = summary["rows_per_node"]
    print("rows per node:", per_node)
    assert {label.split("/")[0] for label in per_node} == {"127.0.0.2", "127.0.0.3"}
    assert sum(per_node.values()) == len(local_rows) and min(per_node.values()) > 0
    assert "rows per node: 127.0.0.2/" in proc.stderr

    # The same job through Ray Client (ray://), into Parquet: the same rows again.
    client = f"ray://{cluster.head.ip}:{cluster.head.ports['ray-client-server-port']}"
    proc = batch_cli.run("score", root, "-o", tmp_path / "client.parquet", "--model", model,
                         "--engine", "ray", "--address", client, "--no-progress",
                         env=cluster.env)  # fmt: skip
    assert proc.returncode == EXIT_ROW_ERRORS, proc.stderr[-3000:]
    assert not Path(f"{tmp_path / 'client.parquet'}.journal.jsonl").exists()
    parquet = {r.path: r for r in batch_cli.rows(tmp_path / "client.parquet")}
    assert parquet == ray_rows


def test_driver_sigkill_then_resume_writes_every_file_once(cluster, model, tmp_path,
                                                           digit_files, batch_cli):
    folder = tmp_path / "in"
    files = digit_files(folder, 3000)
    out = tmp_path / "pred.parquet"  # Parquet: the rows journal beside it is what survives
    args = ("score", folder, "-o", out, "--model", model, "--engine", "ray", "--address",
            cluster.head.address, "--batch-size", "32", "--chunk-size", "32", "--no-progress")
    proc = batch_cli.start(*args, log=tmp_path / "job.log", env=cluster.env)
    try:
        wait_for_rows(Path(f"{out}.journal.jsonl"), 300, proc)
    finally:
        batch_cli.kill(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "the Parquet file is written only at the end of a run"

    resumed = batch_cli.run(*args, "--resume", env=cluster.env)
    assert resumed.returncode == EXIT_OK, resumed.stderr[-3000:]
    rows = assert_exactly_once(batch_cli.rows(out), set(files))
    scored_now = int(resumed.stderr.split(" scored now")[0].rsplit("; ", 1)[1])
    assert 0 < scored_now <= len(files) - 300, "the resumed run must skip the rows written"
    want = expected_digits(folder, files, model)
    assert {p: r.digit for p, r in rows.items()} == want


def test_worker_node_killed_mid_job_loses_and_doubles_nothing(cluster, model, tmp_path,
                                                              digit_files, batch_cli):
    if len(cluster.alive_nodes()) < 2:
        cluster.worker = cluster.add_worker()
    folder = tmp_path / "in"
    files = digit_files(folder, 3000)
    out = tmp_path / "pred.jsonl"
    proc = batch_cli.start("score", folder, "-o", out, "--model", model, "--engine", "ray",
                           "--address", cluster.head.address, "--batch-size", "32",
                           "--chunk-size", "32", "--no-progress",
                           log=tmp_path / "job.log", env=cluster.env)  # fmt: skip
    try:
        wait_for_rows(out, 300, proc)
        raylet = cluster.worker.raylet()
        raylet.send_signal(signal.SIGKILL)
        killed_at = sum(1 for _ in open(out, "rb"))
        assert proc.wait(timeout=600) == EXIT_OK, (tmp_path / "job.log").read_text()[-3000:]
    finally:
        batch_cli.kill(proc)
    assert killed_at < len(files), "the node was killed after the job had finished"
    rows = assert_exactly_once(batch_cli.rows(out), set(files))
    assert {p: r.digit for p, r in rows.items()} == expected_digits(folder, files, model)
    deadline = time.monotonic() + 120  # the GCS marks a node dead after missed health checks
    while len(cluster.alive_nodes()) > 1:
        assert time.monotonic() < deadline, "the killed worker node is still alive"
        time.sleep(2)


def test_no_cluster_at_the_address_is_a_clear_error(model, tmp_path, digit_files, batch_cli):
    digit_files(tmp_path / "in", 3)
    (port,) = free_ports(1)
    started = time.monotonic()
    proc = batch_cli.run("score", tmp_path / "in", "-o", tmp_path / "p.csv", "--model", model,
                         "--engine", "ray", "--address", f"127.0.0.1:{port}", timeout=120)
    assert proc.returncode == EXIT_JOB_FAILED, proc.stderr
    assert f"no Ray cluster reachable at 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "p.csv").exists()


def test_without_ray_the_error_says_how_to_install_it(model, tmp_path, digit_files, batch_cli):
    digit_files(tmp_path / "in", 3)
    # The interpreter as a user without the extra has it: `import ray` fails.
    code = ("import sys; sys.modules['ray'] = None; from batch.cli import main; "
            "raise SystemExit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "score", str(tmp_path / "in"), "-o",
                           str(tmp_path / "p.csv"), "--model", str(model), "--engine", "ray"],
                          cwd=paths.REPO_ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == EXIT_JOB_FAILED, proc.stderr
    assert "pip install '.[ray]'" in proc.stderr and "Traceback" not in proc.stderr


def test_ledger_drops_a_row_delivered_twice_and_counts_a_lost_one():
    from batch.ray_engine import ChunkLedger

    ledger = ChunkLedger()
    ledger.add(0, 2)
    ledger.add(1, 1)
    assert ledger.accept(0, "a") and not ledger.accept(0, "a")  # a retried block, again
    assert ledger.accept(1, "c") and not ledger.accept(1, "c")  # after its chunk completed
    assert ledger.duplicates == 2
    assert ledger.missing() == 1  # "b" of chunk 0 never came back
    assert ledger.accept(0, "b") and ledger.missing() == 0 and not ledger.expected
