"""Headless Locust runs against a real TorchServe: `python -m loadtests run`.

One run = (optionally) start a local TorchServe through `deploy.launcher`, build/reuse the image
pool, warm the server up with checked predictions, then run Locust headless (stats reset once all
users are spawned), writing under `loadtests/results/<timestamp>/`:

- `locust_stats.csv`, `locust_stats_history.csv`, `locust_failures.csv`, `report.html`,
  `locust.json` (Locust's own outputs), `locust.log`;
- `summary.json`: throughput, latency percentiles, images/s, the SLO verdict and the CPU used by
  the load generator and by the server (to tell which side was the bottleneck);
- `chart.png`: req/s and p50/p95/p99 over time and against users.

The exit code is Locust's, which the SLO gate (`loadtests/slo.py`) sets.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import requests

from loadtests import LOCUST_CONF, LOCUSTFILE, REPO_ROOT, RESULTS_DIR, SHAPES_FILE
from loadtests.pool import ImagePool

logger = logging.getLogger(__name__)

CSV_PREFIX = "locust"
MODEL_NAME = "lenet"


# --- what to run and what came out ----------------------------------------------------------
@dataclass
class LoadSpec:
    """One Locust invocation. `processes` 0 runs one process; N forks N workers + a master."""

    host: str
    users: int = 16
    spawn_rate: float = 16.0
    run_time: str = "30s"
    processes: int = 0
    user_classes: list[str] = field(default_factory=list)
    step: bool = False
    rps_per_user: float = 0.0
    reset_stats: bool = True
    extra_args: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    """The figures of one run, as written to `summary.json`."""

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
    machine_cpu_cores: float | None = None  # all processes of the host: the rest is contention
    # The same requests timed by TorchServe itself (access log: request read -> response
    # written, whole ms), over the measured window: the gap to Locust's figures is the load
    # generator's share of the latency.
    server_p50_ms: float | None = None
    server_p99_ms: float | None = None
    slo: dict | None = None
    per_name: dict = field(default_factory=dict)
    saturation: dict | None = None
    spec: dict = field(default_factory=dict)


def parse_duration(text: str) -> float:
    """Seconds in a Locust time string like '30s', '2m', '1h30m' or '45'."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"bad duration {text!r}: use e.g. 30s, 2m, 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def images_in(name: str) -> int:
    """Images carried by one request of this Locust name ('single' 1, 'json x8' 8, 'bad: ...' 0)."""
    if name.startswith("bad"):
        return 0
    match = re.search(r"x(\d+)$", name)
    return int(match.group(1)) if match else 1


