"""One run per output: an exclusive lock (flock on `<output>.lock`) held for the whole run, so
two runs can never interleave or duplicate rows."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from batch.output import OutputError


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
