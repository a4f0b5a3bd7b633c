"""Predictions' throughput and latency alone and beside explanation traffic, side by side.

    python -m tools.explain_bench                    # alone | 10/s page-like | two 8-image streams
    python -m tools.explain_bench --explain-rate 20 --explain-images 0 --rounds 5

One private TorchServe with the committed configuration (deploy/config.properties,
model-config.yaml), so explanations and predictions share the workers and their batches, as in
production. Predictions come from
`--clients` connections in a closed loop (each sends its next request when its answer is in),
spread over `--processes` processes: the most the server answers; every answer's digit is
checked against the label of an MNIST test digit that the served model gets right offline.

Beside them, one arm each:
- page-like: `--explain-rate` single-image explanations a second, paced (the page asks one per
  stroke, so 10/s is ten people drawing without a pause);
- worst case: `--explainers` connections sending explanations requests of `--explain-images`
  images (the limit) back to back, where the explanation budget (handler/limits.py
  `ExplanationBudget`) turns most of them away with 429.
The arms run in interleaved rounds (alone, page-like, worst case, alone, ...) so a busy host's
noise falls on each alike.

Reported per arm: predictions' req/s (answers completed inside the window / its length), p50 and
p99 latency, statuses and wrong digits; the explanations answered (200) per second, their p50
and p99 (over all of them, 429s included) and the 429s per second. JSON under
`loadtests/results/explain/`. Hold `flock /tmp/lenet-heavy.lock` around runs whose figures you
report.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import random
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from client import multipart_body
from deploy.keys import auth_headers
from deploy.server import TorchServe
from handler import limits
from tools import begin_run


@dataclass(frozen=True)
class Load:
    """What one client process sends for `seconds`: bodies with the labels of their digits, over
    `threads` connections, back to back, or at `rate` requests per second in all."""

    url: str
    token: str | None
    bodies: list[tuple[bytes, str, list[int]]]  # (body, content type, labels)
    threads: int
    seconds: float
    rate: float | None = None


def _answer_digits(data: bytes) -> list[int]:
    """The digits of a /predictions or /explanations answer, in input order (-1: an error)."""
    body = json.loads(data)
    slots = body.get("predictions") or body.get("explanations") or [body]
    return [s.get("prediction", s).get("digit", -1) for s in slots]


def _client(load: Load, start: mp.Event, out: mp.Queue) -> None:
    """One process of `load.threads` closed-loop connections; puts its records on `out`."""
    target = urlsplit(load.url)
    records: list[tuple[float, int, bool, bool]] = []  # (latency, status, right, in window)
    lock = threading.Lock()
    out.put("ready")
    start.wait()
    begin = time.perf_counter()
    stop = begin + load.seconds

    def loop(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        mine, sends = [], 0
        while (sent := time.perf_counter()) < stop:
            if load.rate:  # thread `seed` of n takes every n-th slot of the schedule
                due = begin + (seed + sends * load.threads) / load.rate
                sends += 1
                if due >= stop:
                    break
                time.sleep(max(0.0, due - sent))
                sent = time.perf_counter()
            body, ctype, labels = load.bodies[rng.randrange(len(load.bodies))]
            conn.request("POST", target.path, body=body,
                         headers={"Content-Type": ctype, **auth_headers(load.token)})
            resp = conn.getresponse()
            data = resp.read()
            latency = time.perf_counter() - sent
            right = resp.status == 200 and _answer_digits(data) == labels
            mine.append((latency, resp.status, right, sent + latency <= stop))
        conn.close()
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(load.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(records)


def run_arm(loads: list[Load], ctx) -> list[list[tuple[float, int, bool, bool]]]:
    """Start one process per load, release them together; the records of each load."""
    start, queues, procs = ctx.Event(), [], []
    for load in loads:
        queue = ctx.Queue()
        proc = ctx.Process(target=_client, args=(load, start, queue), daemon=True)
        proc.start()
        queues.append(queue)
        procs.append(proc)
    for queue in queues:
        assert queue.get(timeout=120) == "ready"
    start.set()
    records = [queue.get(timeout=600) for queue in queues]
    for proc in procs:
        proc.join(30)
    return records


def summarise(records: list[tuple[float, int, bool, bool]], seconds: float) -> dict:
    """req/s of the answers completed inside the windows (`seconds` in all), latency quantiles
    of every request sent, statuses, wrong digits."""
    latencies = [r[0] for r in records] * (2 if len(records) == 1 else 1)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests": len(records), "req_per_s": round(sum(r[3] for r in records) / seconds, 1),
            "ok_per_s": round(sum(r[3] and r[1] == 200 for r in records) / seconds, 1),
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "statuses": dict(Counter(str(r[1]) for r in records)),
            "wrong": sum(1 for r in records if r[1] == 200 and not r[2])}  # fmt: skip


def labelled_digits(server: TorchServe, count: int = 256) -> list[tuple[bytes, int]]:
    """MNIST test digits (PNG) that the served archive's model gets right offline."""
    from handler.predictor import Predictor
    from samples.digits import answered_correctly, mnist_test_pngs

    predictor = Predictor.load(server.config.archive, device="cpu")
    kept = answered_correctly(predictor, mnist_test_pngs(4 * count, seed=16), limit=count)
    return list(zip(kept.images, kept.labels, strict=True))


