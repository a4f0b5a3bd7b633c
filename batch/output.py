"""The predictions file: CSV or JSONL rows, appended whole, resumable after a crash.

(Parquet, chosen by the `.parquet` extension, journals its rows through these same rules and is
written whole at the end of the run: `batch.parquet_output`.)

Crash safety rests on these rules:
- one run per output: an exclusive lock (`OutputLock`, flock on `<output>.lock`) is held for
  the whole run, so two runs can never interleave or duplicate rows;
- each row is encoded completely first and handed to the kernel in ONE `write` on an
  `O_APPEND` descriptor, so a reader (or a resume) sees whole rows, and rows are flushed as
  they complete (no user-space buffer to lose on SIGKILL); a write that fails part-way (a full
  disk) is rolled back to the row's start, so no torn row is left behind;
- `fsync` runs every `fsync_rows` rows / `fsync_seconds` seconds and at close, so a power loss
  costs at most that window, never a half-visible file;
- on `--resume` the file is first truncated to its last complete row (a torn tail from a crash
  mid-write is dropped and that image simply scored again), then every row is parsed to build
  the set of done paths. A malformed row anywhere else is corruption and stops the job. Rows
  that failed for a transient reason (`is_retryable`: the server unreachable, `GaveUp`) are
  removed by an atomic rewrite (temp file, fsync, rename) and scored again, so the file still
  holds each path once.

Names are carried losslessly: a name with a line break is a quoted CSV field (RFC 4180) or a
JSON string, and a name that is not UTF-8 keeps its bytes through Python's surrogate escapes
(raw in CSV, `\\udcXX` escapes in JSONL; `os.fsencode(path)` gives the bytes back).

This module holds what every format shares: the `Row`, the format of an extension, which error
rows a resume scores again, and what a resumed output already held (`Existing`). The rules live
in `batch.output_lock` (the lock), `batch.row_writer` (one write per row, fsync),
`batch.csv_jsonl_output` (rows as lines, torn-tail repair, the retryable-row rewrite) and
`batch.open_output` (creating, overwriting or resuming an output of any format).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


class OutputError(RuntimeError):
    """The output file cannot be used: wrong extension, exists, or is corrupt."""


@dataclass(slots=True)
class Row:
    """One scored (or failed) file. `error` is None on success."""

    path: str
    digit: int | None = None
    confidence: float | None = None
    probabilities: list[float] | None = None
    model: str = ""
    model_version: str = ""
    error: str | None = None
    uncertain: bool | None = None  # the answer's `uncertain` flag (handler/schemas.py)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def of(cls, path: str, answer, model: str, model_version: str) -> Row:
        """The row of one answer: a `Prediction`, or an `ImageError` (its type and message)."""
        if hasattr(answer, "error"):
            return cls(path, model=model, model_version=model_version,
                       error=f"{answer.error.type}: {answer.error.message}")  # fmt: skip
        return cls(path, answer.digit, answer.confidence, answer.probabilities, model,
                   model_version, uncertain=answer.uncertain)  # fmt: skip


def format_for(path: str | Path) -> str:
    """'csv', 'jsonl' or 'parquet' from the output file's extension."""
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        raise OutputError(
            f"output {path}: unknown extension {suffix!r}; use one of {sorted(FORMATS)}"
        ) from None


RETRYABLE_KINDS = ("GaveUp", "BadResponse")


def is_retryable(error: str | None) -> bool:
    """An error row that a later run may score successfully: the server was unreachable or
    kept failing (`GaveUp`), answered something malformed, or answered 5xx."""
    if not error:
        return False
    kind = error.split(":", 1)[0]
    return kind in RETRYABLE_KINDS or (kind.startswith("HTTP 5") and len(kind) == 8)


class ClosedOnExit:
    """A `with` block over a writer closes it on the way out, whatever happened inside."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Existing:
    """What an output already held when the run started (`--resume`)."""

    done: set[str] = field(default_factory=set)
    models: Counter = field(default_factory=Counter)  # (model, version) -> successful rows
    retried: int = 0  # retryable error rows removed, to be scored again

    def take(self, rows: Iterator[Row], path: Path, on_existing_row=None) -> None:
        """Record the rows a resumed output keeps (each also passed to `on_existing_row`);
        a path seen twice means the file is not one this job wrote, so resuming stops."""
        for row in rows:
            if row.path in self.done:
                raise OutputError(f"{path}: {row.path!r} appears twice; cannot resume")
            self.done.add(row.path)
            if row.ok:
                self.models[(row.model, row.model_version)] += 1
            if on_existing_row is not None:
                on_existing_row(row)
