"""The predictions file: CSV or JSONL rows, appended whole, resumable after a crash.

(Parquet, chosen by the `.parquet` extension, journals its rows through these same rules and is
written whole at the end of the run: `batch.parquet_output`.)

Crash safety rests on three rules:
- each row is encoded completely first and handed to the kernel in ONE `write` on an
  `O_APPEND` descriptor, so a reader (or a resume) sees whole rows, and rows are flushed as
  they complete (no user-space buffer to lose on SIGKILL);
- `fsync` runs every `fsync_rows` rows / `fsync_seconds` seconds and at close, so a power loss
  costs at most that window, never a half-visible file;
- on `--resume` the file is first truncated to its last complete line (a torn tail from a crash
  mid-write is dropped and that image simply scored again), then every line is parsed to build
  the set of done paths. A malformed line anywhere else is corruption and stops the job.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from handler.schemas import NUM_CLASSES

logger = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
CSV_HEADER = (
    ["path", "digit", "confidence"]
    + [f"p{i}" for i in range(NUM_CLASSES)]
    + ["model", "model_version", "error"]
)


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

    @property
    def ok(self) -> bool:
        return self.error is None


def format_for(path: str | Path) -> str:
    """'csv', 'jsonl' or 'parquet' from the output file's extension."""
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        raise OutputError(
            f"output {path}: unknown extension {suffix!r}; use one of {sorted(FORMATS)}"
        ) from None


def _one_line(text: str) -> str:
    # Error messages come from Pillow, the OS or the server: keep every row on one line.
    return " ".join(text.split())


def encode_row(row: Row, fmt: str) -> bytes:
    """The row as one complete line of bytes, newline included."""
    if fmt == "jsonl":
        obj = {
            "path": row.path,
            "digit": row.digit,
            "confidence": row.confidence,
            "probabilities": row.probabilities,
            "model": row.model,
            "model_version": row.model_version,
            "error": None if row.error is None else _one_line(row.error),
        }
        try:
            return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # undecodable file name: JSON's \u escapes round-trip it
            return (json.dumps(obj) + "\n").encode("ascii")
    if "\n" in row.path or "\r" in row.path:
        raise OutputError(f"file name {row.path!r} contains a newline; use a .jsonl output")
    probs = row.probabilities or [None] * NUM_CLASSES
    fields = [row.path, _fmt(row.digit), _fmt(row.confidence), *map(_fmt, probs),
              row.model, row.model_version, "" if row.error is None else _one_line(row.error)]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue().encode("utf-8", "surrogateescape")


def _fmt(value) -> str:
    # repr() of a float round-trips exactly, so CSV and JSONL carry the same numbers.
    return "" if value is None else repr(value)


def decode_line(line: bytes, fmt: str) -> Row:
    """Parse one complete line (without its newline) back into a Row; ValueError if malformed."""
    if fmt == "jsonl":
        obj = json.loads(line.decode("utf-8", "surrogateescape"))
        if not isinstance(obj, dict) or not isinstance(obj.get("path"), str):
            raise ValueError("not a JSON object with a 'path'")
        return Row(obj["path"], obj.get("digit"), obj.get("confidence"), obj.get("probabilities"),
                   obj.get("model", ""), obj.get("model_version", ""), obj.get("error"))
    fields = next(csv.reader([line.decode("utf-8", "surrogateescape")]))
    if len(fields) != len(CSV_HEADER):
        raise ValueError(f"{len(fields)} fields, expected {len(CSV_HEADER)}")
    path, digit, conf, *rest = fields
    probs, model, version, error = rest[:NUM_CLASSES], *rest[NUM_CLASSES:]
    return Row(path, int(digit) if digit else None, float(conf) if conf else None,
               [float(p) for p in probs] if digit else None, model, version, error or None)


