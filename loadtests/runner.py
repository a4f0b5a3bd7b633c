"""Headless Locust runs against a real TorchServe: `python -m loadtests run`.

A run: the pool, a private TorchServe unless a host is given, a checked warm-up, then Locust with
locust.conf's settings unless the caller sets them. It writes Locust's CSV/HTML/JSON and log, the
gate's `slo.json`, `chart.png` and `summary.json`: req/s, images/s, Locust's and TorchServe's own
latency percentiles, the verdict, and the CPU of Locust, the server and the whole host (which
side was the bottleneck). The exit code is the SLO gate's.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import logging
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from deploy.config import read_properties
from loadtests import LOCUST_CONF, LOCUSTFILE, SHAPES_FILE, charts, option
from loadtests.pool import MAX_BODY_BYTES, ImagePool, ensure_pool
from project.paths import REPO_ROOT, RESULTS_DIR

logger = logging.getLogger(__name__)

VERDICT_FILE = "slo.json"


@dataclass
class LoadSpec:
    """One Locust invocation; None takes locust.conf's value."""

    host: str = option("", "URL of a running server (default: a private TorchServe).")
    users: int | None = option(None, "Concurrent users.", "-u", "--users")
    spawn_rate: float | None = option(None, "Users started per second.", "-r", "--spawn-rate")
    run_time: str | None = option(None, "Measured time after the ramp-up.", "-t", "--run-time")
    rps_per_user: float | None = option(None, "Pace each user to this rate (0: no wait).")
    processes: int | None = option(None, "Locust worker processes (0: one process; default: "
                                   "auto_processes).")  # fmt: skip
    user_classes: list[str] = option([], "Only these Locust user classes (repeatable; default: "
                                     "the USER_WEIGHTS mix).", "--user-class")  # fmt: skip
    step: bool = option(False, "Step load (shapes.py) to find the saturation point.")
    reset_stats: bool = True  # measure from the moment every user is spawned
    extra_args: list[str] = option([], "Extra Locust option, e.g. --locust-arg=--slo-p99-ms=50.",
                                   "--locust-arg")  # fmt: skip

    def setting(self, name: str) -> str:
        """The value Locust runs with: this spec's, else locust.conf's."""
        value = getattr(self, name)
        return read_properties(LOCUST_CONF)[name.replace("_", "-")] if value is None else str(value)


@dataclass
class RunResult:
    """A run's figures (`summary.json`); `server_p*_ms`: TorchServe's own timing of them."""

    out_dir: str
    exit_code: int
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    images_per_s: float
    wall_s: float
    cores: int
    locust_cpu_cores: float
    server_cpu_cores: float | None
    machine_cpu_cores: float  # every process of the host: the rest is contention
    server_p50_ms: float | None = None
    server_p99_ms: float | None = None
    slo: dict | None = None
    per_name: dict = field(default_factory=dict)
    saturation: dict | None = None
    spec: dict = field(default_factory=dict)


def listening_pid(port: int | None) -> int | None:
    """The pid of the process listening on a local TCP port (the TorchServe frontend)."""
    listening = psutil.net_connections(kind="tcp")
    return next((c.pid for c in listening if c.status == psutil.CONN_LISTEN and c.laddr
                 and c.laddr.port == port), None)  # fmt: skip


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a process and its descendants, reaped children included."""
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def parse_timespan(text: str) -> int:
    """Seconds in a Locust time span ('30s', '1h30m'), by Locust's own parser, loaded alone:
    importing the `locust` package patches the process with gevent and installs signal handlers
    (an error outside the main thread), which only Locust's own processes want."""
    path = Path(importlib.util.find_spec("locust").origin).parent / "util" / "timespan.py"
    spec = importlib.util.spec_from_file_location("locust_timespan", path)
    spec.loader.exec_module(module := importlib.util.module_from_spec(spec))
    return module.parse_timespan(text)


def images_in(name: str) -> int:
    """Images carried by one request of this Locust name ('single' 1, 'json x8' 8, 'bad: ...' 0)."""
    return 0 if name.startswith("bad") else int(name.rsplit(" x", 1)[1]) if " x" in name else 1


def warm_up(url: str, pool: ImagePool, token: str | None, count: int = 200,
            since: float | None = None) -> float:  # fmt: skip
    """Send `count` + 1 checked single-image requests and an 8-image one; returns the seconds
    from `since` (`time.perf_counter()`, default now) to the first correct answer. A wrong answer
    raises RuntimeError: a load test of a broken server would only time its failures."""
    from client import LenetClient

    since = since or time.perf_counter()
    with LenetClient(url, token=token, timeout=10) as client:

        def check(picks) -> None:
            answers = client.predict([pool.images[i] for i in picks])
            got = [getattr(a, "digit", None) for a in answers]
            if got != [pool.labels[i] for i in picks]:
                raise RuntimeError(f"{url}: wrong digits {got} for pool images {list(picks)}")

        check([0])
        first_ok = time.perf_counter() - since
        for i in range(count):
            check([i % len(pool)])
        check(pool.request(list(range(min(8, len(pool)))), MAX_BODY_BYTES))
    return first_ok


