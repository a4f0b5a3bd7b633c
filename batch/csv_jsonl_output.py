"""CSV and JSONL predictions: a `Row` as one line of bytes and back, and a file of such lines
read, repaired after a crash, or rewritten without its retryable rows.

A line is complete or absent: `encode_row` builds the whole line (newline included) so the
writer can hand it to the kernel in one `write`, and `repair_torn_tail` drops whatever a crash
left after the last complete line. Names are carried losslessly (see `batch.output`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

from batch.output import FORMATS, OutputError, Row, is_retryable
from handler.schemas import NUM_CLASSES

CSV_HEADER = (
    ["path", "digit", "confidence", "uncertain"]
    + [f"p{i}" for i in range(NUM_CLASSES)]
    + ["model", "model_version", "error"]
)
CSV_HEADER_LINE = (",".join(CSV_HEADER) + "\n").encode()


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


def read_text_rows(path: str | Path, fmt: str) -> Iterator[Row]:
    """Every row of an existing (repaired) CSV or JSONL file; OutputError names a malformed
    row."""
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


def drop_retryable(path: Path, fmt: str) -> int:
    """Rewrite the output without its retryable error rows (temp file, fsync, rename, fsync of
    the folder); returns how many were dropped. The file is untouched when there are none."""
    if not any(is_retryable(row.error) for row in read_text_rows(path, fmt)):
        return 0
    tmp = path.with_name(f".{path.name}.resume-{os.getpid()}")
    dropped = 0
    try:
        with open(tmp, "wb") as out:
            if fmt == "csv":
                out.write(CSV_HEADER_LINE)
            for row in read_text_rows(path, fmt):
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
