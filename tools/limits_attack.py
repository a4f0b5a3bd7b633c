"""Other clients' latency alone and beside one client streaming the worst admitted request
(`python -m tools.limits_bench attack`)."""

from __future__ import annotations

import multiprocessing as mp
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from PIL import Image

from deploy.keys import auth_headers
from deploy.server import TorchServe
from tools.limits_candidates import Candidate, bar, encode
from tools.limits_server import post


def _attacker(url: str, token: str | None, body: bytes, ctype: str, stop_at: float,
              out: mp.Queue) -> None:  # fmt: skip
    """One client, one request in flight at a time, back to back (its own process)."""
    session, statuses = requests.Session(), {}
    while time.time() < stop_at:
        try:
            status, _ = post(session, url, body, ctype, token)
        except requests.RequestException as exc:
            status = type(exc).__name__
        statuses[status] = statuses.get(status, 0) + 1
    out.put(statuses)


def _victims(url: str, token: str | None, body: bytes, rate: float, seconds: float,
             connections: int = 32) -> tuple[list[float], dict]:  # fmt: skip
    """Other clients: requests sent open-loop at `rate` req/s for `seconds`, each on its own
    (a pool of `connections`), so one slow answer never delays the next send; latency is
    measured from each request's SCHEDULED time, so a stalled server is not hidden."""
    latencies, statuses, lock = [], {}, threading.Lock()
    local = threading.local()
    start = time.perf_counter() + 0.1

    def send(due: float) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        time.sleep(max(0.0, due - time.perf_counter()))
        try:
            resp = session.post(url, data=body, timeout=60,
                                headers={"Content-Type": "image/png", **auth_headers(token)})
            status = resp.status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        with lock:
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1

    with ThreadPoolExecutor(connections) as pool:
        for i in range(int(rate * seconds)):
            due = start + i / rate
            time.sleep(max(0.0, due - 0.05 - time.perf_counter()))  # submit just ahead of time
            pool.submit(send, due)
    return latencies, statuses


def _quantiles(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"n": len(values), "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "over_100ms": sum(v > 0.1 for v in values)}


def measure_attack(server: TorchServe, cand: Candidate, victim_png: bytes, rate: float = 40.0,
                   rounds: int = 4, seconds: float = 8.0) -> dict:  # fmt: skip
    """Other clients' latency alone and beside one client streaming `cand`, in interleaved
    rounds (alone, attacked) so a busy host's noise falls on both alike."""
    url, token = server.predict_url, server.inference_token
    body, ctype = cand.body()
    pids_before = server.worker_pids()
    _victims(url, token, victim_png, rate, 2.0)  # warm-up
    alone, attacked, victim_status, attacker_status = [], [], {}, {}
    ctx = mp.get_context("spawn")
    for _ in range(rounds):
        lat, st = _victims(url, token, victim_png, rate, seconds)
        alone += lat
        queue = ctx.Queue()
        proc = ctx.Process(target=_attacker, daemon=True,
                           args=(url, token, body, ctype, time.time() + seconds + 0.5, queue))
        proc.start()
        time.sleep(0.5)  # the stream is flowing before the victims start
        lat, st2 = _victims(url, token, victim_png, rate, seconds)
        attacked += lat
        for k, v in queue.get(timeout=120).items():
            attacker_status[str(k)] = attacker_status.get(str(k), 0) + v
        proc.join(30)
        for k, v in [*st.items(), *st2.items()]:
            victim_status[str(k)] = victim_status.get(str(k), 0) + v
    a, b = _quantiles(alone), _quantiles(attacked)
    return {
        "candidate": cand.name, "workers": len(pids_before), "victim_rate_per_s": rate,
        "alone": a, "attacked": b, "p99_ratio": round(b["p99_ms"] / a["p99_ms"], 2),
        "victim_statuses": victim_status, "attacker_statuses": attacker_status,
        "worker_restarted": server.worker_pids() != pids_before,
    }  # fmt: skip


def victim_png() -> bytes:
    """An MNIST test digit as PNG (the 28x28 pass-through path), else a drawn bar."""
    try:
        from train.mnist import load_test_digits

        images, _ = load_test_digits(None)
        return encode(Image.fromarray(images[0]))
    except Exception:  # no MNIST here: any small digit-like image serves as the victims' load
        return encode(bar(28, 28))


def print_attack(r: dict) -> None:
    """One line: the victims' p50/p99 alone and attacked, their ratio, statuses, restarts."""
    a, b = r["alone"], r["attacked"]
    print(f"{r['workers']} worker(s), victims {r['victim_rate_per_s']:.0f} req/s: alone p50/p99 "
          f"{a['p50_ms']}/{a['p99_ms']} ms (n={a['n']}); beside a stream of {r['candidate']}: "
          f"{b['p50_ms']}/{b['p99_ms']} ms (n={b['n']}); p99 x{r['p99_ratio']}; victims "
          f"{r['victim_statuses']}; attacker {r['attacker_statuses']}; "
          f"restarted: {r['worker_restarted']}")
