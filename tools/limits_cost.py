"""In-process CPU of the handler's per-image work (probe + preprocess) per worst admitted
request, and ns per cost unit: `python -m tools.limits_bench cost`."""

from __future__ import annotations

import time

from handler import limits
from handler.preprocessing import preprocess
from tools.limits_candidates import Candidate


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


def print_cost(rows: list[dict]) -> None:
    """The cost table, a row per candidate."""
    print(f"{'candidate':24} {'images':>6} {'body MB':>8} {'cost M':>7} {'CPU ms':>7} "
          f"{'ns/unit':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['candidate']:24} {r['images']:6d} {r['body_bytes'] / 1e6:8.2f} "
              f"{r['cost'] / 1e6:7.2f} {r['cpu_ms']:7.1f} {r['ns_per_cost_unit']:8.1f}")


def worst(rows: list[dict], cands: list[Candidate]) -> Candidate:
    """The candidate that took the most CPU."""
    name = max(rows, key=lambda r: r["cpu_ms"])["candidate"]
    return next(c for c in cands if c.name == name)
