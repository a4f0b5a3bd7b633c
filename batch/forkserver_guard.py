"""Imported by the batch job's multiprocessing fork server only (its preload list): the fork
server then dies with the job, whatever signal ends the job, and its workers with it.

Never import this module elsewhere: it ties the importing process's life to its parent's.
"""

from __future__ import annotations

import os

from batch.decode import PARENT_PID_ENV, die_with_parent

_parent = os.environ.get(PARENT_PID_ENV)
die_with_parent(int(_parent) if _parent else None)
