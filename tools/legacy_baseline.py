"""The preprocessing benchmark's baseline: `handler/preprocessing.py` as of commit bf77909, the
module as it was before its pixel work moved to OpenCV, loaded straight from git.

History lives in git, not in a copy: `load()` runs `git show bf77909:handler/preprocessing.py`
in the repository and executes that source as a module of its own. The old module imports only
numpy, Pillow and `handler.normalization` (IMAGE_SIZE, normalize), which still exist.
"""

from __future__ import annotations

import subprocess
import sys
import types

from project.paths import REPO_ROOT

COMMIT = "bf77909"
PATH = "handler/preprocessing.py"
# Private, so nothing imports it by accident; registered so the load happens once a process.
MODULE_NAME = f"_legacy_preprocessing_{COMMIT}"


class BaselineUnavailable(RuntimeError):
    """The baseline's commit cannot be read (no git, a shallow clone, a tarball)."""


def available() -> bool:
    """Whether git can reach the baseline's commit in this checkout."""
    try:
        found = subprocess.run(["git", "cat-file", "-e", f"{COMMIT}^{{commit}}"], cwd=REPO_ROOT,
                               capture_output=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return found.returncode == 0


def unavailable_reason() -> str:
    """What is missing and how to get it, for an error message or a test's skip."""
    return (f"the preprocessing baseline {COMMIT}:{PATH} is not in this checkout's git history "
            "(a shallow clone or a tarball?): run `git fetch --unshallow`, or work in a full clone")


def load() -> types.ModuleType:
    """The baseline module (`preprocess`, `decode_image`, `to_mnist`, ...), loaded once a process.

    Raises BaselineUnavailable when git or the commit is not there.
    """
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    try:
        shown = subprocess.run(["git", "show", f"{COMMIT}:{PATH}"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise BaselineUnavailable(f"{unavailable_reason()} ({exc})") from exc
    if shown.returncode != 0:
        raise BaselineUnavailable(f"{unavailable_reason()} (git: {shown.stderr.strip()})")
    module = types.ModuleType(MODULE_NAME)
    module.__file__ = f"{COMMIT}:{PATH}"
    sys.modules[MODULE_NAME] = module
    try:
        exec(compile(shown.stdout, module.__file__, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[MODULE_NAME]
        raise
    return module
