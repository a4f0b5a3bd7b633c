"""The http batch job across faults (`make faults` = `pytest tests/faults`):

- the whole server stopped and started (same ports) during a batch run: nothing lost or doubled;
- the batch job SIGKILLed at 5 random points and resumed each time: every file exactly once,
  rows written before a kill kept byte for byte, and the last resume scores exactly what is left.

The server's own faults (a worker killed under load, slow clients) are test_faults.py; the image
pool and the private server are tests/faults/conftest.py's, the helpers tests/fault_harness.py's.
Every figure is printed and written to `loadtests/results/faults/<test>.json` (the reliability
page quotes them). All traffic goes to 127.0.0.1 and is bounded in count and duration.
"""

from __future__ import annotations

import json
import random
import time

from tests import fault_harness as harness


# --- whole server restarted ------------------------------------------------------------------
def test_server_restart_during_batch(fault_server, pool, tmp_path, batch_cli):
    """Stop and start TorchServe (same ports) while a batch job runs: nothing lost or doubled.

    What the restart does to the server itself (fresh workers, new keys, same ports) is
    tests/integration/test_server.py; this is what it does to a client in the middle of a job.
    """
    labels = harness.write_images(pool, tmp_path / "images", 4000)
    output = tmp_path / "scores.csv"
    summary = tmp_path / "summary.json"
    log = tmp_path / "batch.log"
    batch = batch_cli.start(*harness.http_job(tmp_path / "images", output, fault_server, summary),
                            log=log, server=fault_server)  # fmt: skip
    url_before = fault_server.inference_url
    key_before = fault_server.inference_token
    try:
        rows_at_stop = harness.wait_rows(batch, output, 800)
        started = time.monotonic()
        fault_server.restart()
        restart_s = time.monotonic() - started
        # Otherwise the job finished against the old server and bridged nothing.
        job_alive_after_restart = batch.poll() is None
        rows_after_restart = harness.data_rows(output)
        exit_code = batch.wait(timeout=600)
    finally:
        batch_cli.kill(batch)
    assert exit_code == 0, log.read_text()[-2000:]
    counted = harness.tally(output, labels)
    report = json.loads(summary.read_text())
    harness.predict_ok(fault_server, pool)
    harness.record(
        "server_restart_during_batch",
        {
            "rows_when_stopped": rows_at_stop,
            "rows_when_back": rows_after_restart,
            "restart_s": round(restart_s, 2),
            # TorchServe issues new keys at every start: the job must notice the refusal of its
            # old key, re-read the key file and carry on, all inside the same run.
            "keys_rotated_by_restart": fault_server.inference_token != key_before,
            "job_alive_after_restart": job_alive_after_restart,
            "exit_code": exit_code,
            "batch_summary": {
                k: report.get(k) for k in ("rows_total", "rows_error", "scored_this_run")
            },
            **counted,
        },
    )
    assert fault_server.inference_url == url_before, "restart moved the port"
    assert job_alive_after_restart and rows_after_restart < len(labels), (
        "the job was not running across the restart: nothing was bridged")
    harness.assert_exactly_once(counted)
    assert report["scored_this_run"] == len(labels) and report["rows_error"] == 0


# --- batch job killed repeatedly -------------------------------------------------------------
def test_batch_sigkill_five_times_then_resume(torchserve, pool, tmp_path, batch_cli):
    """SIGKILL the batch job at 5 random points; each resume keeps what was written."""
    total = 3000
    labels = harness.write_images(pool, tmp_path / "images", total)
    output = tmp_path / "scores.csv"
    log = tmp_path / "batch.log"
    seed = int(time.time())
    rng = random.Random(seed)
    points = sorted(rng.sample(range(100, total - 300), 5))
    kept = b""
    kills = []
    for point in points:
        proc = batch_cli.start(*harness.http_job(tmp_path / "images", output, torchserve), log=log,
                               server=torchserve)  # fmt: skip
        try:
            harness.wait_rows(proc, output, point)
        finally:
            batch_cli.kill(proc)
        data = output.read_bytes()
        kills.append({"at_row": point, "rows_kept": harness.data_rows(output),
                      "earlier_rows_intact": data.startswith(kept)})  # fmt: skip
        assert data.startswith(kept), "a resume rewrote rows written before an earlier kill"
        kept = data[: data.rfind(b"\n") + 1]  # a torn last row may be redone
    done_before_last = harness.data_rows(output)
    summary = tmp_path / "summary.json"
    proc = batch_cli.start(*harness.http_job(tmp_path / "images", output, torchserve, summary),
                           log=log, server=torchserve)  # fmt: skip
    exit_code = proc.wait(timeout=600)
    assert exit_code == 0, log.read_text()[-2000:]
    counted = harness.tally(output, labels)
    report = json.loads(summary.read_text())
    harness.record(
        "batch_sigkill_five_times",
        {
            "seed": seed,
            "kills": kills,
            "rows_before_final_resume": done_before_last,
            "final_resume_scored": report["scored_this_run"],
            "final_resume_skipped": report["resumed_rows"],
            "rows_before_kills_intact_at_end": output.read_bytes().startswith(kept),
            **counted,
        },
    )
    assert output.read_bytes().startswith(kept)
    harness.assert_exactly_once(counted)
    assert report["resumed_rows"] == done_before_last
    assert report["scored_this_run"] == total - done_before_last