# --- CPU accounting: is the load generator or the server the bottleneck? -------------------
class TreeCpuMeter:
    """CPU seconds used by process trees during a window, sampled so short-lived children count."""

    def __init__(self, root_pids: list[int], interval: float = 0.5) -> None:
        self.root_pids = list(root_pids)
        self.interval = interval
        self._baseline: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree(self) -> list[psutil.Process]:
        procs = []
        for pid in self.root_pids:
            try:
                root = psutil.Process(pid)
                procs.append(root)
                procs.extend(root.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return procs

    def _sample(self) -> dict[int, float]:
        seen = {}
        for proc in self._tree():
            try:
                t = proc.cpu_times()
                seen[proc.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                continue
        return seen

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._last.update(self._sample())

    def start(self, baseline: bool = True) -> TreeCpuMeter:
        """Begin the window; with `baseline`, CPU used before now is not counted."""
        self._baseline = self._sample() if baseline else {}
        self._last = dict(self._baseline)
        self._thread.start()
        return self

    def stop(self) -> float:
        """End the window; returns CPU seconds used in it."""
        self._last.update(self._sample())
        self._stop.set()
        self._thread.join(timeout=5)
        return sum(v - self._baseline.get(pid, 0.0) for pid, v in self._last.items())


def listening_pid(port: int) -> int | None:
    """The pid of the process listening on a local TCP port (the TorchServe frontend)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


# --- the local server ------------------------------------------------------------------------
def free_port() -> int:
    """A currently free localhost TCP port (parallel runs must not collide on 8080)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


DEFAULT_MODEL_STORE = REPO_ROOT / "model_store"


def model_store_dir() -> Path:
    """The model store to serve from: `LENET_MODEL_STORE`, else the repository's model_store/."""
    return Path(os.environ.get("LENET_MODEL_STORE", DEFAULT_MODEL_STORE))


@dataclass
class ServerHandle:
    """A started local TorchServe: where to send requests and how to find its processes."""

    url: str
    key_file: Path
    pid: int | None
    server: object
    started_at: float
    access_log: Path | None = None  # TorchServe's access log: server-side latency per request


@contextmanager
def local_server(
    run_dir: Path,
    model_config_overrides: dict | None = None,
    config_overrides: dict | None = None,
    env: dict | None = None,
    stock: bool = False,
    model_store: Path | None = None,
) -> Iterator[ServerHandle]:
    """Start TorchServe through the project's launcher on free ports; always stop it.

    `started_at` is taken just before the launcher is asked to start, for cold-start timing.
    """
    from deploy.launcher import TorchServe

    server = TorchServe(
        model_store=model_store or model_store_dir(),
        run_dir=run_dir,
        inference_port=free_port(),
        management_port=free_port(),
        metrics_port=free_port(),
        config_overrides=config_overrides or {},
        model_config_overrides=model_config_overrides or {},
        env=env,
        stock=stock,
    )
    started = time.perf_counter()
    server.start()
    try:
        yield ServerHandle(
            url=server.inference_url,
            key_file=server.key_file,
            pid=server.pid,
            server=server,
            started_at=started,
            access_log=server.run_dir / "logs" / "access_log.log",
        )
    finally:
        server.stop()


# --- warm-up ---------------------------------------------------------------------------------
def warm_up(url: str, pool: ImagePool, token: str | None, requests_count: int = 200) -> float:
    """Send checked single and multi-image requests; returns seconds to the first correct one.

    Raises RuntimeError when the server answers wrongly: a load test against a broken server
    would only measure how fast it fails.
    """
    from deploy.keys import auth_headers
    from handler.schemas import MultiPrediction, Prediction

    headers = auth_headers(token)
    endpoint = f"{url}/predictions/{MODEL_NAME}"
    started = time.perf_counter()
    first_ok = None
    with requests.Session() as session:
        deadline = started + 120
        # Retry the first request until the model's workers are up (registration is async).
        while first_ok is None:
            resp = session.post(
                endpoint,
                data=pool.pngs[0],
                headers={"Content-Type": "image/png", **headers},
                timeout=10,
            )
            if resp.status_code == 200:
                digit = Prediction.model_validate_json(resp.content).digit
                if digit != pool.labels[0]:
                    raise RuntimeError(f"{endpoint}: expected {pool.labels[0]}, got {digit}")
                first_ok = time.perf_counter() - started
            elif resp.status_code in (503, 404) and time.perf_counter() < deadline:
                time.sleep(0.1)
            else:
                raise RuntimeError(f"{endpoint}: HTTP {resp.status_code}: {resp.text[:300]}")
        for n in range(requests_count):
            i = n % len(pool)
            resp = session.post(
                endpoint,
                data=pool.pngs[i],
                headers={"Content-Type": "image/png", **headers},
                timeout=10,
            )
            resp.raise_for_status()
            if Prediction.model_validate_json(resp.content).digit != pool.labels[i]:
                raise RuntimeError(f"{endpoint}: wrong digit during warm-up for pool image {i}")
        picks = list(range(min(8, len(pool))))
        resp = session.post(
            endpoint, json={"images": [pool.b64[i] for i in picks]}, headers=headers, timeout=10
        )
        resp.raise_for_status()
        got = [p.digit for p in MultiPrediction.model_validate_json(resp.content).predictions]
        if got != [pool.labels[i] for i in picks]:
            raise RuntimeError(f"{endpoint}: wrong digits in a multi-image warm-up request")
    return first_ok


# --- one Locust run --------------------------------------------------------------------------
def locust_command(spec: LoadSpec, out_dir: Path, pool_path: Path) -> list[str]:
    """The `locust` command line for a spec (config file first, explicit options override it)."""
    files = f"{LOCUSTFILE},{SHAPES_FILE}" if spec.step else str(LOCUSTFILE)
    cmd = [
        sys.executable, "-m", "locust",
        "-f", files,
        "--config", str(LOCUST_CONF),
        "--headless",
        "--host", spec.host,
        "--pool", str(pool_path),
        "--csv", str(out_dir / CSV_PREFIX),
        "--csv-full-history",
        "--html", str(out_dir / "report.html"),
        "--json-file", str(out_dir / "locust"),
        "--logfile", str(out_dir / "locust.log"),
        "--rps-per-user", str(spec.rps_per_user),
    ]  # fmt: skip
    if not spec.step:
        cmd += ["-u", str(spec.users), "-r", str(spec.spawn_rate), "-t", spec.run_time]
        if spec.reset_stats:
            cmd.append("--reset-stats")
    if spec.processes:
        cmd += ["--processes", str(spec.processes)]
    return cmd + list(spec.extra_args) + list(spec.user_classes)


def read_stats(out_dir: Path) -> tuple[dict, dict]:
    """(aggregated row, {name: row}) from Locust's `_stats.csv`, numbers as floats."""
    rows = {}
    with open(out_dir / f"{CSV_PREFIX}_stats.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows[row["Name"]] = {
                k: (float(v) if v not in ("", "N/A") and k not in ("Type", "Name") else v)
                for k, v in row.items()
            }
    total = rows.pop("Aggregated")
    return total, rows


def read_slo_verdict(log_path: Path) -> dict | None:
    """The SLO gate's verdict line from Locust's log (the master's, when distributed)."""
    if not log_path.is_file():
        return None
    verdict = None
    for line in log_path.read_text(errors="replace").splitlines():
        if "SLO gate" in line and '{"slo"' in line:
            verdict = json.loads(line[line.index('{"slo"') :])["slo"]
    return verdict


ACCESS_LOG_TIME = "%Y-%m-%dT%H:%M:%S,%f"


def access_log_latencies(path: Path, offset: int, since: datetime) -> list[int]:
    """Latencies (ms) of `POST /predictions/` lines TorchServe appended after byte `offset`
    and timestamped at or after `since` (local time, as TorchServe's log4j writes it).

    A line reads `2026-11-24T13:53:16,445 - /127.0.0.1:37034 "POST /predictions/lenet
    HTTP/1.1" 200 4`: the last field is the time TorchServe took, in whole milliseconds.
    """
    latencies = []
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            line = raw.decode("utf-8", "replace")
            if '"POST /predictions/' not in line:
                continue
            try:
                stamp = datetime.strptime(line.split(" ", 1)[0], ACCESS_LOG_TIME)
                latency = int(line.rsplit(None, 1)[1])
            except (ValueError, IndexError):
                continue
            if stamp >= since:
                latencies.append(latency)
    return latencies


def percentile(values: list[int], q: float) -> float:
    """Nearest-rank percentile (Locust's own method), 0 < q <= 100."""
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)])