@contextlib.contextmanager
def serving(host: str | None, run_dir: Path, pool_path: Path, warmup: int = 200, **settings):
    """Warm up `host` and yield None; without one, start a private TorchServe with these
    `deploy.config.ServerConfig` settings, warm it up, yield it and stop it afterwards."""
    from deploy.keys import inference_token
    from deploy.server import TorchServe

    if host:
        warm_up(host.rstrip("/"), ImagePool.load(pool_path), inference_token(), warmup)
        yield None
        return
    with TorchServe.private(run_dir, **settings) as server:
        warm_up(server.inference_url, ImagePool.load(pool_path), server.inference_token, warmup)
        yield server


def locust_command(spec: LoadSpec, out_dir: Path, pool_path: Path) -> list[str]:
    """The `locust` command line: locust.conf, then only the options this spec sets."""
    cmd = [
        sys.executable, "-m", "locust",
        "-f", f"{LOCUSTFILE},{SHAPES_FILE}" if spec.step else str(LOCUSTFILE),
        "--config", str(LOCUST_CONF), "--host", spec.host, "--pool", str(pool_path),
        "--csv", str(out_dir / "locust"), "--csv-full-history",
        "--html", str(out_dir / "report.html"), "--json-file", str(out_dir / "locust"),
        "--logfile", str(out_dir / "locust.log"),
        "--slo-verdict-file", str(out_dir / VERDICT_FILE),
    ]  # fmt: skip
    given = [("--rps-per-user", spec.rps_per_user)]
    if not spec.step:  # a step run's shape sets users and duration
        given += [("-u", spec.users), ("-r", spec.spawn_rate), ("-t", spec.run_time)]
        cmd += ["--reset-stats"] if spec.reset_stats else []
    cmd += [str(x) for flag, value in given if value is not None for x in (flag, value)]
    cmd += ["--processes", str(spec.processes)] if spec.processes else []
    return cmd + list(spec.extra_args) + list(spec.user_classes)


def read_stats(out_dir: Path) -> tuple[dict, dict]:
    """(aggregated row, {name: row}) of Locust's `_stats.csv`, numbers as floats."""
    with open(out_dir / "locust_stats.csv", newline="") as fh:
        rows = {row["Name"]: {k: v if k in ("Type", "Name") or v in ("", "N/A") else float(v)
                              for k, v in row.items()}
                for row in csv.DictReader(fh)}  # fmt: skip
    return rows.pop("Aggregated"), rows


def server_latency(access_log: Path, offset: int, since: datetime) -> tuple[float, float] | None:
    """(p50, p99) ms of the `POST /predictions/` lines TorchServe's access log got after byte
    `offset`, stamped from `since` on (local time), e.g. `2026-11-24T13:53:16,445 - /127.0.0.1:3
    "POST /predictions/lenet HTTP/1.1" 200 4`: the last field is its time in whole ms."""
    latencies = []
    with open(access_log, "rb") as f:
        f.seek(offset)
        for line in f.read().decode("utf-8", "replace").splitlines():
            with contextlib.suppress(ValueError, IndexError):  # a torn line
                stamp = datetime.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S,%f")
                if '"POST /predictions/' in line and stamp >= since:
                    latencies.append(int(line.rsplit(None, 1)[1]))
    if len(latencies) < 2:
        return (float(latencies[0]),) * 2 if latencies else None
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return round(cuts[49], 1), round(cuts[98], 1)


