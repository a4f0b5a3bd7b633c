"""Soak test: `python -m loadtests soak --duration 10m` (`make soak DURATION=10m`).

Holds a constant request rate at about half of the server's measured capacity for a long time
and checks what only time reveals: errors (there must be none), memory growth of the TorchServe
frontend (JVM) and of every backend worker (< 10 % from start to end), worker restarts, and
latency drift.

- capacity, for the same traffic mix: the newest step run (`python -m loadtests run --step`, its
  `saturation.max_rps`) for the locustfile's default mix, or the tuned single-image req/s of
  `bench-latest.json` for `--user-class SingleImageUser`; else a 20 s closed-loop measurement
  with 32 users right here (`--measure` forces it);
- load: Locust with `--rps-per-user` pacing (constant throughput), the project's locustfile and
  its answer checks (`loadtests/runner.py`), the SLO gate tightened to zero failures;
- memory: a psutil sampler reads the RSS of the frontend and of each worker every few seconds.
  The gate compares the median of the minute after a warm-up (`--warmup`, 60 s: the JVM sizes
  its heap and JITs the request path first) with the median of the last minute; the growth from
  the very first sample is reported beside it. Single samples are noisy (GC);
- output under `loadtests/results/<timestamp>-soak/`: `soak.json`, `soak.png` (latency
  percentiles and req/s over time; RSS of each process over time) and Locust's own files.

The exit code is 0 only when there were no failures, no worker restarted and no process grew by
`--max-rss-growth` or more.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from loadtests import RESULTS_DIR, charts
from loadtests.pool import ImagePool, ensure_pool
from loadtests.runner import (
    LoadSpec,
    listening_pid,
    local_server,
    parse_duration,
    run_locust,
    timestamped_dir,
    warm_up,
)

logger = logging.getLogger(__name__)

DEFAULT_DURATION = "10m"
DEFAULT_LOAD_FRACTION = 0.5
DEFAULT_USERS = 8
MAX_RPS_PER_USER = 4.0  # a paced user waits 250 ms: longer than a slow answer under load
DEFAULT_WARMUP_S = 60.0
MAX_RSS_GROWTH = 0.10
WORKER_MARKER = "model_service_worker"  # TorchServe's backend worker entry point


# --- capacity ----------------------------------------------------------------------------------
def latest_capacity(
    user_classes: list[str], results_dir: Path = RESULTS_DIR
) -> tuple[float, str] | None:
    """(req/s, source) of the newest capacity measured for this traffic mix, if any.

    A capacity measured on another mix would set the wrong rate, so: for the default mix, the
    newest step run (`python -m loadtests run --step`, `saturation.max_rps`, no user-class
    filter); for single-image traffic only, the tuned server's single-image req/s of the
    latest `python -m loadtests bench` (`bench-latest.json`).
    """
    if user_classes == ["SingleImageUser"]:
        bench = results_dir / "bench-latest.json"
        try:
            rps = json.loads(bench.read_text())["tuned"]["single"]["rps"]
            return float(rps), f"{bench} (tuned, single image)"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if user_classes:
        return None
    candidates = sorted(results_dir.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(candidates):
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        saturation = summary.get("saturation") or {}
        if saturation.get("max_rps") and not summary.get("spec", {}).get("user_classes"):
            return float(saturation["max_rps"]), str(path)
    return None


def measure_capacity(
    host: str,
    pool_path: Path,
    key_file: Path | None,
    out_dir: Path,
    user_classes: list[str],
    users: int = 32,
    seconds: int = 20,
) -> float:
    """Closed-loop req/s of `users` unpaced users for `seconds`: the server's capacity here.

    32 users keep the server's queue full (as `python -m loadtests bench` does), so the figure
    is its throughput, not the users' round-trip rate.
    """
    spec = LoadSpec(host=host, users=users, spawn_rate=users, run_time=f"{seconds}s",
                    user_classes=list(user_classes),
                    extra_args=["--slo-p99-ms=100000"])  # fmt: skip
    result = run_locust(spec, out_dir, pool_path, key_file, listening_pid(port_of(host)))
    if result.failures:
        raise RuntimeError(
            f"capacity probe had {result.failures} failures of {result.requests}; see {out_dir}"
        )
    return result.rps


def port_of(url: str) -> int:
    """The TCP port of an http://host:port URL."""
    return int(url.rstrip("/").rsplit(":", 1)[1])


# --- memory sampling -------------------------------------------------------------------------
@dataclass
class RssSample:
    """One psutil reading: seconds since start, frontend RSS, {worker pid: RSS} (MiB)."""

    t: float
    frontend_mib: float
    workers_mib: dict[int, float]