def run_locust(
    spec: LoadSpec,
    out_dir: Path,
    pool_path: Path,
    key_file: Path | None = None,
    server_pid: int | None = None,
    chart_title: str = "",
    access_log: Path | None = None,
) -> RunResult:
    """Run Locust headless to completion and collect its figures (and a chart) into out_dir.

    With `access_log` (a local TorchServe's `logs/access_log.log`), the server-side p50/p99 of
    the measured window are recorded beside Locust's.
    """
    from loadtests import charts

    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if key_file:
        env["LENET_KEY_FILE"] = str(key_file)
    cmd = locust_command(spec, out_dir, pool_path)
    logger.info("locust: %s", " ".join(cmd))
    budget = (parse_duration(spec.run_time) if not spec.step else 3600) + 90
    server_meter = TreeCpuMeter([server_pid]).start() if server_pid else None
    # Locust's CPU: rusage of reaped children is exact (the master reaps its forked workers);
    # the sampling meter is the fallback should a worker outlive its master.
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_before = psutil.cpu_times()
    log_offset = access_log.stat().st_size if access_log and access_log.is_file() else None
    # Locust resets its statistics once every user is spawned: measure from then on.
    ramp_s = spec.users / spec.spawn_rate if spec.spawn_rate > 0 and spec.reset_stats else 0.0
    measured_from = datetime.now() + timedelta(seconds=ramp_s)
    started = time.perf_counter()
    with open(out_dir / "locust.out", "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=out_dir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        locust_meter = TreeCpuMeter([proc.pid]).start(baseline=False)
        try:
            exit_code = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(
                f"locust did not finish within {budget:.0f} s; see {out_dir}"
            ) from None
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): Locust runs in its own session
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            locust_cpu = locust_meter.stop()
    wall = time.perf_counter() - started
    machine_after = psutil.cpu_times()
    machine_busy = sum(
        getattr(machine_after, f) - getattr(machine_before, f)
        for f in machine_after._fields
        if f not in ("idle", "iowait", "guest", "guest_nice")  # guest time is already in user
    )
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    locust_cpu = max(locust_cpu, reaped)
    server_cpu = server_meter.stop() if server_meter else None
    try:
        total, per_name = read_stats(out_dir)
    except (FileNotFoundError, KeyError) as exc:
        tail = (out_dir / "locust.out").read_text(errors="replace")[-2000:]
        raise RuntimeError(
            f"locust wrote no stats in {out_dir} (exit {exit_code}):\n{tail}"
        ) from exc
    history = out_dir / f"{CSV_PREFIX}_stats_history.csv"
    result = RunResult(
        out_dir=str(out_dir),
        exit_code=exit_code,
        requests=int(total["Request Count"]),
        failures=int(total["Failure Count"]),
        rps=total["Requests/s"],
        p50_ms=total["50%"],
        p95_ms=total["95%"],
        p99_ms=total["99%"],
        images_per_s=sum(r["Requests/s"] * images_in(n) for n, r in per_name.items()),
        wall_s=round(wall, 2),
        cores=os.cpu_count() or 1,
        locust_cpu_cores=round(locust_cpu / wall, 3),
        server_cpu_cores=round(server_cpu / wall, 3) if server_cpu is not None else None,
        machine_cpu_cores=round(machine_busy / wall, 3),
        slo=read_slo_verdict(out_dir / "locust.log"),
        per_name={
            n: {
                "requests": int(r["Request Count"]),
                "failures": int(r["Failure Count"]),
                "rps": r["Requests/s"],
                "p50_ms": r["50%"],
                "p99_ms": r["99%"],
            }
            for n, r in per_name.items()
        },
        spec=asdict(spec),
    )
    if log_offset is not None:
        latencies = access_log_latencies(access_log, log_offset, measured_from)
        if latencies:
            result.server_p50_ms = percentile(latencies, 50)
            result.server_p99_ms = percentile(latencies, 99)
    if history.is_file():
        result.saturation = charts.saturation_point(history) if spec.step else None
        charts.plot_run(history, out_dir / "chart.png", title=chart_title or out_dir.name)
    (out_dir / "summary.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def timestamped_dir(label: str = "", root: Path = RESULTS_DIR) -> Path:
    """`loadtests/results/<YYYYmmdd-HHMMSS>[-label]/`, created."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / (f"{stamp}-{label}" if label else stamp)
    path.mkdir(parents=True, exist_ok=True)
    return path


def auto_processes(remote: bool) -> int:
    """Locust processes: one per core against a remote host; locally the server needs the cores.

    With a local server on a small machine, extra Locust processes only steal CPU from
    TorchServe, so the default is one process there unless the machine has cores to spare.
    """
    cores = os.cpu_count() or 1
    if remote:
        return cores if cores > 1 else 0
    return cores // 4 if cores >= 8 else 0


def format_result(result: RunResult) -> str:
    """A short human-readable table of a run."""
    lines = [
        f"{'request':<22}{'count':>9}{'fail':>7}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for name, r in sorted(result.per_name.items()):
        lines.append(
            f"{name:<22}{r['requests']:>9}{r['failures']:>7}{r['rps']:>10.1f}"
            f"{r['p50_ms']:>9.0f}{r['p99_ms']:>9.0f}"
        )
    lines.append(
        f"{'total':<22}{result.requests:>9}{result.failures:>7}{result.rps:>10.1f}"
        f"{result.p50_ms:>9.0f}{result.p99_ms:>9.0f}"
    )
    server = "n/a" if result.server_cpu_cores is None else f"{result.server_cpu_cores:.2f}"
    lines.append(
        f"images/s {result.images_per_s:.1f}; load generator CPU {result.locust_cpu_cores:.2f} "
        f"cores, server CPU {server} cores, whole host {result.machine_cpu_cores:.2f} cores "
        f"(of {result.cores})"
    )
    if result.server_p99_ms is not None:
        lines.append(f"TorchServe's own timing (access log): p50 {result.server_p50_ms:.0f} ms, "
                     f"p99 {result.server_p99_ms:.0f} ms")  # fmt: skip
    if result.slo:
        failed = "FAILED: " + "; ".join(result.slo["violations"])
        verdict = "PASSED" if result.slo["passed"] else failed
        lines.append(f"SLO gate {verdict}")
    if result.saturation:
        lines.append(f"saturation: {result.saturation}")
    return "\n".join(lines)


# --- `python -m loadtests run` ----------------------------------------------------------------
def add_arguments(parser) -> None:
    """Options of the `run` subcommand."""
    target = parser.add_argument_group("target")
    target.add_argument(
        "--host",
        default=None,
        help="Server URL to load (e.g. http://127.0.0.1:8080); default: start a local TorchServe "
        "through deploy.launcher on free ports and stop it afterwards.",
    )
    target.add_argument("--model", type=Path, default=None, help="Model for the pool (default: "
                        "the one inside the served lenet.mar; with --host $LENET_MODEL or "
                        "artifacts/lenet.pt).")  # fmt: skip
    target.add_argument("--pool", type=Path, default=None, help="Image pool .npz (default: build "
                        "or reuse the cached pool for --model).")  # fmt: skip
    load = parser.add_argument_group("load")
    load.add_argument("-u", "--users", type=int, default=16, help="Concurrent users.")
    load.add_argument("-r", "--spawn-rate", type=float, default=16.0, help="Users started per s.")
    load.add_argument("-t", "--run-time", default="30s", help="Measured duration (after ramp-up).")
    load.add_argument(
        "--processes",
        type=int,
        default=None,
        help="Locust worker processes (0 = one process; default: one per core against --host, "
        "one process against the local server on a small machine).",
    )
    load.add_argument("--step", action="store_true", help="Step load (loadtests/shapes.py) to "
                      "find the saturation point; step sizes in locust.conf.")  # fmt: skip
    load.add_argument("--rps-per-user", type=float, default=0.0, help="Pace each user (0 = none).")
    load.add_argument("--user-class", action="append", default=[], dest="user_classes",
                      help="Only these Locust user classes (repeatable; default: the weighted "
                      "mix in locustfile.USER_WEIGHTS).")  # fmt: skip
    load.add_argument("--warmup-requests", type=int, default=200, help="Checked warm-up requests.")
    load.add_argument("--locust-arg", action="append", default=[], dest="extra_args",
                      help="Extra Locust option, e.g. --locust-arg=--slo-p99-ms=50.")  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=None,
                     help=f"Result folder (default: {RESULTS_DIR}/<timestamp>).")  # fmt: skip


def command(args) -> int:
    """Run one load test; returns Locust's (SLO-gated) exit code."""
    from deploy.keys import inference_token
    from loadtests.pool import ensure_pool, served_model

    out_dir = args.out or timestamped_dir("step" if args.step else "run")
    pool_path = args.pool or ensure_pool(model_path=served_model(args.model, bool(args.host)))
    pool = ImagePool.load(pool_path)
    spec = LoadSpec(
        host=args.host or "",
        users=args.users,
        spawn_rate=args.spawn_rate,
        run_time=args.run_time,
        processes=args.processes if args.processes is not None else auto_processes(bool(args.host)),
        user_classes=args.user_classes,
        step=args.step,
        rps_per_user=args.rps_per_user,
        extra_args=args.extra_args,
    )
    if args.host:
        warm_up(args.host.rstrip("/"), pool, inference_token(), args.warmup_requests)
        target = urlsplit(args.host)
        local = target.hostname in ("127.0.0.1", "localhost", "::1")
        # The server's CPU can only be measured when it runs on this machine.
        pid = listening_pid(target.port or 80) if local else None
        result = run_locust(spec, out_dir, pool_path, server_pid=pid)
    else:
        with local_server(out_dir / "server") as server:
            spec.host = server.url
            cold = warm_up(server.url, pool, inference_token(server.key_file), 0)
            logger.info("first correct prediction %.1f s after start", cold)
            warm_up(server.url, pool, inference_token(server.key_file), args.warmup_requests)
            result = run_locust(spec, out_dir, pool_path, server.key_file, server.pid,
                                access_log=server.access_log)
    print(format_result(result))
    print(f"results: {out_dir}")
    return result.exit_code
