"""Worker-side half of the local engine: read files and prepare them, torch-free.

This module is all that the decode processes import (numpy, Pillow and `handler.inputs`), so
they start in a fraction of a second and stay small; torch lives only in the main process.
`read_input` is also how the http engine reads a file: only regular files, at most
`MAX_FILE_BYTES`, never blocking (a FIFO, a device, a symlink to /dev/zero are error rows).
"""

from __future__ import annotations

import ctypes
import os
import signal
import stat

from handler.inputs import Prepared, prepare

# Per-file cap, checked with fstat before reading: 64 MiB is over any photo a camera writes
# (a 40 MP JPEG is ~25 MB) and bounds what one file can make a reader hold.
MAX_FILE_BYTES = 64 * 2**20
PARENT_PID_ENV = "LENET_BATCH_PARENT_PID"  # the job's pid, for its decode processes
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR,
               "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))  # fmt: skip


class UnreadableInput(OSError):
    """A path that is not a regular file, or one over MAX_FILE_BYTES; str() says which."""


def read_input(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; raises OSError (UnreadableInput for
    the wrong kind of file or size). Opened O_NONBLOCK so a FIFO cannot block, and checked with
    fstat on the open descriptor (what a symlink points to is what gets checked)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "not a file")
            raise UnreadableInput(f"not a regular file ({kind}): only regular files are read")
        if st.st_size > max_bytes:
            raise UnreadableInput(f"file is {st.st_size:,} bytes, over the cap of {max_bytes:,} "
                                  "bytes per file")  # fmt: skip
        chunks, size = [], 0
        while chunk := os.read(fd, min(max_bytes + 1 - size, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:  # grew while being read
                raise UnreadableInput(f"file grew past the cap of {max_bytes:,} bytes per file")
        return b"".join(chunks)
    finally:
        os.close(fd)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux PR_SET_PDEATHSIG), and
    exit now if the parent is already gone (or is not `parent_pid`). A no-op elsewhere.

    The job's decode workers and multiprocessing's fork server call it, so a SIGKILLed job never
    leaves them running: the fork server dies with the job, the workers with the fork server.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):  # not Linux
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl took effect


def worker_init() -> None:
    """Initializer of every decode worker: die with the fork server that forked it."""
    die_with_parent()


def describe_error(exc: BaseException) -> str:
    """One-line 'Kind: what' for a row's error column."""
    if isinstance(exc, UnreadableInput):
        return f"UnreadableInput: {exc}"
    if isinstance(exc, OSError) and exc.strerror:  # no path: the row already names the file
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


def prepare_chunk(root: str, rels: list[str]) -> tuple[list[str], Prepared, list[tuple[str, str]]]:
    """Worker task: `(readable paths, their prepared images, [(path, read error), ...])`.

    A file that cannot be read (vanished, a directory, unreadable) is a read error; one that
    cannot be decoded is an error slot in `Prepared`. Neither costs its neighbours.
    """
    readable, data, read_errors = [], [], []
    for rel in rels:
        try:
            data.append(read_input(os.path.join(root, rel)))
            readable.append(rel)
        except OSError as exc:
            read_errors.append((rel, describe_error(exc)))
    return readable, prepare(data), read_errors


def ready() -> int:
    """No-op task used to start a worker ahead of the first real chunk; returns its pid."""
    return os.getpid()