def run_locust(spec: LoadSpec, out_dir: Path, pool_path: Path, key_file: Path | None = None, *,
               server=None, title: str = "", every: tuple[float, Callable] | None = None,
               ) -> RunResult:  # fmt: skip
    """Run Locust headless; collect its figures, `summary.json` and a chart. `server`, a started
    `deploy.server.TorchServe`, sets host and key and adds its own p50/p99 (access log); a server
    on this machine has its CPU measured. `every=(seconds, fn)` calls `fn()` while Locust runs."""
    target = urlsplit(server.inference_url if server else spec.host)
    local = target.hostname in ("127.0.0.1", "localhost", "::1")
    server_pid = server.pid if server else listening_pid(target.port) if local else None
    if server is not None:
        spec, key_file = replace(spec, host=server.inference_url), server.key_file
    if spec.processes is None:
        spec = replace(spec, processes=auto_processes(remote=not local))
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    if key_file:
        env["LENET_KEY_FILE"] = str(key_file)
    cmd = locust_command(spec, out_dir, pool_path)
    logger.info("locust: %s", " ".join(cmd))
    budget = (3600 if spec.step else parse_timespan(spec.setting("run_time"))) + 90
    log = server.access_log if server and server.access_log.is_file() else None
    log_offset = log.stat().st_size if log else 0
    # Locust resets its statistics once every user is spawned: the measured window starts then.
    ramp_s = float(spec.setting("users")) / float(spec.setting("spawn_rate"))
    ramp_s = ramp_s if spec.reset_stats and not spec.step else 0.0
    measured_from = datetime.now() + timedelta(seconds=ramp_s)
    # Locust's CPU, its forked workers included: the rusage of reaped children is exact.
    children, machine = resource.getrusage(resource.RUSAGE_CHILDREN), psutil.cpu_times()
    server_cpu = tree_cpu_seconds(server_pid) if server_pid else None
    started = time.perf_counter()
    with open(out_dir / "locust.out", "wb") as out:
        proc = subprocess.Popen(cmd, cwd=out_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        interval, fn = every or (budget, None)
        deadline = time.monotonic() + budget
        try:
            while (exit_code := proc.poll()) is None:
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(cmd, budget)
                if fn:
                    fn()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=interval)
        except BaseException as exc:  # too slow, or interrupted: Locust has its own session
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise RuntimeError(f"locust ran over {budget:.0f} s; see {out_dir}") from None
            raise
    wall = time.perf_counter() - started
    server_cpu = tree_cpu_seconds(server_pid) - server_cpu if server_pid else None
    after, machine_after = resource.getrusage(resource.RUSAGE_CHILDREN), psutil.cpu_times()
    locust_cpu = sum(getattr(after, f) - getattr(children, f) for f in ("ru_utime", "ru_stime"))
    machine_busy = sum(getattr(machine_after, f) - getattr(machine, f) for f in machine._fields
                       if f not in ("idle", "iowait", "guest", "guest_nice"))  # guest is in user
    try:
        total, per_name = read_stats(out_dir)
    except (FileNotFoundError, KeyError) as exc:
        tail = (out_dir / "locust.out").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"no stats in {out_dir} (locust exit {exit_code}):\n{tail}") from exc
    verdict = out_dir / VERDICT_FILE
    result = RunResult(
        out_dir=str(out_dir), exit_code=exit_code,
        requests=int(total["Request Count"]), failures=int(total["Failure Count"]),
        rps=total["Requests/s"], p50_ms=total["50%"], p95_ms=total["95%"], p99_ms=total["99%"],
        images_per_s=round(sum(r["Requests/s"] * images_in(n) for n, r in per_name.items()), 1),
        wall_s=round(wall, 2), cores=os.cpu_count() or 1,
        locust_cpu_cores=round(locust_cpu / wall, 3),
        server_cpu_cores=None if server_cpu is None else round(server_cpu / wall, 3),
        machine_cpu_cores=round(machine_busy / wall, 3),
        slo=json.loads(verdict.read_text()) if verdict.is_file() else None,
        per_name={n: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                      "rps": r["Requests/s"], "p50_ms": r["50%"], "p99_ms": r["99%"]}
                  for n, r in per_name.items()},
        spec=asdict(spec),
    )  # fmt: skip
    if log:
        latency = server_latency(log, log_offset, measured_from)
        result.server_p50_ms, result.server_p99_ms = latency or (None, None)
    history = out_dir / "locust_stats_history.csv"
    if history.is_file():
        result.saturation = charts.saturation_point(history) if spec.step else None
        charts.plot_run(history, out_dir / "chart.png", title=title or out_dir.name)
    (out_dir / "summary.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    logger.info("%s: %.1f req/s, %.1f images/s, p50 %.0f ms, p99 %.0f ms, %d failures",
                out_dir.name, result.rps, result.images_per_s, result.p50_ms, result.p99_ms,
                result.failures)  # fmt: skip
    return result


def load_test(spec: LoadSpec, out_dir: Path, model: Path | None = None,
              pool_path: Path | None = None, warmup: int = 200) -> RunResult:  # fmt: skip
    """`python -m loadtests run`: against `spec.host`, else a private TorchServe; the pool is
    `pool_path`, else the cached one of `model` (default `pool.default_model()`)."""
    pool_path = pool_path or ensure_pool(model)
    with serving(spec.host, out_dir / "server", pool_path, warmup) as server:
        return run_locust(spec, out_dir, pool_path, server=server)


def timestamped_dir(label: str) -> Path:
    """`loadtests/results/<YYYYmmdd-HHMMSS>-<label>/`, created."""
    path = RESULTS_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-{label}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def auto_processes(remote: bool) -> int:
    """Locust processes: one per core against a remote host; against a local server one
    process unless the machine has cores to spare (more would steal CPU from TorchServe)."""
    cores = os.cpu_count() or 1
    return (cores if cores > 1 else 0) if remote else (cores // 4 if cores >= 8 else 0)


def format_result(r: RunResult) -> str:
    """The run by request name as a table, then the figures beside it and the verdict."""
    keys = ("images_per_s", "locust_cpu_cores", "server_cpu_cores", "machine_cpu_cores", "cores",
            "server_p50_ms", "server_p99_ms", "saturation")  # fmt: skip
    verdict = "PASSED" if r.slo and r.slo["passed"] else f"FAILED: {r.slo and r.slo['violations']}"
    table = charts.md_table(["request", "count", "failures", "req/s", "p50 ms", "p99 ms"], [
        [name, x["requests"], x["failures"], f"{x['rps']:.1f}", x["p50_ms"], x["p99_ms"]]
        for name, x in [*sorted(r.per_name.items()), ("total", asdict(r))]])  # fmt: skip
    return "\n".join([*table, json.dumps({k: getattr(r, k) for k in keys}), f"SLO gate {verdict}"])
