"""The worst requests `handler/limits.py` admits, measured on a real TorchServe.

    python -m tools.limits_bench cost      # in-process CPU per candidate request, ns per cost unit
    python -m tools.limits_bench batch     # a whole batch (32) of the worst: time, worker memory
    python -m tools.limits_bench attack    # other clients' p50/p99 alone vs beside a stream of it
    python -m tools.limits_bench all       # the three, one JSON under loadtests/results/limits/
    python -m tools.limits_bench flood --count 100   # N bodies at the size limit, all at once

Candidates are requests built to sit just inside the limits, each stressing one cost: the
analysis of a 799x799 scan whose content is slowest to analyse, a 6 MP 16-bit RGBA PNG (decoded
whole) and another filling the request, the largest progressive JPEG admitted (noise, at the
body limit), 64 images filling the request, a 40 MP baseline JPEG of noise. Each is
checked against the limits first (it must be admitted: 200), so the figures are those of the
worst ADMITTED request. `batch` and `attack` run a private TorchServe with the committed
configuration (deploy/config.properties, model-config.yaml: batchSize 32, responseTimeout 30 s),
except `--workers`. Hold `flock /tmp/lenet-heavy.lock` around runs whose figures you report.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import requests
from PIL import Image

from client import multipart_body
from deploy.config import BASE_CONFIG, read_properties
from deploy.keys import auth_headers
from deploy.server import TorchServe
from handler import limits
from handler.preprocessing import preprocess
from project.paths import RESULTS_DIR
from tools import begin_run

BATCH_SIZE = 32  # the committed model-config.yaml's batchSize
RESPONSE_TIMEOUT_S = 30  # ... and its responseTimeout


@dataclass(frozen=True, eq=False)
class Candidate:
    """One request built to sit just inside the limits."""

    name: str
    images: list[bytes]
    what: str

    def body(self) -> tuple[bytes, str]:
        return multipart_body(self.images)

    @property
    def cost(self) -> int:
        return limits.check_request_cost([limits.probe(d) for d in self.images])


def _encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _bar(width: int, height: int) -> Image.Image:
    """A white bar on black: two grey levels (with JPEG ringing), the slowest to analyse."""
    pixels = np.zeros((height, width), np.uint8)
    pixels[height // 4 : 3 * height // 4, width * 2 // 5 : width * 3 // 5] = 255
    return Image.fromarray(pixels)


def _specks(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(((rng.random((height, width)) < 0.1) * 255).astype(np.uint8))


def _noise_photo(size: tuple[int, int], max_bytes: int, progressive: bool = True,
                 block: int = 4) -> bytes:
    """A JPEG of noise, as close to `max_bytes` as quality (then coarser noise: squares of
    `block` pixels and up) allows: its entropy decoding costs what its size costs."""
    rng = np.random.default_rng(1)
    width, height = size
    data = b""
    while block <= 64:
        noise = rng.integers(0, 256, (-(-height // block), -(-width // block), 3), np.uint8)
        photo = Image.fromarray(noise).resize(size, Image.Resampling.NEAREST)
        for quality in (95, 85, 75, 60, 45, 30):
            data = _encode(photo, "JPEG", quality=quality, progressive=progressive,
                           subsampling=0)  # fmt: skip
            if len(data) <= max_bytes:
                return data
        block *= 2
    return data


def _png16_rgba(width: int, height: int) -> bytes:
    """A 16-bit RGBA PNG (8 bytes a pixel, the slowest PNG to decode) of a bar."""
    pixels = np.zeros((height, width, 4), np.uint16)
    pixels[height // 4 : 3 * height // 4, width * 2 // 5 : width * 3 // 5, :3] = 65535
    pixels[..., 3] = 65535
    return cv2.imencode(".png", pixels)[1].tobytes()


def _largest_within(make, budget: int, side: int) -> bytes:
    """`make(side)` for the largest side (down from `side`) whose pixel cost fits `budget`."""
    while side > 1:
        data = make(side)
        if limits.probe(data).cost <= budget:
            return data
        side = int(side * 0.99)
    raise ValueError(f"nothing fits a pixel cost of {budget:,}")


def _progressive_size() -> tuple[int, int]:
    """The largest 4:3 progressive JPEG a request may hold alone (its cost from its header)."""
    for width in range(8000, 400, -20):
        header = limits.ImageHeader("JPEG", width, width * 3 // 4, progressive=True)
        if header.cost <= limits.MAX_REQUEST_PIXELS:
            return width, width * 3 // 4
    raise ValueError("no progressive JPEG fits")


def max_body() -> int:
    """The committed body limit (deploy/config.properties `max_request_size`)."""
    return int(read_properties(BASE_CONFIG)["max_request_size"])


def candidates(body_limit: int | None = None) -> list[Candidate]:
    """The worst admitted requests, one per cost they stress (all within the limits)."""
    body_limit = body_limit or max_body()
    budget = limits.MAX_REQUEST_PIXELS
    per_small = budget // limits.MAX_IMAGES_PER_REQUEST
    small = _largest_within(lambda n: _encode(_specks(n, n)), per_small, 400)
    png = _png16_rgba(2449, 2449)
    rest = budget - limits.probe(png).cost
    photo_size = _progressive_size()
    big_jpeg = _noise_photo((7300, 5470), body_limit - 65536, progressive=False, block=8)
    found = [
        Candidate("scan-799-jpeg", [_encode(_bar(799, 799).convert("RGB"), "JPEG")],
                  "one 799x799 JPEG of two grey levels: the largest image analysed whole"),
        Candidate("scan-799-png-specks", [_encode(_specks(799, 799))],
                  "one 799x799 PNG, 10 % random specks"),
        Candidate("png-6mp-rgba16", [png, _largest_within(lambda n: _png16_rgba(n, n), rest, 2000)],
                  "a 2449x2449 16-bit RGBA PNG (the most pixels decoded whole, the slowest "
                  "mode) and another filling the rest of the request"),
        Candidate("photo-progressive", [_noise_photo(photo_size, body_limit - 4096)],
                  f"one {photo_size[0]}x{photo_size[1]} progressive JPEG of noise at the body "
                  "limit: the largest admitted"),
        Candidate("jpeg-40mp", [big_jpeg, _encode(_bar(560, 560).convert("RGB"), "JPEG")],
                  "a 40 MP baseline JPEG of noise near the body limit (decoded at 1/8) and a "
                  "560x560 one"),
        Candidate("64-small-images", [small] * limits.MAX_IMAGES_PER_REQUEST,
                  f"64 PNGs of {Image.open(io.BytesIO(small)).width} px specks, filling the "
                  "request"),
    ]  # fmt: skip
    for cand in found:
        cand.cost  # noqa: B018 - raises if a candidate is not admitted
    return found


# --- cost: in-process ------------------------------------------------------------------------
def measure_cost(cands: list[Candidate], repeats: int = 3) -> list[dict]:
    """CPU seconds of the handler's per-image work (probe + preprocess) per candidate."""
    rows = []
    for cand in cands:
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            for data in cand.images:
                limits.probe(data)
                preprocess(data)
            best = min(best, time.process_time() - start)
        cost = cand.cost
        rows.append({"candidate": cand.name, "what": cand.what, "images": len(cand.images),
                     "body_bytes": len(cand.body()[0]), "cost": cost,
                     "cpu_ms": round(best * 1000, 1),
                     "ns_per_cost_unit": round(best * 1e9 / cost, 1)})  # fmt: skip
    return rows