def repair_torn_tail(path: str | Path) -> int:
    """Truncate the file after its last newline; returns how many bytes were dropped."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        pos, block = size, 64 * 1024
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep


def read_rows(path: str | Path, fmt: str) -> Iterator[Row]:
    """Every row of an existing (repaired) output file; OutputError names a malformed line."""
    if fmt == "parquet":
        from batch.parquet_output import read_parquet

        yield from read_parquet(path)
        return
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.rstrip(b"\n")
            if fmt == "csv" and number == 1:
                if line.decode("utf-8", "replace") != ",".join(CSV_HEADER):
                    raise OutputError(f"{path}:1: not this job's CSV header; cannot resume")
                continue
            if not line.strip():
                continue
            try:
                yield decode_line(line, fmt)
            except (ValueError, StopIteration) as exc:
                raise OutputError(f"{path}:{number}: malformed row ({exc}); cannot resume") from exc


@dataclass
class RowWriter:
    """Appends rows to the output, one `write` per row, fsync'ed periodically and at close."""

    path: Path
    fmt: str
    fsync_rows: int = 500
    fsync_seconds: float = 2.0
    rows_written: int = 0
    _fd: int = field(default=-1, repr=False)
    _unsynced: int = field(default=0, repr=False)
    _last_sync: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._last_sync = time.monotonic()
        if self.fmt == "csv" and os.fstat(self._fd).st_size == 0:
            self._write((",".join(CSV_HEADER) + "\n").encode())

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # a regular-file write is whole in practice; loop only for safety
            view = view[os.write(self._fd, view):]

    def write(self, row: Row) -> None:
        """Append one row now (visible to readers at once); fsync on the periodic schedule."""
        self._write(encode_row(row, self.fmt))
        self.rows_written += 1
        self._unsynced += 1
        now = time.monotonic()
        if self._unsynced >= self.fsync_rows or now - self._last_sync >= self.fsync_seconds:
            self.sync()

    def sync(self) -> None:
        """Flush written rows to stable storage."""
        if self._fd >= 0 and self._unsynced:
            os.fsync(self._fd)
        self._unsynced, self._last_sync = 0, time.monotonic()

    def close(self) -> None:
        """fsync and close; safe to call twice."""
        if self._fd >= 0:
            self._unsynced = max(self._unsynced, 1)
            self.sync()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_output(path: str | Path, *, resume: bool, overwrite: bool) -> str:
    """Validate the output path without touching it; returns its format ('csv'/'jsonl'/...).

    OutputError for an unknown extension, a missing folder, or an existing file without
    `resume`/`overwrite` (a finished run is never clobbered by accident).
    """
    path = Path(path)
    fmt = format_for(path)
    if not path.parent.is_dir():
        raise OutputError(f"output folder {path.parent} does not exist")
    if path.exists() and not (resume or overwrite):
        raise OutputError(
            f"output {path} already exists: pass --resume to continue it or --overwrite "
            "to replace it"
        )
    if fmt == "parquet":
        from batch.parquet_output import check_journal

        check_journal(path, resume=resume, overwrite=overwrite)
    return fmt


def open_output(path: str | Path, *, resume: bool, overwrite: bool,
                on_existing_row=None) -> tuple[RowWriter, set[str]]:
    """Prepare the output file and return `(writer, done_paths)`.

    - new file: created (CSV gets its header);
    - exists and `resume`: torn tail repaired, done paths read (each row also passed to
      `on_existing_row` so the summary covers the whole file);
    - exists and `overwrite`: truncated;
    - exists otherwise: OutputError, so a finished run is never clobbered by accident.
    """
    path = Path(path)
    fmt = check_output(path, resume=resume, overwrite=overwrite)
    if fmt == "parquet":
        from batch.parquet_output import open_parquet

        return open_parquet(path, resume=resume, overwrite=overwrite,
                            on_existing_row=on_existing_row)  # fmt: skip
    done: set[str] = set()
    if path.exists():
        if resume:
            dropped = repair_torn_tail(path)
            if dropped:
                logger.warning("%s: dropped a torn last line (%d bytes) left by a crash",
                               path, dropped)
            for row in read_rows(path, fmt):
                if row.path in done:
                    raise OutputError(f"{path}: {row.path!r} appears twice; cannot resume")
                done.add(row.path)
                if on_existing_row is not None:
                    on_existing_row(row)
        else:  # overwrite (check_output refused the other cases)
            path.unlink()
    return RowWriter(path, fmt), done
