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
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from handler.schemas import NUM_CLASSES

logger = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
CSV_HEADER = (
    ["path", "digit", "confidence", "uncertain"]
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
            "uncertain": row.uncertain,
            "probabilities": row.probabilities,
            "model": row.model,
            "model_version": row.model_version,
            "error": None if row.error is None else _one_line(row.error),
        }
        try:
            return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # undecodable file name: JSON's \u escapes round-trip it
            return (json.dumps(obj) + "\n").encode("ascii")
    probs = row.probabilities or [None] * NUM_CLASSES
    uncertain = "" if row.uncertain is None else str(row.uncertain).lower()
    fields = [row.path, _fmt(row.digit), _fmt(row.confidence), uncertain, *map(_fmt, probs),
              row.model, row.model_version, "" if row.error is None else _one_line(row.error)]
    buf = io.StringIO()
    # QUOTE_MINIMAL quotes a line feed (our line terminator) but not a bare carriage return,
    # which readers also take as a line break: quote every field of such a row.
    quoting = csv.QUOTE_ALL if "\r" in row.path else csv.QUOTE_MINIMAL
    csv.writer(buf, lineterminator="\n", quoting=quoting).writerow(fields)
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
                   obj.get("model", ""), obj.get("model_version", ""), obj.get("error"),
                   obj.get("uncertain"))  # fmt: skip
    return _from_fields(next(csv.reader(io.StringIO(line.decode("utf-8", "surrogateescape"),
                                                    newline=""))))


def _from_fields(fields: list[str]) -> Row:
    if len(fields) != len(CSV_HEADER):
        raise ValueError(f"{len(fields)} fields, expected {len(CSV_HEADER)}")
    path, digit, conf, uncertain, *rest = fields
    probs, model, version, error = rest[:NUM_CLASSES], *rest[NUM_CLASSES:]
    return Row(path, int(digit) if digit else None, float(conf) if conf else None,
               [float(p) for p in probs] if digit else None, model, version, error or None,
               {"true": True, "false": False}.get(uncertain))  # fmt: skip


def repair_torn_tail(path: str | Path, fmt: str | None = None) -> int:
    """Truncate the file after its last complete row; returns how many bytes were dropped.

    A row ends at a newline; in CSV only at one outside a quoted field (a name may hold line
    breaks): the quotes before it are even in number, as every complete row's are.
    """
    fmt = fmt or FORMATS.get(Path(path).suffix.lower(), "jsonl")
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        quotes_after, keep, pos, block = 0, 0, size, 64 * 1024
        total_quotes = _count(f, b'"', size) if fmt == "csv" else 0
        while pos > 0 and not keep:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            end = len(chunk)
            while (idx := chunk.rfind(b"\n", 0, end)) >= 0:
                quotes_after += chunk.count(b'"', idx, end)
                end = idx
                if (total_quotes - quotes_after) % 2 == 0:
                    keep = start + idx + 1
                    break
            else:
                quotes_after += chunk.count(b'"', 0, end)
            pos = start
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep


def _count(f, needle: bytes, size: int) -> int:
    f.seek(0)
    total = 0
    while chunk := f.read(1 << 20):
        total += chunk.count(needle)
    return total


def read_rows(path: str | Path, fmt: str) -> Iterator[Row]:
    """Every row of an existing (repaired) output file; OutputError names a malformed row."""
    if fmt == "parquet":
        from batch.parquet_output import read_parquet

        yield from read_parquet(path)
        return
    with open(path, "rb") as f:
        if fmt == "jsonl":
            for number, raw in enumerate(f, start=1):
                line = raw.rstrip(b"\n")
                if line.strip():
                    yield _decoded(path, number, line, fmt)
            return
        text = io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(text)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise OutputError(f"{path}:1: malformed row ({exc}); cannot resume") from exc
        if header is not None and header != CSV_HEADER:
            raise OutputError(f"{path}:1: not this job's CSV header; cannot resume")
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise OutputError(f"{path}:{reader.line_num}: malformed row ({exc}); "
                                  "cannot resume") from exc  # fmt: skip
            if fields:
                try:
                    yield _from_fields(fields)
                except ValueError as exc:
                    raise OutputError(f"{path}:{reader.line_num}: malformed row ({exc}); "
                                      "cannot resume") from exc  # fmt: skip


def _decoded(path, number: int, line: bytes, fmt: str) -> Row:
    try:
        return decode_line(line, fmt)
    except (ValueError, StopIteration) as exc:
        raise OutputError(f"{path}:{number}: malformed row ({exc}); cannot resume") from exc


RETRYABLE_KINDS = ("GaveUp", "BadResponse")


