"""Soak test: `python -m loadtests soak --duration 10m` (`make soak DURATION=10m`).

Holds a constant rate, by default half the capacity measured just before (20 s, 32 closed-loop
users, same traffic), and checks what only time reveals: no failure (SLO failure ratio 0), no
worker restart, latency drift (percentiles once a minute) and memory: the RSS of the frontend
(JVM) and of each worker must grow by less than `max_rss_growth`, median of a window after
`warmup_s` (heap sizing and JIT come first) against the last minute's (single samples are noisy).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from loadtests import charts, option
from loadtests.pool import ensure_pool
from loadtests.runner import LoadSpec, listening_pid, parse_timespan, run_locust, serving

logger = logging.getLogger(__name__)

MAX_RPS_PER_USER = 4.0  # a paced user then waits 250 ms: longer than a slow answer under load
MIN_USERS = 8


@dataclass
class SoakOptions:
    """What to hold, for how long, and the bounds of the verdict."""

    duration: str = option("10m", "Soak length, e.g. 10m or 1h.")
    rate: float = option(0.0, "Requests/s to hold; 0: --load-fraction of the capacity now.")
    load_fraction: float = option(0.5, "Share of the capacity measured just before to hold.")
    users: int = option(0, f"Paced users; 0: enough for {MAX_RPS_PER_USER:g} req/s each.")
    user_classes: list[str] = option([], "Only this user class (repeatable).", "--user-class")
    warmup_s: float = option(60.0, "Seconds left out of the RSS baseline (<= 1/4 of the run).",
                             "--warmup")
    max_rss_growth: float = option(0.10, "Largest RSS growth allowed for any process.")
    sample_interval_s: float = option(5.0, "Seconds between RSS samples.", "--sample-interval")


def rss_mib(frontend_pid: int) -> tuple[float, dict[int, float]]:
    """RSS (MiB) of the TorchServe frontend and {pid: RSS} of its backend workers."""
    frontend, workers = psutil.Process(frontend_pid), {}
    for child in frontend.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if any("model_service_worker" in part for part in child.cmdline()):
                workers[child.pid] = child.memory_info().rss / 2**20
    return frontend.memory_info().rss / 2**20, workers


def rss_growth(samples: list[tuple[float, tuple]], warmup_s: float = 0.0,
               window_s: float = 60.0) -> list[dict]:  # fmt: skip
    """Median RSS of each process over a window after `warmup_s` and over the last `window_s`,
    from `(t, (frontend MiB, {worker pid: MiB}))` samples; workers are matched by pid."""
    end = samples[-1][0]
    window_s = min(window_s, max(end / 4, 1.0))  # short runs: a quarter of the run each side
    begin = min(samples[0][0] + warmup_s, end - window_s)
    first = [v for t, v in samples if begin <= t <= begin + window_s] or [samples[0][1]]
    last = [v for t, v in samples if t >= end - window_s]

    def growth(process: str, start: list[float], stop: list[float]) -> dict:
        a, b = statistics.median(start), statistics.median(stop)
        return {"process": process, "start_mib": a, "end_mib": b, "growth": (b - a) / a}

    rows = [growth("frontend", [f for f, _ in first], [f for f, _ in last])]
    for pid in sorted(set(first[0][1]) & set(samples[-1][1][1])):
        rows.append(growth(f"worker {pid}", [w[pid] for _, w in first if pid in w],
                           [w[pid] for _, w in last if pid in w]))  # fmt: skip
    return rows


def worker_restarts(samples: list[tuple[float, tuple]]) -> int:
    """Worker pids that appeared after the first sample: each one is a restarted worker."""
    seen = [set(workers) for _, (_, workers) in samples]
    return len(set().union(*seen) - seen[0]) if seen else 0


def soak(out_dir: Path, options: SoakOptions, model: Path | None = None,
         source: str = "mix") -> dict:  # fmt: skip
    """Soak a private TorchServe; returns the report also written to `soak.json` (`passed`
    decides). `model` checks the image pool of `source` (default: the served archive)."""
    o = options
    seconds = parse_timespan(o.duration)  # a bad duration fails before anything starts
    pool_path = ensure_pool(model, source=source)
    with serving(None, out_dir / "server", pool_path) as server:
        frontend = listening_pid(server.config.inference_port)  # the JVM
        base = LoadSpec(user_classes=list(o.user_classes))
        if o.rate:
            rate, source = o.rate, "--rate"
        else:
            # 32 closed-loop users keep the server's queue full: its throughput, not theirs.
            probe = run_locust(replace(base, users=32, spawn_rate=32, run_time="20s",
                                       extra_args=["--slo-p99-ms=100000"]),
                               out_dir / "capacity", pool_path, server=server)  # fmt: skip
            if probe.failures:
                raise RuntimeError(f"capacity probe: {probe.failures} of {probe.requests} "
                                   f"requests failed; see {out_dir / 'capacity'}")  # fmt: skip
            rate, source = probe.rps * o.load_fraction, f"{o.load_fraction:g} x {probe.rps:.1f}"
            logger.info("capacity %.1f req/s; soaking at %.1f req/s", probe.rps, rate)
        users = o.users or max(MIN_USERS, math.ceil(rate / MAX_RPS_PER_USER))
        title = f"soak {o.duration} at {rate:.0f} req/s"
        # Zero failures is the soak's bar; latency is reported, not gated.
        spec = replace(base, users=users, spawn_rate=users, run_time=o.duration,
                       rps_per_user=rate / users,
                       extra_args=["--slo-max-failure-ratio=0", "--slo-p99-ms=100000"])
        samples: list[tuple[float, tuple]] = []
        t0 = time.monotonic()

        def sample_rss() -> None:
            with contextlib.suppress(psutil.NoSuchProcess):  # the frontend is gone
                samples.append((round(time.monotonic() - t0, 2), rss_mib(frontend)))

        result = run_locust(spec, out_dir, pool_path, server=server, title=title,
                            every=(o.sample_interval_s, sample_rss))
        sample_rss()
    history = out_dir / "locust_stats_history.csv"
    rows = charts.read_history(history) if history.is_file() else []
    warmup_s = min(o.warmup_s, seconds / 4)
    growth = rss_growth(samples, warmup_s)
    report = {
        "duration": o.duration, "traffic": o.user_classes or "the locustfile's mix",
        "users": users, "target_rps": round(rate, 1), "rate_source": source,
        "achieved_rps": round(result.rps, 1), "requests": result.requests,
        "failures": result.failures, "p50_ms": result.p50_ms, "p95_ms": result.p95_ms,
        "p99_ms": result.p99_ms, "latency_by_minute": charts.latency_by_minute(rows),
        "rss_warmup_s": warmup_s, "rss": growth, "rss_growth_limit": o.max_rss_growth,
        "max_rss_growth": max(g["growth"] for g in growth),
        "worker_restarts": worker_restarts(samples),
        "rss_samples": [{"t": t, "frontend_mib": f, "workers_mib": w} for t, (f, w) in samples],
    }  # fmt: skip
    report["passed"] = (result.failures == 0 and result.requests > 0
                        and report["worker_restarts"] == 0
                        and report["max_rss_growth"] < o.max_rss_growth)  # fmt: skip
    (out_dir / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    charts.plot_soak(rows, samples, out_dir / "soak.png", title)
    return report
