"""Locust's stats history read back, the saturation point, and the charts and tables of runs."""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = {"t": "Timestamp", "users": "User Count", "rps": "Requests/s", "p50": "50%",
           "p95": "95%", "p99": "99%"}  # fmt: skip


def read_history(history_csv: Path) -> list[dict]:
    """Aggregated rows of Locust's `_stats_history.csv` as {t (s from the first row), users,
    rps, p50, p95, p99}, None where Locust wrote N/A."""
    with open(history_csv, newline="") as fh:
        rows = [{k: None if r.get(c, "") in ("", "N/A") else float(r[c])
                 for k, c in COLUMNS.items()}
                for r in csv.DictReader(fh) if r.get("Name") == "Aggregated"]  # fmt: skip
    t0 = (rows[0]["t"] or 0.0) if rows else 0.0
    for row in rows:
        row["t"] = (row["t"] or t0) - t0
    return rows


def by_users(rows: list[dict], settle_s: float = 3.0) -> list[dict]:
    """Mean req/s and worst p99 per user count, skipping each step's first `settle_s` seconds."""
    steps: dict[float, list[dict]] = {}
    first_seen: dict[float, float] = {}
    for row in rows:
        if row["users"] is not None and row["rps"] is not None:
            first_seen.setdefault(row["users"], row["t"])
            if row["t"] - first_seen[row["users"]] >= settle_s:
                steps.setdefault(row["users"], []).append(row)
    return [{"users": int(users), "rps": sum(m["rps"] for m in members) / len(members),
             "p99_ms": max((m["p99"] for m in members if m["p99"] is not None), default=None)}
            for users, members in sorted(steps.items())]  # fmt: skip


def saturation_point(history_csv: Path, fraction: float = 0.95) -> dict | None:
    """The fewest users reaching `fraction` of the best step's req/s: more only adds latency."""
    steps = by_users(read_history(history_csv))
    if not steps:
        return None
    best = max(s["rps"] for s in steps)
    knee = next(s for s in steps if s["rps"] >= fraction * best)
    return {"users": knee["users"], "rps": round(knee["rps"], 1), "p99_ms": knee["p99_ms"],
            "max_rps": round(best, 1), "steps": steps}  # fmt: skip


def latency_by_minute(rows: list[dict]) -> list[dict]:
    """One history row per minute, and the last. Locust's history holds percentiles of a
    sliding ~10 s window, so a row per minute shows drift without averaging percentiles."""
    rows = [r for r in rows if r["p50"] and r["rps"]]
    picked: list[dict] = []
    for row in rows:
        if not picked or row["t"] >= picked[-1]["t"] + 60.0 or row is rows[-1]:
            picked.append(row)
    return [{k: r[k] for k in ("t", "rps", "p50", "p95", "p99")} for r in picked]


def md_table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a markdown table; numbers right-aligned, the first column left."""
    return ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1),
            *("| " + " | ".join(str(x) for x in row) + " |" for row in rows)]


def _two_axes(ax, x: list, left: list, left_label: str, right: dict[str, list], right_label: str,
              xlabel: str) -> None:  # fmt: skip
    ax.plot(x, left, "o-" if len(x) < 30 else "-", color="tab:blue")
    ax.set(xlabel=xlabel)
    ax.set_ylabel(left_label, color="tab:blue")
    twin = ax.twinx()
    for (name, values), style in zip(right.items(), (":", "--", "-"), strict=False):
        twin.plot(x, values, linestyle=style, color="tab:red", label=name)
    twin.set_ylabel(right_label, color="tab:red")
    twin.legend(loc="upper left", fontsize=8)


def _chart(rows: list[dict], draw_right, out_png: Path, title: str, minutes: bool = False) -> Path:
    """Req/s and latency percentiles over time on the left; `draw_right(ax)` on the right."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    _two_axes(left, [r["t"] / 60 if minutes else r["t"] for r in rows],
              [r["rps"] or 0 for r in rows], "requests/s",
              {f"{k} ms": [r[k] for r in rows] for k in ("p50", "p95", "p99")}, "latency (ms)",
              "time (min)" if minutes else "time (s)")  # fmt: skip
    left.set_title("over time")
    draw_right(right)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_run(history_csv: Path, out_png: Path, title: str = "") -> Path | None:
    """Req/s and latency percentiles over time; req/s and p99 against users."""
    rows = read_history(history_csv)
    steps = by_users(rows, settle_s=0.0)

    def against_users(ax) -> None:
        _two_axes(ax, [s["users"] for s in steps], [s["rps"] for s in steps], "requests/s",
                  {"p99 ms": [s["p99_ms"] for s in steps]}, "p99 (ms)", "users")  # fmt: skip
        ax.set_title("against users")

    return _chart(rows, against_users, out_png, title) if rows else None


def plot_soak(rows: list[dict], rss: list[tuple[float, tuple]], out_png: Path, title: str) -> Path:
    """Latency and req/s over time; RSS of the frontend and of each worker, from
    `(t, (frontend MiB, {worker pid: MiB}))` readings."""

    def memory(ax) -> None:
        ts = [t / 60 for t, _ in rss]
        ax.plot(ts, [frontend for _, (frontend, _) in rss], label="frontend (JVM)")
        for pid in sorted({pid for _, (_, workers) in rss for pid in workers}):
            ax.plot(ts, [workers.get(pid) for _, (_, workers) in rss], label=f"worker {pid}")
        ax.set(xlabel="time (min)", ylabel="RSS (MiB)", title="memory", ylim=(0, None))
        ax.legend(loc="lower right", fontsize=8)

    return _chart(rows, memory, out_png, title, minutes=True)
