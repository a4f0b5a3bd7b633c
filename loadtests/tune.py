"""`python -m loadtests tune`: sweep batchSize, maxBatchDelay, workers, torch threads and Netty
threads, each point a private TorchServe under the same closed-loop single-image load. `staged`
bounds the sweep on a small machine (workers x threads at a sane batching, then batch x delay at
the best of those, then Netty threads); `grid` runs the product. The top points are re-measured.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from loadtests import option
from loadtests.charts import md_table
from loadtests.runner import LoadSpec, run_locust, serving
from project.paths import RESULTS_DIR

logger = logging.getLogger(__name__)

FIGURES = ("rps", "p50_ms", "p99_ms", "server_cpu_cores", "locust_cpu_cores")


@dataclass(frozen=True)
class Point:
    """One serving configuration; `netty_threads` 0 keeps TorchServe's default (one per core)."""

    batch_size: int
    max_batch_delay_ms: int
    workers: int
    torch_threads: int
    netty_threads: int = 0

    @property
    def label(self) -> str:
        return "b{}-d{}-w{}-t{}-n{}".format(*asdict(self).values())

    def server_settings(self) -> dict:
        """`ServerConfig` fields that apply this point."""
        netty = ("number_of_netty_threads", "netty_client_threads") if self.netty_threads else ()
        return {"config_overrides": dict.fromkeys(netty, self.netty_threads),
                "model_config_overrides": {"batchSize": self.batch_size, "workers": self.workers,
                                           "maxBatchDelay": self.max_batch_delay_ms,
                                           "torch_threads": self.torch_threads}}  # fmt: skip


@dataclass
class Space:
    """The points to try and how many of the best to re-measure."""

    strategy: str = option("staged", "staged (workers x threads, batch x delay, netty) or grid.")
    batch_sizes: list[int] = option([1, 8, 16, 32, 64], "batchSize values (comma-separated).")
    delays: list[int] = option([1, 5, 10], "maxBatchDelay values, ms.")
    workers: list[int] = option([1, 2], "Workers of the model.")
    threads: list[int] = option([1, 2], "Torch threads per worker.")
    netty_threads: list[int] = option([0, 1, 2], "Netty threads (0: TorchServe's default).")
    stage1_batch: int = option(32, "batchSize while stage 1 sweeps workers x threads.")
    stage1_delay: int = option(5, "maxBatchDelay while stage 1 sweeps workers x threads.")
    confirm_top: int = option(3, "Best points re-measured at the end.")
    confirm_rounds: int = option(2, "Interleaved re-runs of each (0: one sample each).")


def measure(point: Point, load: LoadSpec, pool_path: Path, out_dir: Path) -> dict:
    """One row: a private server with the point's settings, warmed up, then the load once."""
    row = {"point": asdict(point), "label": point.label}
    try:
        with serving(None, out_dir / f"server-{point.label}", pool_path,
                     **point.server_settings()) as server:  # fmt: skip
            result = run_locust(replace(load, user_classes=["SingleImageUser"]),
                                out_dir / point.label, pool_path, server=server)
    except Exception as exc:  # one broken point must not lose the rest of the sweep
        logger.exception("point %s failed", point.label)
        return row | {"error": str(exc)}
    return row | {k: getattr(result, k) for k in (*FIGURES, "failures", "requests")}


def clean(rows: list[dict]) -> list[dict]:
    """Rows that ran without error and without a failed request."""
    return [r for r in rows if "error" not in r and r["failures"] == 0]


def best(rows: list[dict]) -> dict | None:
    """Highest req/s (to 10 req/s) among clean rows; ties go to the lower p99."""
    return max(clean(rows), key=lambda r: (round(r["rps"], -1), -r["p99_ms"]), default=None)


