"""Running totals of a scoring job, in constant memory, and the end-of-run report.

Only counters and a fixed confidence histogram are kept, never the rows themselves, so the
summary costs the same for 100 files or 10 million.
"""

from __future__ import annotations

import json
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from batch.output import Row

CONFIDENCE_BINS = 20  # histogram of the predicted digit's probability over [0, 1]
MAX_ERROR_EXAMPLES = 5


@dataclass
class Summary:
    """Counts for the whole output file: rows from earlier runs (resume) and from this one."""

    engine: str = ""
    model: str = ""
    model_version: str = ""
    digits: Counter = field(default_factory=Counter)
    confidence_hist: list[int] = field(default_factory=lambda: [0] * CONFIDENCE_BINS)
    errors: int = 0
    error_kinds: Counter = field(default_factory=Counter)
    error_examples: list[dict] = field(default_factory=list)
    scored_this_run: int = 0
    retried_rows: int = 0  # error rows of earlier runs removed by --resume to be scored again
    resumed_rows: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    worker_peak_rss_mb: list = field(default_factory=list)  # local engine's decode processes
    rows_per_node: dict = field(default_factory=dict)  # ray engine: rows each node's actors scored

    def add(self, row: Row, *, resumed: bool = False) -> None:
        """Count one row (`resumed=True` for rows found in the output by --resume)."""
        if resumed:
            self.resumed_rows += 1
        else:
            self.scored_this_run += 1
        if row.error is not None:
            self.errors += 1
            kind = row.error.split(":", 1)[0][:60]
            self.error_kinds[kind] += 1
            if len(self.error_examples) < MAX_ERROR_EXAMPLES:
                self.error_examples.append({"path": row.path, "error": row.error})
            return
        self.digits[row.digit] += 1
        idx = min(int(row.confidence * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)
        self.confidence_hist[idx] += 1

    def finish(self) -> None:
        """Stop the clock."""
        self.finished = time.monotonic()

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def total(self) -> int:
        return self.scored_this_run + self.resumed_rows

    def to_dict(self) -> dict:
        """JSON-ready summary (`--summary`)."""
        elapsed = self.elapsed
        return {
            "engine": self.engine,
            "model": self.model,
            "model_version": self.model_version,
            "rows_total": self.total,
            "rows_ok": self.total - self.errors,
            "rows_error": self.errors,
            "scored_this_run": self.scored_this_run,
            "resumed_rows": self.resumed_rows,
            "retried_rows": self.retried_rows,
            "per_digit": {str(d): self.digits.get(d, 0) for d in range(10)},
            "error_kinds": dict(self.error_kinds.most_common()),
            "error_examples": self.error_examples,
            "confidence_histogram": {
                "bin_edges": [i / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS + 1)],
                "counts": list(self.confidence_hist),
            },
            "elapsed_s": round(elapsed, 3),
            # Peak resident memory of the job's main process (Linux reports KiB), and of each
            # preprocessing worker of the local engine (they hold no results): the whole job
            # never held more than the sum.
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_workers_mb": self.worker_peak_rss_mb,
            "images_per_s": round(self.scored_this_run / elapsed, 1) if elapsed > 0 else None,
            "rows_per_node": dict(sorted(self.rows_per_node.items())),
        }

    def text(self) -> str:
        """Human-readable end-of-run report (stderr)."""
        d = self.to_dict()
        per_digit = "  ".join(f"{k}:{v}" for k, v in d["per_digit"].items())
        lines = [
            f"model {d['model']} {d['model_version']} via {d['engine']} engine",
            f"rows: {d['rows_total']} ({d['rows_ok']} ok, {d['rows_error']} errors; "
            f"{d['scored_this_run']} scored now, {d['resumed_rows']} from earlier runs"
            + (f", {d['retried_rows']} retried" if d["retried_rows"] else "") + ")",
            f"per digit: {per_digit}",
            f"elapsed {d['elapsed_s']:.1f} s, {d['images_per_s'] or 0:.1f} images/s, "
            f"peak RSS {d['peak_rss_mb']:.0f} MB"
            + (f" (+ workers {', '.join(f'{w:.0f}' for w in d['peak_rss_workers_mb'] if w)} MB)"
               if any(d["peak_rss_workers_mb"]) else ""),
        ]
        if d["rows_per_node"]:
            lines.append("rows per node: " + ", ".join(
                f"{node} {n}" for node, n in d["rows_per_node"].items()))
        for kind, n in d["error_kinds"].items():
            lines.append(f"  error {kind}: {n}")
        for ex in d["error_examples"]:
            lines.append(f"  e.g. {ex['path']}: {ex['error']}")
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> None:
        """Write `to_dict()` to `path`."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def plot(self, path: str | Path) -> None:
        """PNG with the predicted-digit histogram and the confidence histogram."""
        import matplotlib

        matplotlib.use("Agg")  # no display on servers; must precede pyplot
        import matplotlib.pyplot as plt

        d = self.to_dict()
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        ax1.bar(range(10), [d["per_digit"][str(i)] for i in range(10)], color="tab:blue")
        ax1.set_xticks(range(10))
        ax1.set_xlabel("predicted digit")
        ax1.set_ylabel("images")
        ax1.set_title(f"Predicted digits ({d['rows_ok']} images, {d['rows_error']} errors)")
        edges = d["confidence_histogram"]["bin_edges"]
        ax2.bar(edges[:-1], d["confidence_histogram"]["counts"], width=1 / CONFIDENCE_BINS,
                align="edge", color="tab:orange", edgecolor="black")
        ax2.set_yscale("log")
        ax2.set_xlim(0, 1)
        ax2.set_xlabel("confidence (probability of the predicted digit)")
        ax2.set_ylabel("images (log scale)")
        ax2.set_title("Confidence")
        fig.suptitle(f"{d['model']} {d['model_version']} - {d['engine']} engine")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
