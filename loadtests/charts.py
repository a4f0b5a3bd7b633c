"""Charts of Locust runs: req/s and p50/p95/p99 over time and against users (PNG)."""

from __future__ import annotations

import csv
from pathlib import Path


def read_history(history_csv: Path) -> list[dict]:
    """Aggregated rows of Locust's `_stats_history.csv` with numeric fields (None for N/A)."""
    rows = []
    with open(history_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") != "Aggregated":
                continue

            def num(key: str, row: dict = row) -> float | None:
                value = row.get(key, "")
                return None if value in ("", "N/A") else float(value)

            rows.append(
                {
                    "t": num("Timestamp"),
                    "users": num("User Count"),
                    "rps": num("Requests/s"),
                    "p50": num("50%"),
                    "p95": num("95%"),
                    "p99": num("99%"),
                }
            )
    if rows:
        t0 = rows[0]["t"] or 0.0
        for row in rows:
            row["t"] = (row["t"] or t0) - t0
    return rows


def by_users(rows: list[dict], settle_s: float = 3.0) -> list[dict]:
    """Mean req/s and p99 per user count, skipping each step's first `settle_s` seconds."""
    steps: dict[float, list[dict]] = {}
    first_seen: dict[float, float] = {}
    for row in rows:
        if row["users"] is None or row["rps"] is None:
            continue
        first_seen.setdefault(row["users"], row["t"])
        if row["t"] - first_seen[row["users"]] >= settle_s:
            steps.setdefault(row["users"], []).append(row)
    out = []
    for users, members in sorted(steps.items()):
        p99s = [m["p99"] for m in members if m["p99"] is not None]
        out.append(
            {
                "users": int(users),
                "rps": sum(m["rps"] for m in members) / len(members),
                "p99_ms": max(p99s) if p99s else None,
            }
        )
    return out


def saturation_point(history_csv: Path, fraction: float = 0.95) -> dict | None:
    """The fewest users reaching `fraction` of the best step's req/s: more only adds latency."""
    steps = by_users(read_history(history_csv))
    if not steps:
        return None
    best = max(s["rps"] for s in steps)
    knee = next(s for s in steps if s["rps"] >= fraction * best)
    return {"users": knee["users"], "rps": round(knee["rps"], 1), "p99_ms": knee["p99_ms"],
            "max_rps": round(best, 1), "steps": steps}  # fmt: skip


def plot_run(history_csv: Path, out_png: Path, title: str = "") -> Path | None:
    """Two panels: req/s and latency percentiles over time; req/s and p99 against users."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    rows = read_history(history_csv)
    if not rows:
        return None
    fig, (ax_time, ax_users) = plt.subplots(1, 2, figsize=(13, 4.5))
    t = [r["t"] for r in rows]
    ax_time.plot(t, [r["rps"] or 0 for r in rows], color="tab:blue", label="req/s")
    ax_time.set_xlabel("time (s)")
    ax_time.set_ylabel("requests/s", color="tab:blue")
    lat = ax_time.twinx()
    for key, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
        lat.plot(t, [r[key] for r in rows], linestyle=style, color="tab:red", label=f"{key} ms")
    lat.set_ylabel("latency (ms)", color="tab:red")
    lat.legend(loc="upper left", fontsize=8)
    ax_time.set_title("over time")

    steps = by_users(rows, settle_s=0.0)
    ax_users.plot([s["users"] for s in steps], [s["rps"] for s in steps], "o-", color="tab:blue")
    ax_users.set_xlabel("users")
    ax_users.set_ylabel("requests/s", color="tab:blue")
    lat_u = ax_users.twinx()
    lat_u.plot([s["users"] for s in steps], [s["p99_ms"] for s in steps], "s--", color="tab:red")
    lat_u.set_ylabel("p99 (ms)", color="tab:red")
    ax_users.set_title("against users")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