def sweep(s: Space, measure_point: Callable[[Point, str], dict]) -> list[dict]:
    """Measure the points of the space's strategy; one row per point."""
    rows: list[dict] = []

    def run(points: Iterable[Point]) -> dict | None:
        rows.extend(measure_point(p, "") for p in points)
        return best(rows)

    if s.strategy not in ("staged", "grid"):
        raise ValueError(f"unknown strategy {s.strategy!r}: staged or grid")
    if s.strategy == "grid":
        run(Point(*v) for v in itertools.product(s.batch_sizes, s.delays, s.workers, s.threads,
                                                 s.netty_threads))  # fmt: skip
        return rows
    b0, d0 = s.stage1_batch, s.stage1_delay
    if (top := run(Point(b0, d0, w, t) for w in s.workers for t in s.threads)) is None:
        return rows
    w, t = top["point"]["workers"], top["point"]["torch_threads"]
    top = run(Point(b, d, w, t) for b in s.batch_sizes for d in s.delays if (b, d) != (b0, d0))
    if top is not None:
        run(Point(top["point"]["batch_size"], top["point"]["max_batch_delay_ms"], w, t, n)
            for n in s.netty_threads if n)  # fmt: skip
    return rows


def confirm(rows: list[dict], s: Space, measure_point: Callable[[Point, str], dict]) -> list[dict]:
    """Re-measure the top points in interleaved rounds (A B C A B C), ranked by median: one
    sample is at the mercy of the host; interleaving spreads its noise evenly over the points."""
    top = sorted(clean(rows), key=lambda r: -r["rps"])[: s.confirm_top]
    if len(top) < 2 or s.confirm_rounds < 1:
        return []
    samples = {r["label"]: [r] for r in top}
    for n in range(1, s.confirm_rounds + 1):
        for r in top:
            samples[r["label"]].append(measure_point(Point(**r["point"]), f"confirm{n}"))
    ranked = [{"point": runs[0]["point"], "label": label, "failures": 0,
               "samples_rps": [round(r["rps"]) for r in runs]}
              | {k: statistics.median(r[k] for r in runs) for k in FIGURES}
              for label, runs in samples.items()
              if len(clean(runs)) == len(runs)]  # a point that failed once is no default
    return sorted(ranked, key=lambda r: -r["rps"])


def markdown(rows: list[dict], winner: dict | None) -> str:
    """The rows as a markdown table, the winner marked."""
    table = []
    for r in rows:
        p = r["point"]
        head = [p["batch_size"], p["max_batch_delay_ms"], p["workers"], p["torch_threads"],
                p["netty_threads"] or "default"]  # fmt: skip
        table.append(head + [f"error: {r['error'][:60]}"] if "error" in r else head + [
            f"{r['rps']:.0f}{' **best**' if r is winner else ''}", f"{r['p50_ms']:.0f}",
            f"{r['p99_ms']:.0f}", r["failures"], f"{r['server_cpu_cores']:.2f}",
            f"{r['locust_cpu_cores']:.2f}"])  # fmt: skip
    return "\n".join(md_table(["batchSize", "maxBatchDelay ms", "workers", "torch threads",
                               "netty threads", "req/s", "p50 ms", "p99 ms", "failures",
                               "server CPU", "Locust CPU"], table)) + "\n"  # fmt: skip


def tune(out_dir: Path, space: Space, load: LoadSpec, pool_path: Path,
         note: str = "") -> tuple[str, dict | None]:  # fmt: skip
    """Sweep and confirm with `load` per point; writes tune.{json,md} (and tune-latest.md).
    Returns the table, headed by `note`, and the best row (None when no point ran cleanly)."""

    def measure_point(point: Point, sub_dir: str) -> dict:
        return measure(point, load, pool_path, out_dir / sub_dir)

    rows = sweep(space, measure_point)
    confirmed = confirm(rows, space, measure_point)
    winner = confirmed[0] if confirmed else best(rows)
    table = (f"{note}, {time.strftime('%Y-%m-%d %H:%M %Z')}\n\n"
             + markdown(rows, None if confirmed else winner))  # fmt: skip
    if confirmed:
        samples = ", ".join(f"{r['label']}: {r['samples_rps']}" for r in confirmed)
        table += ("\nMedians of interleaved re-runs of the top points (req/s samples "
                  f"{samples}):\n\n" + markdown(confirmed, winner))  # fmt: skip
    (out_dir / "tune.json").write_text(json.dumps(
        {"rows": rows, "confirmed": confirmed, "best": winner}, indent=2))  # fmt: skip
    (out_dir / "tune.md").write_text(table)
    shutil.copyfile(out_dir / "tune.md", RESULTS_DIR / "tune-latest.md")
    return table, winner
