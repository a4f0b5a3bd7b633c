"""Every command the Makefile runs names a module and a path that exist: `make run` is the
README's first command, and a module moved without updating it fails only at the end of a run."""

from __future__ import annotations

import importlib.util
import re

from project.paths import REPO_ROOT

MAKEFILE = (REPO_ROOT / "Makefile").read_text()


def test_every_python_module_the_makefile_runs_exists():
    modules = set(re.findall(r"\$\(PY\) -m ([\w.]+)", MAKEFILE))
    assert {"train", "deploy", "client", "pytest"} <= modules
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert not missing, f"the Makefile runs modules that do not exist: {missing}"


def test_every_tests_path_the_makefile_names_exists():
    paths = set(re.findall(r"\b(tests/[\w/.]+)", MAKEFILE))
    assert paths, "the Makefile names no test path"
    missing = sorted(p for p in paths if not (REPO_ROOT / p).exists())
    assert not missing, f"the Makefile names test paths that do not exist: {missing}"
