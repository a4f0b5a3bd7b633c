"""The worst requests `handler/limits.py` admits, measured on a real TorchServe.

    python -m tools.limits_bench cost      # in-process CPU per candidate request, ns per cost unit
    python -m tools.limits_bench batch     # a whole batch (32) of the worst: time, worker memory
    python -m tools.limits_bench attack    # other clients' p50/p99 alone vs beside a stream of it
    python -m tools.limits_bench all       # the three, one JSON under loadtests/results/limits/
    python -m tools.limits_bench flood --count 100   # N bodies at the size limit, all at once

Candidates (`tools.limits_candidates`) are requests built to sit just inside the limits, each
stressing one cost; each is checked against the limits first (it must be admitted: 200), so the
figures are those of the worst ADMITTED request. Each phase has its module in tools/:
limits_cost, limits_batch, limits_attack, limits_flood. `batch` and `attack` run a private
TorchServe with the committed configuration (deploy/config.properties, model-config.yaml:
batchSize 32, responseTimeout 30 s), except `--workers`. Hold `flock /tmp/lenet-heavy.lock`
around runs whose figures you report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from handler import limits
from project.paths import RESULTS_DIR
from tools import begin_run
from tools.limits_attack import measure_attack, print_attack, victim_png
from tools.limits_batch import RESPONSE_TIMEOUT_S, measure_batch, print_batch
from tools.limits_candidates import Candidate, candidates
from tools.limits_cost import measure_cost, print_cost, worst
from tools.limits_flood import measure_flood, print_flood
from tools.limits_server import start_server


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
    print_cost(rows)
    worst_cand = worst(rows, cands)
    print(f"worst admitted request (most CPU): {worst_cand.name}")
    workers = args.workers or ([1, 2] if args.phase in ("attack", "all") else [1])
    if args.phase == "cost":
        run = 0
    elif args.phase == "flood":
        run = _run_flood(args.count or [32, 100], stamp, report)
    else:
        run = _run_on_servers(args.phase, args, cands, worst_cand, workers, stamp, report)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return run


def _run_flood(counts: list[int], stamp: str, report: dict) -> int:
    """flood, each count in turn on one server (waiting for its worker after a restart)."""
    server = start_server(RESULTS_DIR / "limits" / f"{stamp}-servers" / "flood")
    try:
        for count in counts:
            result = measure_flood(server, count)
            report.setdefault("flood", []).append(result)
            print_flood(result)
            if result["worker_restarted"]:
                server.wait_ready()
    finally:
        server.stop()
    return 0


def _run_on_servers(phase: str, args: argparse.Namespace, cands: list[Candidate],
                    worst_cand: Candidate, workers: list[int], stamp: str,
                    report: dict) -> int:  # fmt: skip
    """batch (on the first worker count) and attack (on each); 1 if a worker restarted or a
    batch reached responseTimeout."""
    failed = False
    runs = RESULTS_DIR / "limits" / f"{stamp}-servers"
    largest = max(cands, key=lambda c: len(c.body()[0]))  # the most bytes held per request
    for count in workers:
        server = start_server(runs / f"workers-{count}", count)
        try:
            if phase in ("batch", "all") and count == workers[0]:
                for cand in dict.fromkeys([worst_cand, largest]):
                    result = measure_batch(server, cand)
                    report.setdefault("batch", []).append(result)
                    print_batch(result)
                    failed |= result["worker_restarted"]
                    failed |= result["worst_batch_s"] >= RESPONSE_TIMEOUT_S
            if phase in ("attack", "all"):
                result = measure_attack(server, worst_cand, victim_png(), rate=args.rate,
                                        rounds=args.rounds)  # fmt: skip
                report.setdefault("attack", []).append(result)
                print_attack(result)
                failed |= result["worker_restarted"]
        finally:
            server.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