def worker_processes(frontend: psutil.Process) -> list[psutil.Process]:
    """TorchServe's Python backend workers: the frontend's `model_service_worker` children."""
    found = []
    for child in frontend.children(recursive=True):
        try:
            if any(WORKER_MARKER in part for part in child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


class RssSampler:
    """Samples the RSS of the frontend and its workers in a background thread."""

    def __init__(self, frontend_pid: int, interval_s: float = 5.0) -> None:
        self.frontend = psutil.Process(frontend_pid)
        self.interval_s = interval_s
        self.samples: list[RssSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._t0 = time.monotonic()

    def sample(self) -> RssSample:
        """Read every process once (a worker that vanished mid-read is skipped)."""
        workers = {}
        for proc in worker_processes(self.frontend):
            try:
                workers[proc.pid] = proc.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                continue
        reading = RssSample(
            t=round(time.monotonic() - self._t0, 2),
            frontend_mib=self.frontend.memory_info().rss / 2**20,
            workers_mib=workers,
        )
        self.samples.append(reading)
        return reading

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except psutil.NoSuchProcess:
                logger.error("the TorchServe frontend (pid %d) is gone", self.frontend.pid)
                return

    def start(self) -> RssSampler:
        """Take a first reading now and keep sampling until `stop`."""
        self._t0 = time.monotonic()
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> list[RssSample]:
        """Take a last reading and return all of them."""
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.sample()
        except psutil.NoSuchProcess:
            pass
        return self.samples


@dataclass
class Growth:
    """RSS of one process at the start and the end of the soak."""

    process: str
    start_mib: float
    end_mib: float
    growth: float = field(init=False)

    def __post_init__(self) -> None:
        self.growth = (self.end_mib - self.start_mib) / self.start_mib if self.start_mib else 0.0


def rss_growth(
    samples: list[RssSample], warmup_s: float = 0.0, window_s: float = 60.0
) -> list[Growth]:
    """Median RSS over a window after `warmup_s` and over the last `window_s`, per process.

    Workers are matched by pid; a pid that is not present from the first to the last window
    was restarted, and shows up in `worker_restarts` instead.
    """
    if not samples:
        return []
    end_t = samples[-1].t
    window_s = min(window_s, max(end_t / 4, 1.0))  # short runs: a quarter of the run each side
    begin = min(samples[0].t + warmup_s, end_t - window_s)
    first = [s for s in samples if begin <= s.t <= begin + window_s] or samples[:1]
    last = [s for s in samples if s.t >= end_t - window_s]
    out = [
        Growth(
            "frontend",
            statistics.median(s.frontend_mib for s in first),
            statistics.median(s.frontend_mib for s in last),
        )
    ]
    for pid in sorted(set(first[0].workers_mib) & set(samples[-1].workers_mib)):
        start = [s.workers_mib[pid] for s in first if pid in s.workers_mib]
        end = [s.workers_mib[pid] for s in last if pid in s.workers_mib]
        out.append(Growth(f"worker {pid}", statistics.median(start), statistics.median(end)))
    return out


def worker_restarts(samples: list[RssSample]) -> int:
    """Worker pids that appeared after the first sample (each one is a restarted worker)."""
    if not samples:
        return 0
    seen = set(samples[0].workers_mib)
    new = set()
    for s in samples[1:]:
        new |= set(s.workers_mib) - seen
    return len(new)


# --- latency over time -----------------------------------------------------------------------
def latency_by_minute(history_csv: Path) -> list[dict]:
    """Locust's cumulative-window percentiles sampled once a minute (its history is per second).

    Locust's history rows hold percentiles of a sliding ~10 s window, so one row per minute is
    a fair picture of drift without averaging percentiles.
    """
    rows = [r for r in charts.read_history(history_csv) if r["p50"] and r["rps"]]
    picked, next_t = [], 0.0
    for row in rows:
        if row["t"] >= next_t:
            picked.append({k: row[k] for k in ("t", "rps", "p50", "p95", "p99")})
            next_t = row["t"] + 60.0
    if rows and picked[-1]["t"] != rows[-1]["t"]:
        picked.append({k: rows[-1][k] for k in ("t", "rps", "p50", "p95", "p99")})
    return picked


def plot_soak(history_csv: Path, samples: list[RssSample], out_png: Path, title: str) -> Path:
    """Latency percentiles and req/s over time (left); RSS of every process over time (right)."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    rows = charts.read_history(history_csv) if history_csv.is_file() else []
    fig, (ax_lat, ax_rss) = plt.subplots(1, 2, figsize=(13, 4.5))
    t = [r["t"] / 60 for r in rows]
    for key, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
        ax_lat.plot(t, [r[key] for r in rows], style, color="tab:red", label=f"{key} ms")
    ax_lat.set_xlabel("time (min)")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.legend(loc="upper left", fontsize=8)
    rps_axis = ax_lat.twinx()
    rps_axis.plot(t, [r["rps"] or 0 for r in rows], color="tab:blue", alpha=0.4)
    rps_axis.set_ylabel("requests/s", color="tab:blue")
    ax_lat.set_title("latency and throughput")

    ts = [s.t / 60 for s in samples]
    ax_rss.plot(ts, [s.frontend_mib for s in samples], label="frontend (JVM)")
    for pid in sorted({pid for s in samples for pid in s.workers_mib}):
        ax_rss.plot(ts, [s.workers_mib.get(pid) for s in samples], label=f"worker {pid}")
    ax_rss.set_xlabel("time (min)")
    ax_rss.set_ylabel("RSS (MiB)")
    ax_rss.set_ylim(bottom=0)
    ax_rss.legend(loc="lower right", fontsize=8)
    ax_rss.set_title("memory")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# --- the soak --------------------------------------------------------------------------------
def users_for(rate: float, per_user_rps: float = MAX_RPS_PER_USER) -> int:
    """Enough paced users that each waits longer than a slow answer takes (keeps the rate)."""
    return max(DEFAULT_USERS, math.ceil(rate / per_user_rps))


def soak(host: str, pool_path: Path, key_file: Path | None, out_dir: Path, args) -> dict:
    """Run the soak against a started server; returns the report written to `soak.json`."""
    frontend_pid = listening_pid(port_of(host))
    if frontend_pid is None:
        raise RuntimeError(f"no local process listens on {host}: memory can't be sampled")
    classes = list(args.user_classes)
    if args.rate:
        rate, source = args.rate, "--rate"
    else:
        known = None if args.measure else latest_capacity(classes)
        if known:
            capacity, source = known
        else:
            capacity = measure_capacity(host, pool_path, key_file, out_dir / "capacity", classes)
            source = f"measured now ({out_dir / 'capacity'})"
        rate = capacity * args.load_fraction
        logger.info("capacity %.1f req/s (%s); soaking at %.1f req/s", capacity, source, rate)
    users = args.users or users_for(rate)
    spec = LoadSpec(
        host=host,
        users=users,
        spawn_rate=users,
        run_time=args.duration,
        rps_per_user=rate / users,
        user_classes=classes,
        # Zero failures is the soak's bar; latency is reported, not gated, here.
        extra_args=["--slo-max-failure-ratio=0", "--slo-p99-ms=100000"],
    )
    seconds = parse_duration(args.duration)
    warmup = min(args.warmup, seconds / 4)
    sampler = RssSampler(frontend_pid, interval_s=args.sample_interval).start()
    title = f"soak {args.duration} at {rate:.0f} req/s"
    try:
        result = run_locust(spec, out_dir, pool_path, key_file, frontend_pid, chart_title=title)
    finally:
        samples = sampler.stop()
    history = out_dir / "locust_stats_history.csv"
    growth = rss_growth(samples, warmup_s=warmup)
    from_first = rss_growth(samples, warmup_s=0.0, window_s=args.sample_interval / 2)
    restarts = worker_restarts(samples)
    report = {
        "duration": args.duration,
        "traffic": classes or "default mix (locustfile.USER_WEIGHTS)",
        "users": users,
        "target_rps": round(rate, 1),
        "rate_source": source,
        "achieved_rps": round(result.rps, 1),
        "requests": result.requests,
        "failures": result.failures,
        "p50_ms": result.p50_ms,
        "p95_ms": result.p95_ms,
        "p99_ms": result.p99_ms,
        "latency_by_minute": latency_by_minute(history) if history.is_file() else [],
        "rss_warmup_s": warmup,
        "rss": [asdict(g) for g in growth],
        "rss_from_first_sample": [asdict(g) for g in from_first],
        "max_rss_growth": max((g.growth for g in growth), default=0.0),
        "rss_growth_limit": args.max_rss_growth,
        "worker_restarts": restarts,
        "rss_samples": [asdict(s) for s in samples],
        "locust_summary": str(out_dir / "summary.json"),
    }
    report["passed"] = bool(
        result.failures == 0
        and result.requests > 0
        and restarts == 0
        and report["max_rss_growth"] < args.max_rss_growth
    )
    (out_dir / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_soak(history, samples, out_dir / "soak.png", title)
    return report


def format_report(report: dict) -> str:
    """The soak's verdict as a small table."""
    lines = [
        f"soak {report['duration']}: {report['requests']} requests at "
        f"{report['achieved_rps']} req/s (target {report['target_rps']}, {report['rate_source']})",
        f"failures {report['failures']}; worker restarts {report['worker_restarts']}; "
        f"p50/p95/p99 {report['p50_ms']:.0f}/{report['p95_ms']:.0f}/{report['p99_ms']:.0f} ms",
        f"RSS: 'steady' = median after the first {report['rss_warmup_s']:.0f} s (JVM heap and "
        "JIT warm-up) vs the last minute; 'first' = the very first sample vs the last",
        f"{'process':<16}{'first MiB':>10}{'steady MiB':>11}{'end MiB':>10}"
        f"{'growth':>9}{'from first':>11}",
    ]
    for g, f in zip(report["rss"], report["rss_from_first_sample"], strict=False):
        lines.append(
            f"{g['process']:<16}{f['start_mib']:>10.1f}{g['start_mib']:>11.1f}"
            f"{g['end_mib']:>10.1f}{g['growth']:>9.1%}{f['growth']:>11.1%}"
        )
    lines.append(f"{'minute':>6}{'req/s':>8}{'p50':>7}{'p95':>7}{'p99':>7}")
    for row in report["latency_by_minute"]:
        lines.append(
            f"{row['t'] / 60:>6.1f}{row['rps'] or 0:>8.1f}{row['p50'] or 0:>7.0f}"
            f"{row['p95'] or 0:>7.0f}{row['p99'] or 0:>7.0f}"
        )
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    """Options of the `soak` subcommand."""
    target = parser.add_argument_group("target")
    target.add_argument("--host", default=None, help="A running local server's URL (its "
                        "processes are sampled); default: start one through deploy.launcher on "
                        "free ports and stop it afterwards.")  # fmt: skip
    target.add_argument(
        "--model",
        type=Path,
        default=None,
        help="Local model for the image pool (default: artifacts/lenet.pt).",
    )
    load = parser.add_argument_group("load")
    load.add_argument("--duration", default=DEFAULT_DURATION, help="Soak length (e.g. 10m, 1h).")
    load.add_argument(
        "--rate",
        type=float,
        default=None,
        help="Requests/s to hold (default: --load-fraction of the capacity).",
    )
    load.add_argument(
        "--load-fraction",
        type=float,
        default=DEFAULT_LOAD_FRACTION,
        help="Share of the measured capacity to hold.",
    )
    load.add_argument(
        "--measure",
        action="store_true",
        help="Measure capacity now even if a step run's result exists.",
    )
    load.add_argument(
        "--users",
        type=int,
        default=0,
        help="Locust users sharing the rate, each paced with constant throughput (0 = enough "
        f"for at most {MAX_RPS_PER_USER:g} req/s each, at least {DEFAULT_USERS}).",
    )
    load.add_argument(
        "--user-class",
        action="append",
        default=[],
        dest="user_classes",
        help="Only these Locust user classes (repeatable; default: the locustfile's mix).",
    )
    check = parser.add_argument_group("checks")
    check.add_argument(
        "--warmup",
        type=float,
        default=DEFAULT_WARMUP_S,
        help="Seconds excluded from the RSS baseline (capped at a quarter of the run).",
    )
    check.add_argument(
        "--max-rss-growth",
        type=float,
        default=MAX_RSS_GROWTH,
        help="Largest allowed RSS growth of any process, start to end.",
    )
    check.add_argument(
        "--sample-interval", type=float, default=5.0, help="Seconds between RSS samples."
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"Result folder (default: {RESULTS_DIR}/<timestamp>-soak).",
    )


def command(args) -> int:
    """Run the soak; 0 when it passed."""
    from deploy.keys import inference_token

    parse_duration(args.duration)  # fail fast on a bad duration
    out_dir = args.out or timestamped_dir("soak")
    pool_path = ensure_pool(model_path=args.model)
    pool = ImagePool.load(pool_path)
    if args.host:
        warm_up(args.host.rstrip("/"), pool, inference_token(), 200)
        report = soak(args.host.rstrip("/"), pool_path, None, out_dir, args)
    else:
        with local_server(out_dir / "server") as server:
            token = inference_token(server.key_file)
            warm_up(server.url, pool, token, 0)
            warm_up(server.url, pool, token, 200)
            report = soak(server.url, pool_path, server.key_file, out_dir, args)
    print(format_report(report))
    print(f"results: {out_dir}")
    return 0 if report["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m loadtests.soak` (same as `python -m loadtests soak`)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m loadtests soak",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    return command(args)


if __name__ == "__main__":
    raise SystemExit(main())
