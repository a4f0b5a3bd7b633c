"""Side-by-side benchmark, all in ONE run with the same load generator and image pool:

1. the in-process ceiling: PNG decode + shared preprocessing + forward, batched, images/s;
2. TorchServe with STOCK settings serving the same .mar (TorchServe's default workers and
   threads, batchSize 1; only the 127.0.0.1 binding and token auth are kept);
3. the project's tuned configuration (deploy/config.properties + deploy/model-config.yaml).

Configs 2 and 3 get a closed-loop single-image run (req/s, p50/p99) and a multi-image run
(images/s); config 3 also a constant-rate run at half its max throughput (p99 there) and both a
cold-start time (launcher start -> first correct prediction). The targets are checked as ratios of
numbers measured side by side here. Output: `bench.json`, `bench.md` and `bench.png` in
`loadtests/results/bench-<timestamp>/`, copied to `loadtests/results/bench-latest.*`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from loadtests import RESULTS_DIR
from loadtests.pool import ImagePool, ensure_pool, served_model
from loadtests.runner import (
    LoadSpec,
    RunResult,
    auto_processes,
    local_server,
    run_locust,
    timestamped_dir,
    warm_up,
)

logger = logging.getLogger(__name__)


def in_process_ceiling(
    pool: ImagePool, model_path: Path, batch_size: int = 64, seconds: float = 5.0,
    threads: int = 1,
) -> dict:
    """Images/s of decode + preprocess + forward in this process, batched, every answer checked.

    One process with `threads` torch threads: the same compute a tuned worker has. (Measured
    here: a 64-image forward takes ~2.6 ms with 1 thread and ~180 ms with 2 threads on the
    shared 2-core box, so "all cores" would be a floor, not a ceiling.)
    """
    import torch

    from handler.artifact import load_torchscript
    from handler.preprocessing import preprocess

    torch.set_num_threads(threads)
    model, _ = load_torchscript(model_path)
    batches = [
        list(range(start, min(start + batch_size, len(pool))))
        for start in range(0, len(pool), batch_size)
    ]

    def one_batch(idx: list[int]) -> int:
        x = torch.stack(
            [torch.as_tensor(preprocess(pool.pngs[i])).reshape(1, 28, 28) for i in idx]
        ).float()
        with torch.inference_mode():
            digits = model(x).argmax(dim=1).tolist()
        if digits != [pool.labels[i] for i in idx]:
            raise RuntimeError("in-process prediction disagrees with the pool's labels")
        return len(idx)

    one_batch(batches[0])  # warm-up: first-call allocations and TorchScript profiling
    images, started, n = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        images += one_batch(batches[n % len(batches)])
        n += 1
    elapsed = time.perf_counter() - started
    return {
        "images_per_s": round(images / elapsed, 1),
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "seconds": round(elapsed, 2),
    }


def constant_rate_users(rate: float, p99_bound_ms: float) -> int:
    """Paced users for a constant-rate run: just enough that each user's period between
    requests (users / rate) is at least the latency bound.

    Fewer, and a request slower than the bound would make its user late for the next one (the
    load generator would quietly send less while the server is slow). More only cost the load
    generator: Locust's own share of the measured latency grows with its number of users
    (interleaved on this host at 1,016 req/s: TorchServe's own p99 16-17 ms for 16 and for 64
    users, Locust's p99 19-20 ms with 16 users and 38-41 ms with 64).
    """
    return max(4, math.ceil(rate * p99_bound_ms / 1000.0))


def measure_server(
    label: str,
    out_dir: Path,
    pool_path: Path,
    pool: ImagePool,
    *,
    stock: bool,
    users: int,
    run_time: str,
    processes: int,
    half_rate: bool,
    half_rate_p99_ms: float,
) -> dict:
    """Cold start, single-image and multi-image runs (and the half-rate run) for one config."""
    from deploy.keys import inference_token

    figures: dict = {"label": label}
    with local_server(out_dir / f"server-{label}", stock=stock) as server:
        token_file = server.key_file
        before = time.perf_counter()
        first_ok = warm_up(server.url, pool, inference_token(token_file), requests_count=0)
        figures["cold_start_s"] = round(before + first_ok - server.started_at, 2)
        warm_up(server.url, pool, inference_token(token_file), requests_count=200)

        def run(name: str, n_users: int = users, **kw) -> RunResult:
            spec = LoadSpec(host=server.url, users=n_users, spawn_rate=float(n_users),
                            run_time=run_time, processes=processes, **kw)  # fmt: skip
            result = run_locust(spec, out_dir / f"{label}-{name}", pool_path,
                                server.key_file, server.pid, f"{label}: {name}",
                                access_log=server.access_log)  # fmt: skip
            logger.info("%s %s: %.1f req/s, %.1f images/s, p50 %.0f ms, p99 %.0f ms",
                        label, name, result.rps, result.images_per_s, result.p50_ms,
                        result.p99_ms)  # fmt: skip
            return result

        figures["single"] = asdict(run("single", user_classes=["SingleImageUser"]))
        figures["multi"] = asdict(run("multi", user_classes=["JsonMultiImageUser"]))
        if half_rate:
            target = figures["single"]["rps"] / 2
            paced_users = constant_rate_users(target, half_rate_p99_ms)
            figures["half_rate"] = asdict(
                run(
                    "half-rate",
                    n_users=paced_users,
                    user_classes=["SingleImageUser"],
                    rps_per_user=target / paced_users,
                    extra_args=["--slo-p99-ms", str(half_rate_p99_ms)],
                )
            )
            figures["half_rate"]["target_rps"] = round(target, 1)
            figures["half_rate"]["users"] = paced_users
    return figures


def targets(report: dict, args) -> list[dict]:
    """The benchmark's targets, each a ratio or bound of figures measured in this run."""
    stock, tuned, ceiling = report["stock"], report["tuned"], report["ceiling"]
    single_ratio = tuned["single"]["rps"] / max(stock["single"]["rps"], 1e-9)  # 0 req/s: huge
    multi_share = tuned["multi"]["images_per_s"] / ceiling["images_per_s"]
    half = tuned.get("half_rate", {})
    return [
        {"target": "tuned/stock single-image req/s", "value": round(single_ratio, 1),
         "bound": f">= {args.min_speedup:g}x", "met": single_ratio >= args.min_speedup},
        {"target": "tuned multi-image images/s / in-process ceiling",
         "value": round(multi_share, 3), "bound": f">= {args.min_ceiling_share:g}",
         "met": multi_share >= args.min_ceiling_share},
        {"target": "p99 at half of tuned max (constant rate)", "value": half.get("p99_ms"),
         "bound": f"<= {args.max_half_rate_p99_ms:g} ms",
         "met": half.get("p99_ms") is not None and half["p99_ms"] <= args.max_half_rate_p99_ms},
        {"target": "tuned cold start (launcher start -> first correct prediction)",
         "value": tuned["cold_start_s"], "bound": f"<= {args.max_cold_start_s:g} s",
         "met": tuned["cold_start_s"] <= args.max_cold_start_s},
    ]  # fmt: skip


def markdown(report: dict) -> str:
    """The results as markdown tables (also pasted into docs/performance.md)."""
    c, s, t = report["ceiling"], report["stock"], report["tuned"]
    h = t.get("half_rate", {})

    def server_side(run: dict) -> str:
        if run.get("server_p99_ms") is None:
            return "-"
        return f"{run['server_p50_ms']:.0f} / {run['server_p99_ms']:.0f}"

    def row(name: str, cfg: dict) -> str:
        single, multi = cfg["single"], cfg["multi"]
        return (
            f"| {name} | {single['rps']:.0f} | {single['p50_ms']:.0f} | {single['p99_ms']:.0f} | "
            f"{server_side(single)} | {multi['images_per_s']:.0f} | {cfg['cold_start_s']:.1f} | "
            f"{single['server_cpu_cores']:.2f} | {single['locust_cpu_cores']:.2f} | "
            f"{single['machine_cpu_cores']:.2f} |"
        )

    lines = [
        f"Measured {report['date']} on {report['machine']}; load: {report['load']}.",
        "",
        "| configuration | single req/s | p50 ms | p99 ms | TorchServe's own p50 / p99 ms | "
        "multi-image images/s | cold start s | server CPU (cores) | Locust CPU (cores) | "
        "host CPU, all processes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| in-process ceiling (batch {c['batch_size']}, {c['torch_threads']} torch threads) "
        f"| - | - | - | - | {c['images_per_s']:.0f} | - | - | - | - |",
        row("TorchServe stock", s),
        row("TorchServe tuned", t),
    ]
    if h:
        lines.append(
            f"| tuned, constant {h['target_rps']:.0f} req/s (half of max, "
            f"{h.get('users', '?')} paced users) | {h['rps']:.0f} | "
            f"{h['p50_ms']:.0f} | {h['p99_ms']:.0f} | {server_side(h)} | - | - | "
            f"{h['server_cpu_cores']:.2f} | "
            f"{h['locust_cpu_cores']:.2f} | {h['machine_cpu_cores']:.2f} |"
        )
    lines += ["", "| target | value | bound | met |", "|---|---:|---|---|"]
    lines += [
        f"| {x['target']} | {x['value']} | {x['bound']} | {'yes' if x['met'] else 'NO'} |"
        for x in report["targets"]
    ]
    return "\n".join(lines) + "\n"


def chart(report: dict, out_png: Path) -> Path:
    """Bars: single-image req/s (stock vs tuned) and images/s (ceiling, stock, tuned)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, t, c = report["stock"], report["tuned"], report["ceiling"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bars = left.bar(["stock", "tuned"], [s["single"]["rps"], t["single"]["rps"]],
                    color=["tab:gray", "tab:blue"])  # fmt: skip
    left.bar_label(bars, fmt="%.0f")
    left.set_ylabel("single-image requests/s")
    p99 = (s["single"]["p99_ms"], t["single"]["p99_ms"])
    left.set_title(f"p99 stock {p99[0]:.0f} ms, tuned {p99[1]:.0f} ms")
    values = [c["images_per_s"], s["multi"]["images_per_s"], t["multi"]["images_per_s"]]
    bars = right.bar(["in-process\nceiling", "stock\nmulti-image", "tuned\nmulti-image"], values,
                     color=["tab:green", "tab:gray", "tab:blue"])  # fmt: skip
    right.bar_label(bars, fmt="%.0f")
    right.set_ylabel("images/s")
    fig.suptitle(f"LeNet-5 on TorchServe 0.12.0, {report['machine']}")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def add_arguments(parser) -> None:
    """Options of the `bench` subcommand."""
    load = parser.add_argument_group("load")
    load.add_argument("--users", type=int, default=64, help="Closed-loop users per run.")
    load.add_argument("--run-time", default="15s", help="Measured duration of each run.")
    load.add_argument("--processes", type=int, default=None,
                      help="Locust worker processes (default: as `run`).")  # fmt: skip
    load.add_argument("--ceiling-seconds", type=float, default=5.0, help="In-process run length.")
    load.add_argument("--ceiling-threads", type=int, default=1, help="Torch threads in-process.")
    load.add_argument("--model", type=Path, default=None,
                      help="Model for pool and ceiling (default: the one in the served .mar).")
    goals = parser.add_argument_group("targets")
    goals.add_argument("--min-speedup", type=float, default=20.0, help="tuned/stock single req/s.")
    goals.add_argument("--min-ceiling-share", type=float, default=0.5,
                       help="tuned multi-image images/s over the in-process ceiling.")  # fmt: skip
    goals.add_argument("--max-half-rate-p99-ms", type=float, default=25.0,
                       help="p99 at half of tuned max throughput.")  # fmt: skip
    goals.add_argument("--max-cold-start-s", type=float, default=15.0, help="Start->first answer.")
    parser.add_argument("--out", type=Path, default=None, help="Result folder.")


def command(args) -> int:
    """Run the whole benchmark; exit 0 when every target is met, 1 otherwise."""
    import platform

    out_dir = args.out or timestamped_dir("bench")
    args.model = served_model(args.model)
    pool_path = ensure_pool(model_path=args.model)
    pool = ImagePool.load(pool_path)
    processes = args.processes if args.processes is not None else auto_processes(False)
    common = dict(users=args.users, run_time=args.run_time, processes=processes,
                  half_rate_p99_ms=args.max_half_rate_p99_ms)  # fmt: skip
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.python_version()}",
        "load": f"{args.users} closed-loop users, {args.run_time} per run, "
        f"{processes or 1} Locust process(es), pool of {len(pool)} MNIST test digits",
        "ceiling": in_process_ceiling(pool, args.model, seconds=args.ceiling_seconds,
                                      threads=args.ceiling_threads),  # fmt: skip
    }
    logger.info("in-process ceiling: %s", report["ceiling"])
    report["stock"] = measure_server("stock", out_dir, pool_path, pool, stock=True,
                                     half_rate=False, **common)  # fmt: skip
    report["tuned"] = measure_server("tuned", out_dir, pool_path, pool, stock=False,
                                     half_rate=True, **common)  # fmt: skip
    report["targets"] = targets(report, args)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (out_dir / "bench.md").write_text(table)
    chart(report, out_dir / "bench.png")
    for suffix in ("json", "md", "png"):
        shutil.copyfile(out_dir / f"bench.{suffix}", RESULTS_DIR / f"bench-latest.{suffix}")
    print(json.dumps({"targets": report["targets"]}, indent=2))
    print(table)
    print(f"results: {out_dir}")
    return 0 if all(x["met"] for x in report["targets"]) else 1