# --- a private server ------------------------------------------------------------------------
def start_server(run_dir: Path, workers: int = 1) -> TorchServe:
    """A private TorchServe with the committed configuration and `workers` workers."""
    return TorchServe.private(run_dir, model_config_overrides={"workers": workers}).start()


def worker_memory(server: TorchServe) -> dict[int, dict]:
    """{pid: {"rss_mb", "peak_rss_mb"}} of each worker (peak: Linux VmHWM, since its start)."""
    out = {}
    for pid in server.worker_pids().values():
        fields = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = round(int(value.split()[0]) / 1024, 1)
        out[pid] = {"rss_mb": fields["VmRSS"], "peak_rss_mb": fields["VmHWM"]}
    return out


def frontend_rss_mb(server: TorchServe) -> float | None:
    """Resident memory of the server's JVM (the frontend), MiB."""
    for proc in server.group_processes():
        if proc.name() == "java":
            return round(proc.memory_info().rss / 2**20, 1)
    return None


def _post(session: requests.Session, url: str, body: bytes, content_type: str,
          token: str | None, timeout: float = 120.0) -> tuple[int, float]:  # fmt: skip
    start = time.perf_counter()
    resp = session.post(url, data=body, timeout=timeout,
                        headers={"Content-Type": content_type, **auth_headers(token)})
    return resp.status_code, time.perf_counter() - start


