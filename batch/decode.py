"""Worker-side half of the local engine: read files and prepare them, torch-free.

This module is all that the decode processes import (numpy, Pillow and `handler.inputs`), so
they start in a fraction of a second and stay small; torch lives only in the main process.
"""

from __future__ import annotations

import os

from handler.inputs import Prepared, prepare


def describe_error(exc: BaseException) -> str:
    """One-line 'Kind: what' for a row's error column."""
    return f"{type(exc).__name__}: {exc}"


def prepare_chunk(root: str, rels: list[str]) -> tuple[list[str], Prepared, list[tuple[str, str]]]:
    """Worker task: `(readable paths, their prepared images, [(path, read error), ...])`.

    A file that cannot be read (vanished, a directory, unreadable) is a read error; one that
    cannot be decoded is an error slot in `Prepared`. Neither costs its neighbours.
    """
    readable, data, read_errors = [], [], []
    for rel in rels:
        try:
            with open(os.path.join(root, rel), "rb") as f:
                data.append(f.read())
            readable.append(rel)
        except OSError as exc:
            read_errors.append((rel, describe_error(exc)))
    return readable, prepare(data), read_errors


def ready() -> int:
    """No-op task used to start a worker ahead of the first real chunk; returns its pid."""
    return os.getpid()
