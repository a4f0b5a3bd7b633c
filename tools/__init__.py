"""Tools for people working on the project, never shipped in the .mar: the preprocessing,
limits and explanations benchmarks, and the preprocessing baseline."""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path

from project.paths import RESULTS_DIR


def begin_run(kind: str) -> tuple[str, Path]:
    """Start a benchmark run: `(stamp, folder)`, the folder `loadtests/results/<kind>/` created.

    SIGTERM (a CI timeout, `kill`) then unwinds like Ctrl-C, so the `finally` blocks that stop
    the run's private servers still run.
    """
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    folder = RESULTS_DIR / kind
    folder.mkdir(parents=True, exist_ok=True)
    return datetime.now().strftime("%Y%m%d-%H%M%S"), folder
