"""Parquet predictions: rows journaled while the job runs, one Parquet file written at the end.

A Parquet file cannot grow row by row (its footer, which every reader needs, is written last),
so the crash-safety rules of `batch.output` apply to a JSONL journal beside it instead:

- rows go to `OUT.parquet.journal.jsonl` through the same append-only `RowWriter` (one `write`
  per row, fsync'ed periodically; a SIGKILL costs at most a torn last line);
- at the end of the run, on success or on an error that unwinds, the rows of the existing
  Parquet file (if any) and of the journal are written to `OUT.parquet.tmp` in row groups,
  fsync'ed and renamed over `OUT.parquet`; then the journal is deleted;
- `--resume` counts the rows of both; a journal whose rows are all in the Parquet file already
  is left over from a crash between the rename and the delete, and is dropped. Retryable error
  rows (`batch.output.is_retryable`) are removed by rewriting the Parquet file (temp file,
  rename) and scored again, as for CSV and JSONL.

Columns: path, digit, confidence, uncertain, p0..p9, model, model_version, error (as in the
CSV). The path
column is UTF-8: a file name that is not UTF-8 is stored with its odd bytes as `\\xNN` escapes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batch.csv_jsonl_output import read_text_rows, repair_torn_tail
from batch.output import ClosedOnExit, Existing, OutputError, Row, is_retryable
from batch.row_writer import RowWriter
from handler.schemas import NUM_CLASSES

logger = logging.getLogger(__name__)

ROW_GROUP = 65_536
SCHEMA = pa.schema(
    [("path", pa.string()), ("digit", pa.int64()), ("confidence", pa.float64()),
     ("uncertain", pa.bool_())]
    + [(f"p{i}", pa.float64()) for i in range(NUM_CLASSES)]
    + [("model", pa.string()), ("model_version", pa.string()), ("error", pa.string())]
)


def journal_path(path: str | Path) -> Path:
    """Where the rows of a run in progress are appended."""
    return Path(f"{path}.journal.jsonl")


def _utf8(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _table(rows: list[Row]) -> pa.Table:
    columns = {
        "path": [_utf8(r.path) for r in rows],
        "digit": [r.digit for r in rows],
        "confidence": [r.confidence for r in rows],
        "uncertain": [r.uncertain for r in rows],
        **{f"p{i}": [None if r.probabilities is None else r.probabilities[i] for r in rows]
           for i in range(NUM_CLASSES)},
        "model": [r.model for r in rows],
        "model_version": [r.model_version for r in rows],
        "error": [r.error for r in rows],
    }  # fmt: skip
    return pa.table(columns, schema=SCHEMA)


def read_parquet(path: str | Path) -> Iterator[Row]:
    """Every row of a predictions Parquet file, one row group at a time."""
    try:
        reader = pq.ParquetFile(path)
        for batch in reader.iter_batches(batch_size=ROW_GROUP):
            for r in batch.to_pylist():
                probs = [r[f"p{i}"] for i in range(NUM_CLASSES)]
                yield Row(r["path"], r["digit"], r["confidence"],
                          None if r["digit"] is None else probs, r["model"] or "",
                          r["model_version"] or "", r["error"], r["uncertain"])  # fmt: skip
    except (pa.ArrowInvalid, OSError) as exc:
        raise OutputError(f"{path}: not a readable predictions Parquet file ({exc})") from exc


def _batches(rows: Iterator[Row]) -> Iterator[pa.Table]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == ROW_GROUP:
            yield _table(batch)
            batch = []
    if batch:
        yield _table(batch)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finalize(path: Path, keep: Callable[[Row], bool] = lambda row: True) -> int:
    """Merge the journal into `path` (atomically replaced), keeping the rows `keep` accepts, and
    delete the journal; returns rows written."""
    journal = journal_path(path)
    tmp = Path(f"{path}.tmp")
    rows = 0
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        sources = [read_parquet(path)] if path.exists() else []
        if journal.exists():
            sources.append(read_text_rows(journal, "jsonl"))
        for source in sources:
            for table in _batches(row for row in source if keep(row)):
                writer.write_table(table, row_group_size=ROW_GROUP)
                rows += table.num_rows
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    journal.unlink(missing_ok=True)
    return rows


class ParquetRowWriter(ClosedOnExit):
    """Appends rows to the journal; `close` writes the Parquet file (see the module doc)."""

    fmt = "parquet"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._journal: RowWriter | None = RowWriter(journal_path(path), "jsonl")

    @property
    def rows_written(self) -> int:
        return self._journal.rows_written if self._journal else 0

    def write(self, row: Row) -> None:
        """Append one row to the journal now."""
        self._journal.write(row)

    def close(self) -> None:
        """Close the journal and write the Parquet file; safe to call twice."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
            finalize(self.path)


def check_journal(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a journal left by an interrupted run unless told what to do with it."""
    if journal_path(path).exists() and not (resume or overwrite):
        raise OutputError(
            f"{journal_path(path)} holds rows of an interrupted run: pass --resume to continue "
            "it or --overwrite to start again"
        )


def open_parquet(path: Path, *, resume: bool, overwrite: bool,
                 on_existing_row: Callable[[Row], None] | None = None,
                 ) -> tuple[ParquetRowWriter, Existing]:  # fmt: skip
    """`batch.open_output.open_output` for a `.parquet` path: `(writer, existing)`."""
    journal = journal_path(path)
    existing = Existing()
    if overwrite and not resume:
        path.unlink(missing_ok=True)
        journal.unlink(missing_ok=True)
        return ParquetRowWriter(path), existing
    if journal.exists():
        dropped = repair_torn_tail(journal)
        if dropped:
            logger.warning("%s: dropped a torn last line (%d bytes) left by a crash",
                           journal, dropped)  # fmt: skip
        done = {row.path for row in read_parquet(path)} if path.exists() else set()
        if done and all(row.path in done for row in read_text_rows(journal, "jsonl")):
            logger.warning("%s: left over from a crash after the Parquet file was written; "
                           "dropped", journal)  # fmt: skip
            journal.unlink()
        else:
            finalize(path)  # one file to resume from: the Parquet rows, then the journal's
    if path.exists():
        retryable = sum(is_retryable(row.error) for row in read_parquet(path))
        if retryable:
            finalize(path, keep=lambda row: not is_retryable(row.error))
            existing.retried = retryable
            logger.info("%s: %d rows failed for a transient reason; scoring them again",
                        path, retryable)  # fmt: skip
        existing.take(read_parquet(path), path, on_existing_row)
    return ParquetRowWriter(path), existing
