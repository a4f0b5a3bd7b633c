"""Many bodies at the size limit at once, what only a proxy in front can bound: what the
frontend holds and whether the worker survives (`python -m tools.limits_bench flood`)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests

from deploy.config import max_request_size
from deploy.server import TorchServe
from tools.limits_server import frontend_rss_mb, post


def measure_flood(server: TorchServe, count: int) -> dict:
    """`count` bodies of junk just under the committed size limit, sent at once: cheap for the
    handler (refused from the header), so what is measured is the frontend holding the bytes."""
    body = np.random.default_rng(2).bytes(max_request_size() - 1024)
    url, token = server.predict_url, server.inference_token
    pids_before = server.worker_pids()
    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(lambda _: post(requests.Session(), url, body, "image/png", token),
                                range(count)))  # fmt: skip
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"count": count, "body_bytes": len(body), "statuses": statuses,
            "wall_s": round(time.perf_counter() - start, 2),
            "max_latency_s": round(max(r[1] for r in results), 2),
            "worker_restarted": server.worker_pids() != pids_before,
            "frontend_rss_mb_after": frontend_rss_mb(server)}  # fmt: skip


def print_flood(result: dict) -> None:
    """One line: the statuses, the wall time, the slowest answer, restarts, frontend memory."""
    print(f"{result['count']} bodies of {result['body_bytes']:,} bytes at once: "
          f"{result['statuses']} in {result['wall_s']} s (slowest "
          f"{result['max_latency_s']} s); worker restarted: "
          f"{result['worker_restarted']}; frontend RSS "
          f"{result['frontend_rss_mb_after']} MiB")
