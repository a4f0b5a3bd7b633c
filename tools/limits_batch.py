"""A whole batch of the worst admitted request on one worker: how long it takes and what the
worker's memory does (`python -m tools.limits_bench batch`)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from deploy.config import committed_model_config
from deploy.server import TorchServe
from tools.limits_candidates import Candidate
from tools.limits_server import frontend_rss_mb, post, worker_memory

# The server runs the committed model-config.yaml (but for its workers): its batches and timeout.
BATCH_SIZE = committed_model_config()["batchSize"]
RESPONSE_TIMEOUT_S = committed_model_config()["responseTimeout"]


def measure_batch(server: TorchServe, cand: Candidate, rounds: int = 3) -> dict:
    """Send one request to occupy the worker, then `BATCH_SIZE` at once: they queue and the
    worker takes them as ONE batch. The batch time is from the first answer (the occupying
    request) to the last; the worker's peak RSS is read from /proc after."""
    body, ctype = cand.body()
    url, token = server.predict_url, server.inference_token
    pids_before = server.worker_pids()
    memory_before = worker_memory(server)
    results = []
    for _ in range(rounds):
        with ThreadPoolExecutor(BATCH_SIZE + 1) as pool:
            sessions = [requests.Session() for _ in range(BATCH_SIZE + 1)]
            first = pool.submit(post, sessions[0], url, body, ctype, token)
            time.sleep(0.05)  # the occupying request is in the worker before the others queue
            rest = [pool.submit(post, s, url, body, ctype, token) for s in sessions[1:]]
            occupying = first.result()
            t_first = time.perf_counter()
            answers = [f.result() for f in rest]
            batch_s = time.perf_counter() - t_first
        results.append({"batch_s": round(batch_s, 2), "occupying_s": round(occupying[1], 3),
                        "max_latency_s": round(max(a[1] for a in answers), 2),
                        "statuses": sorted({a[0] for a in answers} | {occupying[0]})})  # fmt: skip
    return {
        "candidate": cand.name, "body_bytes": len(body), "rounds": results,
        "worst_batch_s": max(r["batch_s"] for r in results),
        "worker_restarted": server.worker_pids() != pids_before,
        "worker_memory_before": memory_before, "worker_memory_after": worker_memory(server),
        "frontend_rss_mb_after": frontend_rss_mb(server),
    }  # fmt: skip


def print_batch(r: dict) -> None:
    """One line: the batch times, the worker's peak memory before and after, restarts."""
    before = max(m["peak_rss_mb"] for m in r["worker_memory_before"].values())
    after = max(m["peak_rss_mb"] for m in r["worker_memory_after"].values())
    print(f"batch of {BATCH_SIZE} x {r['candidate']} ({r['body_bytes'] / 1e6:.2f} MB each): "
          f"{', '.join(str(x['batch_s']) for x in r['rounds'])} s; worker peak RSS "
          f"{before:.0f} -> {after:.0f} MiB; frontend RSS {r['frontend_rss_mb_after']} MiB; "
          f"restarted: {r['worker_restarted']}")
