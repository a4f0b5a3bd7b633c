"""The import layering of docs/architecture.md, checked on the source: no cycles between the
top-level packages, and the archive's `handler/` imports nothing else of the project.

Every `import` and `from ... import` counts, including those inside functions, so a lazy import
cannot smuggle a cycle back in.
"""

from __future__ import annotations

import ast
from pathlib import Path

from project.paths import REPO_ROOT

# Which project packages each top-level package may import (its own is always allowed).
# handler ships alone in the .mar; each line may only use the lines above it.
ALLOWED = {
    "handler": set(),
    "project": set(),
    "train": {"handler", "project"},
    "samples": {"handler", "project", "train"},
    "deploy": {"handler", "project"},
    "client": {"handler", "project", "deploy", "samples", "train"},
    "batch": {"handler", "project", "deploy", "client", "samples", "train"},
    "loadtests": {"handler", "project", "deploy", "client", "samples", "train"},
    "evaluation": {"handler", "project", "deploy", "client", "samples", "train"},
    "web": {"handler", "project", "deploy", "client"},
    "tools": {"handler", "project", "samples", "train"},
}


def project_imports(package: str) -> dict[str, set[str]]:
    """{imported top-level project package: files of `package` importing it}."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ALLOWED and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def test_every_top_level_package_is_in_the_layering():
    packages = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages <= set(ALLOWED), f"add {sorted(packages - set(ALLOWED))} to ALLOWED"


def test_packages_import_only_the_layers_below_them():
    wrong = {
        f"{package} -> {target}": sorted(files)
        for package in ALLOWED
        if (REPO_ROOT / package).is_dir()
        for target, files in project_imports(package).items()
        if target not in ALLOWED[package]
    }
    assert not wrong, f"imports against docs/architecture.md's layering: {wrong}"


def test_the_allowed_layering_itself_has_no_cycle():
    order: list[str] = []
    remaining = {k: set(v) for k, v in ALLOWED.items()}
    while remaining:
        ready = sorted(k for k, deps in remaining.items() if deps <= set(order))
        assert ready, f"cycle among {sorted(remaining)}"
        order += ready
        for k in ready:
            del remaining[k]
