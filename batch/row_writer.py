"""The append-only writer of a CSV or JSONL output (and of a Parquet output's journal).

Each row is encoded completely first and handed to the kernel in ONE `write` on an `O_APPEND`
descriptor, so a reader (or a resume) sees whole rows, and rows are flushed as they complete
(no user-space buffer to lose on SIGKILL); a write that fails part-way (a full disk) is rolled
back to the row's start. `fsync` runs every `fsync_rows` rows / `fsync_seconds` seconds and at
close, so a power loss costs at most that window.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from batch.csv_jsonl_output import CSV_HEADER_LINE, encode_row
from batch.output import ClosedOnExit, OutputError, Row

logger = logging.getLogger(__name__)


@dataclass
class RowWriter(ClosedOnExit):
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
            self._write(CSV_HEADER_LINE)

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
