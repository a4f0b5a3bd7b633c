"""Side-by-side benchmark in ONE run, same load generator and pool (by default the realistic mix
of `samples.mix`): the in-process ceiling (`Predictor.predict` on pool batches), STOCK TorchServe
(`ServerConfig.stock`) and the tuned one, both serving the same .mar. Each server: cold start
(start -> first correct answer), closed-loop single-image req/s and p50/p99, multi-image
images/s; the tuned one also p99 at a constant half of its max, and single-image runs and the
ceiling per kind of the mix. Targets are ratios of figures measured side by side
(`bench.{json,md}`)."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from loadtests import option
from loadtests.charts import md_table
from loadtests.pool import ImagePool, default_model, ensure_pool
from loadtests.runner import LoadSpec, run_locust, warm_up
from project.paths import RESULTS_DIR


@dataclass
class Targets:
    """What the tuned server must reach, relative to what is measured beside it."""

    min_speedup: float = option(20.0, "Tuned / stock single-image req/s, at least.")
    min_ceiling_share: float = option(0.5, "Tuned multi-image images/s / in-process ceiling.")
    max_half_rate_p99_ms: float = option(25.0, "p99 at half of the tuned max req/s, at most.")
    max_cold_start_s: float = option(15.0, "Server start -> first correct answer, at most.")


def in_process_ceiling(pool: ImagePool, model: Path, batch_size: int = 64, seconds: float = 5.0,
                       threads: int = 1) -> dict:  # fmt: skip
    """Images/s of `Predictor.predict` over pool batches here, every answer checked, with the
    compute of one tuned worker (`threads`): LeNet's tiny forward pass gets slower with more
    threads on a small shared host, so "all cores" would be a floor, not a ceiling."""
    import torch

    from handler.predictor import Predictor

    torch.set_num_threads(threads)
    predictor = Predictor.load(model)
    batches = [range(a, min(a + batch_size, len(pool))) for a in range(0, len(pool), batch_size)]

    def one_batch(idx: range) -> int:
        answers = predictor.predict([pool.images[i] for i in idx])
        if [getattr(a, "digit", None) for a in answers] != [pool.labels[i] for i in idx]:
            raise RuntimeError("in-process prediction disagrees with the pool's labels")
        return len(idx)

    images, n, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        images += one_batch(batches[n % len(batches)])
        n += 1
    elapsed = time.perf_counter() - started
    return {"images_per_s": round(images / elapsed, 1), "batch_size": batch_size,
            "torch_threads": torch.get_num_threads(), "seconds": round(elapsed, 2)}  # fmt: skip


def constant_rate_users(rate: float, p99_bound_ms: float) -> int:
    """Paced users for a constant-rate run: just enough that each user's period (users / rate)
    covers a request at the latency bound. Fewer, and a slow answer makes its user late, so the
    load generator quietly sends less while the server is slow; more only add Locust's own
    share to the measured latency, which grows with its number of users."""
    return max(4, math.ceil(rate * p99_bound_ms / 1000.0))


def measure_server(label: str, out_dir: Path, pool_path: Path, load: LoadSpec, *, stock: bool,
                   half_rate_p99_ms: float | None = None, kind_pools: dict | None = None,
                   ) -> dict:  # fmt: skip
    """Cold start, single- and multi-image runs of a private server; with `half_rate_p99_ms`
    also the constant-rate run at half its single-image req/s; with `kind_pools` ({kind: pool
    file}) a single-image run on each."""
    from deploy.server import TorchServe

    server = TorchServe.private(out_dir / f"server-{label}", stock=stock)
    started = time.perf_counter()
    with server:
        cold = warm_up(server.inference_url, ImagePool.load(pool_path), server.inference_token,
                       200, since=started)  # fmt: skip
        figures: dict = {"label": label, "cold_start_s": round(cold, 2)}

        def run(name: str, pool: Path = pool_path, **changes) -> dict:
            return asdict(run_locust(replace(load, **changes), out_dir / f"{label}-{name}",
                                     pool, server=server))  # fmt: skip

        figures["single"] = run("single", user_classes=["SingleImageUser"])
        figures["multi"] = run("multi", user_classes=["JsonMultiImageUser"])
        if half_rate_p99_ms is not None:
            rate = figures["single"]["rps"] / 2
            users = constant_rate_users(rate, half_rate_p99_ms)
            figures["half_rate"] = run(
                "half-rate", users=users, spawn_rate=float(users), rps_per_user=rate / users,
                user_classes=["SingleImageUser"],
                extra_args=["--slo-p99-ms", str(half_rate_p99_ms)],
            ) | {"target_rps": round(rate, 1), "users": users}  # fmt: skip
        figures["kinds"] = {kind: run(f"single-{kind}", pool, user_classes=["SingleImageUser"])
                            for kind, pool in (kind_pools or {}).items()}  # fmt: skip
    return figures


def targets(report: dict, goals: Targets) -> list[dict]:
    """Each target with its measured value, bound and whether it was met."""
    stock, tuned, ceiling = report["stock"], report["tuned"], report["ceiling"]
    speedup = tuned["single"]["rps"] / max(stock["single"]["rps"], 1e-9)
    share = tuned["multi"]["images_per_s"] / ceiling["images_per_s"]
    half_p99 = tuned.get("half_rate", {}).get("p99_ms")
    rows = [
        ("tuned/stock single-image req/s", round(speedup, 1), f">= {goals.min_speedup:g}x",
         speedup >= goals.min_speedup),
        ("tuned multi-image images/s / in-process ceiling", round(share, 3),
         f">= {goals.min_ceiling_share:g}", share >= goals.min_ceiling_share),
        ("p99 at half of tuned max (constant rate)", half_p99,
         f"<= {goals.max_half_rate_p99_ms:g} ms",
         half_p99 is not None and half_p99 <= goals.max_half_rate_p99_ms),
        ("tuned cold start (server start -> first correct prediction)", tuned["cold_start_s"],
         f"<= {goals.max_cold_start_s:g} s", tuned["cold_start_s"] <= goals.max_cold_start_s),
    ]  # fmt: skip
    return [dict(zip(("target", "value", "bound", "met"), row, strict=True)) for row in rows]


def markdown(report: dict) -> str:
    """The results as markdown tables."""
    c, s, t = report["ceiling"], report["stock"], report["tuned"]

    def row(name: str, run: dict, images: str = "-", cold: str = "-") -> list:
        own = ("-" if run.get("server_p99_ms") is None
               else f"{run['server_p50_ms']:.0f} / {run['server_p99_ms']:.0f}")  # fmt: skip
        return [name, f"{run['rps']:.0f}", f"{run['p50_ms']:.0f}", f"{run['p99_ms']:.0f}", own,
                images, cold, *(f"{run[k]:.2f}" for k in ("server_cpu_cores", "locust_cpu_cores",
                                                          "machine_cpu_cores"))]

    rows = [[f"in-process ceiling (batch {c['batch_size']}, {c['torch_threads']} torch threads)",
             "-", "-", "-", "-", f"{c['images_per_s']:.0f}", "-", "-", "-", "-"],
            *(row(f"TorchServe {x['label']}", x["single"], f"{x['multi']['images_per_s']:.0f}",
                  f"{x['cold_start_s']:.1f}") for x in (s, t))]  # fmt: skip
    if h := t.get("half_rate"):
        rows.append(row(f"tuned, constant {h['target_rps']:.0f} req/s (half of max, "
                        f"{h['users']} paced users)", h))  # fmt: skip
    per_kind = [(kind, f"{k['share']:.1%}", k["ceiling"], t["kinds"][kind])
                for kind, k in report["kinds"].items()]  # fmt: skip
    per_kind += [("whole mix", "100%", c, t["single"])] if per_kind else []
    kinds = [[name, share, f"{ceiling['images_per_s']:.0f}",
              *(f"{run[f]:.0f}" for f in ("rps", "p50_ms", "p99_ms"))]
             for name, share, ceiling, run in per_kind]  # fmt: skip
    return "\n".join([
        f"Measured {report['date']} on {report['machine']}; load: {report['load']}.", "",
        *md_table(["configuration", "single req/s", "p50 ms", "p99 ms",
                   "TorchServe's own p50 / p99 ms", "multi-image images/s", "cold start s",
                   "server CPU (cores)", "Locust CPU (cores)", "host CPU, all processes"], rows),
        "", *(md_table(["kind (samples.mix)", "share of the pool", "in-process ceiling images/s",
                        "tuned single req/s", "p50 ms", "p99 ms"], kinds) + [""] if kinds else []),
        *md_table(["target", "value", "bound", "met"],
                  [[x["target"], x["value"], x["bound"], "yes" if x["met"] else "NO"]
                   for x in report["targets"]]),
    ]) + "\n"  # fmt: skip


def benchmark(out_dir: Path, goals: Targets, load: LoadSpec, ceiling_seconds: float = 5.0,
              ceiling_threads: int = 1, model: Path | None = None,
              source: str = "mix") -> dict:  # fmt: skip
    """Run the whole benchmark with `load` (closed-loop users, run time, Locust processes) per
    run on a pool of `source`; writes bench.{json,md} (and bench-latest.*), returns the report.
    `model` (default: the served archive) checks the pool and runs the ceiling."""
    model = model or default_model()
    pool_path = ensure_pool(model, source=source)
    pool = ImagePool.load(pool_path)
    kinds = list(dict.fromkeys(pool.kinds)) if len(set(pool.kinds)) > 1 else []
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.python_version()}",
        "load": f"{load.users} closed-loop users, {load.run_time} per run, "
        f"{load.processes or 1} Locust process(es), pool of {len(pool)} images ({source})",
        "ceiling": in_process_ceiling(pool, model, seconds=ceiling_seconds,
                                      threads=ceiling_threads),
        "kinds": {k: {"share": pool.kinds.count(k) / len(pool),
                      "ceiling": in_process_ceiling(pool.subset(k), model, seconds=ceiling_seconds
                                                    / 2, threads=ceiling_threads)}
                  for k in kinds},
    }  # fmt: skip
    report["stock"] = measure_server("stock", out_dir, pool_path, load, stock=True)
    report["tuned"] = measure_server(
        "tuned", out_dir, pool_path, load, stock=False, half_rate_p99_ms=goals.max_half_rate_p99_ms,
        kind_pools={k: pool.subset(k).save(out_dir / f"pool-{k}.json") for k in kinds})  # fmt: skip
    report["targets"] = targets(report, goals)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "bench.md").write_text(markdown(report))
    for suffix in ("json", "md"):
        shutil.copyfile(out_dir / f"bench.{suffix}", RESULTS_DIR / f"bench-latest.{suffix}")
    return report