# --- batch: 32 worst requests in one batch ---------------------------------------------------
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
            first = pool.submit(_post, sessions[0], url, body, ctype, token)
            time.sleep(0.05)  # the occupying request is in the worker before the others queue
            rest = [pool.submit(_post, s, url, body, ctype, token) for s in sessions[1:]]
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


# --- flood: many bodies at the size limit at once (what only a proxy can bound) --------------
def measure_flood(server: TorchServe, count: int) -> dict:
    """`count` bodies of `max_body()` bytes of junk sent at once: cheap for the handler (refused
    from the header), so what is measured is the frontend holding and forwarding the bytes."""
    body = np.random.default_rng(2).bytes(max_body() - 1024)
    url, token = server.predict_url, server.inference_token
    pids_before = server.worker_pids()
    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(lambda _: _post(requests.Session(), url, body, "image/png", token),
                                range(count)))  # fmt: skip
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"count": count, "body_bytes": len(body), "statuses": statuses,
            "wall_s": round(time.perf_counter() - start, 2),
            "max_latency_s": round(max(r[1] for r in results), 2),
            "worker_restarted": server.worker_pids() != pids_before,
            "frontend_rss_mb_after": frontend_rss_mb(server)}  # fmt: skip


# --- attack: other clients beside a stream of the worst request ------------------------------
def _attacker(url: str, token: str | None, body: bytes, ctype: str, stop_at: float,
              out: mp.Queue) -> None:  # fmt: skip
    """One client, one request in flight at a time, back to back (its own process)."""
    session, statuses = requests.Session(), {}
    while time.time() < stop_at:
        try:
            status, _ = _post(session, url, body, ctype, token)
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
        return _encode(Image.fromarray(images[0]))
    except Exception:  # no MNIST here: any small digit-like image serves as the victims' load
        return _encode(_bar(28, 28))


# --- CLI ---------------------------------------------------------------------------------------
def _worst(rows: list[dict], cands: list[Candidate]) -> Candidate:
    name = max(rows, key=lambda r: r["cpu_ms"])["candidate"]
    return next(c for c in cands if c.name == name)