def measure(server: TorchServe, digits: list[tuple[bytes, int]], args) -> dict:
    """Every arm in interleaved rounds; {arm: {"predictions": ..., "explanations": ...}}."""
    singles = [(png, "image/png", [label]) for png, label in digits]
    token = server.inference_token
    per_process = -(-args.clients // args.processes)
    predict = [Load(server.predict_url, token, singles, per_process, args.seconds)
               for _ in range(args.processes)]  # fmt: skip
    arms: dict[str, list[Load]] = {"alone": []}
    if args.explain_rate:
        arms[f"beside {args.explain_rate:g}/s 1-image explanations"] = [
            Load(server.explain_url, token, singles, 4, args.seconds, args.explain_rate)]
    if args.explain_images:
        n, rng, bodies = args.explain_images, random.Random(16), []
        for _ in range(64):
            picked = rng.sample(digits, n)
            body, ctype = multipart_body([png for png, _ in picked]) if n > 1 else (
                picked[0][0], "image/png")
            bodies.append((body, ctype, [label for _, label in picked]))
        arms[f"beside {args.explainers} streams of {n}-image"] = [
            Load(server.explain_url, token, bodies, args.explainers, args.seconds)]
    ctx = mp.get_context("spawn")
    run_arm(predict, ctx)  # warm-up: connections, the worker's first batches
    records: dict[str, dict[str, list]] = {arm: {"predictions": [], "explanations": []}
                                           for arm in arms}  # fmt: skip
    for round_ in range(args.rounds):
        for arm, extra in arms.items():
            got = run_arm(predict + extra, ctx)
            records[arm]["predictions"] += [r for part in got[: len(predict)] for r in part]
            records[arm]["explanations"] += [r for part in got[len(predict):] for r in part]
            print(f"round {round_ + 1}/{args.rounds} {arm}: "
                  f"{summarise(records[arm]['predictions'], args.seconds * (round_ + 1))}",
                  flush=True)  # fmt: skip
    window = args.seconds * args.rounds
    return {arm: {kind: summarise(recs, window) for kind, recs in got.items() if recs}
            for arm, got in records.items()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point: print the table and write the JSON; 1 if any answer was wrong or failed."""
    parser = argparse.ArgumentParser(prog="python -m tools.explain_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16,
                        help="prediction connections, closed loop (default: 16)")
    parser.add_argument("--processes", type=int, default=2,
                        help="processes the prediction connections are spread over (default: 2)")
    parser.add_argument("--explain-rate", type=float, default=10.0,
                        help="page-like arm: 1-image explanations per second, paced (people "
                             "drawing: one per stroke); 0 skips the arm (default: 10)")
    parser.add_argument("--explain-images", type=int, default=limits.MAX_IMAGES_PER_EXPLANATION,
                        help="worst-case arm: images per explanations request, sent back to "
                             "back; 0 skips the arm (default: "
                             f"{limits.MAX_IMAGES_PER_EXPLANATION}, the limit)")
    parser.add_argument("--explainers", type=int, default=2,
                        help="connections of the worst-case arm (default: 2)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each arm in a round (default: 10)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args(argv)
    stamp, folder = begin_run("explain")
    out = args.out or folder / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    server = TorchServe.private(folder / f"{stamp}-server").start()
    try:
        digits = labelled_digits(server)
        pids = server.worker_pids()
        results = measure(server, digits, args)
        restarted = server.worker_pids() != pids
    finally:
        server.stop()
    report = {"settings": {k: v for k, v in vars(args).items() if k != "out"},
              "host_cpus": mp.cpu_count(), "arms": results, "worker_restarted": restarted}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'arm':34} {'pred req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'wrong':>5}   "
          f"{'expl 200/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'429/s':>6}")  # fmt: skip
    failed = restarted
    window = args.seconds * args.rounds
    for arm, got in results.items():
        p, e = got["predictions"], got.get("explanations")
        extra = (f"{e['ok_per_s']:10.1f} {e['p50_ms']:7.1f} {e['p99_ms']:7.1f} "
                 f"{e['statuses'].get('429', 0) / window:6.1f}") if e else ""  # fmt: skip
        print(f"{arm:34} {p['req_per_s']:10.1f} {p['p50_ms']:7.1f} {p['p99_ms']:7.1f} "
              f"{p['wrong']:5d}   {extra}")
        failed |= p["wrong"] > 0 or set(p["statuses"]) != {"200"}
        # Explanations past the budget are refused by design (429 ExplanationsBusy).
        failed |= bool(e) and (e["wrong"] > 0 or not set(e["statuses"]) <= {"200", "429"})
    print(f"worker restarted: {restarted}; wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