def is_retryable(error: str | None) -> bool:
    """An error row that a later run may score successfully: the server was unreachable or
    kept failing (`GaveUp`), answered something malformed, or answered 5xx."""
    if not error:
        return False
    kind = error.split(":", 1)[0]
    return kind in RETRYABLE_KINDS or (kind.startswith("HTTP 5") and len(kind) == 8)


class OutputLock:
    """An exclusive lock on an output (flock on `<output>.lock`): one run per output.

    Taken without waiting: a second run fails at once with the holder's pid. The kernel drops
    the lock when the holder dies, whatever the signal, so it never goes stale.
    """

    def __init__(self, output: str | Path) -> None:
        output = Path(output)
        self.path = output.with_name(output.name + ".lock")
        self._fd = -1
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputError(
                    f"output {output} is in use by another run (pid {holder}, lock "
                    f"{self.path}); wait for it to finish or stop it, then --resume"
                ) from None
            try:  # the previous holder may have removed the file between our open and flock
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock; safe to call twice."""
        if self._fd >= 0:
            self.path.unlink(missing_ok=True)  # while still held: no one can lock the old file
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


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
        """Append one row now (visible to readers at once); fsync on the periodic schedule.

        A write that fails part-way (ENOSPC, EIO) is rolled back to where the row started and
        raised as OutputError: the file never holds a torn row.
        """
        data = encode_row(row, self.fmt)
        start = os.fstat(self._fd).st_size  # one writer (OutputLock): nobody else appends
        try:
            self._write(data)
        except OSError as exc:
            self._rollback(start)
            raise OutputError(self._failure("writing", exc)) from None
        self.rows_written += 1
        self._unsynced += 1
        now = time.monotonic()
        if self._unsynced >= self.fsync_rows or now - self._last_sync >= self.fsync_seconds:
            self.sync()

    def sync(self) -> None:
        """Flush written rows to stable storage."""
        if self._fd >= 0 and self._unsynced:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise OutputError(self._failure("syncing", exc)) from None
        self._unsynced, self._last_sync = 0, time.monotonic()

    def _rollback(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            logger.exception("could not roll %s back to %d bytes", self.path, size)

    def _failure(self, doing: str, exc: OSError) -> str:
        reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
        code = errno.errorcode.get(exc.errno, exc.errno)
        return (f"{doing} {self.path} failed: {reason} ({code}); {self.rows_written} rows "
                "written this run, none torn; free space and --resume")

    def close(self) -> None:
        """fsync and close; safe to call twice."""
        if self._fd >= 0:
            self._unsynced = max(self._unsynced, 1)
            try:
                self.sync()
            finally:
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


def open_output(path: str | Path, *, resume: bool, overwrite: bool,
                on_existing_row=None) -> tuple[RowWriter, Existing]:
    """Prepare the output file (the caller holds its `OutputLock`); `(writer, existing)`.

    - new file: created (CSV gets its header);
    - exists and `resume`: torn tail repaired, retryable error rows removed (atomically), done
      paths read (each kept row also passed to `on_existing_row` so the summary covers the
      whole file);
    - exists and `overwrite`: truncated;
    - exists otherwise: OutputError, so a finished run is never clobbered by accident.
    """
    path = Path(path)
    fmt = check_output(path, resume=resume, overwrite=overwrite)
    if fmt == "parquet":
        from batch.parquet_output import open_parquet

        return open_parquet(path, resume=resume, overwrite=overwrite,
                            on_existing_row=on_existing_row)  # fmt: skip
    existing = Existing()
    if path.exists():
        if resume:
            dropped = repair_torn_tail(path, fmt)
            if dropped:
                logger.warning("%s: dropped a torn last line (%d bytes) left by a crash",
                               path, dropped)
            existing.retried = _drop_retryable(path, fmt)
            if existing.retried:
                logger.info("%s: %d rows failed for a transient reason; scoring them again",
                            path, existing.retried)
            existing.take(read_rows(path, fmt), path, on_existing_row)
        else:  # overwrite (check_output refused the other cases)
            path.unlink()
    return RowWriter(path, fmt), existing


def _drop_retryable(path: Path, fmt: str) -> int:
    """Rewrite the output without its retryable error rows (temp file, fsync, rename, fsync of
    the folder); returns how many were dropped. The file is untouched when there are none."""
    if not any(is_retryable(row.error) for row in read_rows(path, fmt)):
        return 0
    tmp = path.with_name(f".{path.name}.resume-{os.getpid()}")
    dropped = 0
    try:
        with open(tmp, "wb") as out:
            if fmt == "csv":
                out.write((",".join(CSV_HEADER) + "\n").encode())
            for row in read_rows(path, fmt):
                if is_retryable(row.error):
                    dropped += 1
                else:
                    out.write(encode_row(row, fmt))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot rewrite {path} without its retryable rows: {exc.strerror}; "
                          "the file is unchanged") from None  # fmt: skip
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return dropped
