"""Opening a predictions file for a run, whatever its format: refused, created, overwritten or
resumed (the rules are in `batch.output`'s doc), and reading one back.

CSV and JSONL are appended in place (`batch.csv_jsonl_output`, `batch.row_writer`); Parquet,
chosen by the `.parquet` extension, is imported only when asked for (`batch.parquet_output`),
so a CSV or JSONL job never loads pyarrow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from batch.csv_jsonl_output import drop_retryable, read_text_rows, repair_torn_tail
from batch.output import Existing, OutputError, Row, format_for
from batch.row_writer import RowWriter

logger = logging.getLogger(__name__)


def read_rows(path: str | Path, fmt: str) -> Iterator[Row]:
    """Every row of an existing (repaired) output file; OutputError names a malformed row."""
    if fmt == "parquet":
        from batch.parquet_output import read_parquet

        yield from read_parquet(path)
        return
    yield from read_text_rows(path, fmt)


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
            existing.retried = drop_retryable(path, fmt)
            if existing.retried:
                logger.info("%s: %d rows failed for a transient reason; scoring them again",
                            path, existing.retried)
            existing.take(read_text_rows(path, fmt), path, on_existing_row)
        else:  # overwrite (check_output refused the other cases)
            path.unlink()
    return RowWriter(path, fmt), existing