def main(argv: list[str] | None = None) -> int:
    """Entry point: print each phase's figures and write them as JSON."""
    parser = argparse.ArgumentParser(prog="python -m tools.limits_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=("cost", "batch", "attack", "all", "flood"))
    parser.add_argument("--count", type=int, action="append", default=None,
                        help="bodies sent at once (flood; repeat; default: 32 and 100)")
    parser.add_argument("--workers", type=int, action="append", default=None,
                        help="workers of the server for batch/attack; repeat to compare "
                             "(default: 1, and 2 for attack)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=40.0, help="victims' req/s (attack)")
    parser.add_argument("--rounds", type=int, default=4, help="alone/attacked rounds (attack)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args(argv)
    stamp, folder = begin_run("limits")
    out = args.out or folder / f"{stamp}-{args.phase}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cands = candidates()
    report: dict = {"limits": {k: getattr(limits, k) for k in dir(limits) if k.isupper()
                               and isinstance(getattr(limits, k), int)}}  # fmt: skip
    rows = measure_cost(cands)
    report["cost"] = rows
    print(f"{'candidate':24} {'images':>6} {'body MB':>8} {'cost M':>7} {'CPU ms':>7} "
          f"{'ns/unit':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['candidate']:24} {r['images']:6d} {r['body_bytes'] / 1e6:8.2f} "
              f"{r['cost'] / 1e6:7.2f} {r['cpu_ms']:7.1f} {r['ns_per_cost_unit']:8.1f}")
    worst = _worst(rows, cands)
    print(f"worst admitted request (most CPU): {worst.name}")
    workers = args.workers or ([1, 2] if args.phase in ("attack", "all") else [1])
    run = _run_phases(args, cands, worst, workers, stamp, report)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return run


def _run_phases(args, cands, worst, workers, stamp, report) -> int:
    """batch (on the first worker count) and attack (on each); 1 if a worker restarted or a
    batch reached responseTimeout."""
    if args.phase == "cost":
        return 0
    if args.phase == "flood":
        server = start_server(RESULTS_DIR / "limits" / f"{stamp}-servers" / "flood")
        try:
            for count in args.count or [32, 100]:
                result = measure_flood(server, count)
                report.setdefault("flood", []).append(result)
                print(f"{count} bodies of {result['body_bytes']:,} bytes at once: "
                      f"{result['statuses']} in {result['wall_s']} s (slowest "
                      f"{result['max_latency_s']} s); worker restarted: "
                      f"{result['worker_restarted']}; frontend RSS "
                      f"{result['frontend_rss_mb_after']} MiB")
                if result["worker_restarted"]:
                    server.wait_ready()
        finally:
            server.stop()
        return 0
    failed = False
    runs = RESULTS_DIR / "limits" / f"{stamp}-servers"
    largest = max(cands, key=lambda c: len(c.body()[0]))  # the most bytes held per request
    for count in workers:
        server = start_server(runs / f"workers-{count}", count)
        try:
            if args.phase in ("batch", "all") and count == workers[0]:
                for cand in dict.fromkeys([worst, largest]):
                    result = measure_batch(server, cand)
                    report.setdefault("batch", []).append(result)
                    _print_batch(result)
                    failed |= result["worker_restarted"]
                    failed |= result["worst_batch_s"] >= RESPONSE_TIMEOUT_S
            if args.phase in ("attack", "all"):
                result = measure_attack(server, worst, victim_png(), rate=args.rate,
                                        rounds=args.rounds)  # fmt: skip
                report.setdefault("attack", []).append(result)
                _print_attack(result)
                failed |= result["worker_restarted"]
        finally:
            server.stop()
    return 1 if failed else 0


def _print_batch(r: dict) -> None:
    before = max(m["peak_rss_mb"] for m in r["worker_memory_before"].values())
    after = max(m["peak_rss_mb"] for m in r["worker_memory_after"].values())
    print(f"batch of {BATCH_SIZE} x {r['candidate']} ({r['body_bytes'] / 1e6:.2f} MB each): "
          f"{', '.join(str(x['batch_s']) for x in r['rounds'])} s; worker peak RSS "
          f"{before:.0f} -> {after:.0f} MiB; frontend RSS {r['frontend_rss_mb_after']} MiB; "
          f"restarted: {r['worker_restarted']}")


def _print_attack(r: dict) -> None:
    a, b = r["alone"], r["attacked"]
    print(f"{r['workers']} worker(s), victims {r['victim_rate_per_s']:.0f} req/s: alone p50/p99 "
          f"{a['p50_ms']}/{a['p99_ms']} ms (n={a['n']}); beside a stream of {r['candidate']}: "
          f"{b['p50_ms']}/{b['p99_ms']} ms (n={b['n']}); p99 x{r['p99_ratio']}; victims "
          f"{r['victim_statuses']}; attacker {r['attacker_statuses']}; "
          f"restarted: {r['worker_restarted']}")


if __name__ == "__main__":
    sys.exit(main())
