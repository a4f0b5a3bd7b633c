"""Finding the files to score, in a deterministic order, without listing the whole tree.

The walk is streaming (one directory's entries in memory at a time) and sorted per directory,
so two runs over the same tree yield the same sequence; that is what lets `--resume` skip a
prefix cheaply and what makes the output order reproducible.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from PIL import Image

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (with the dot) that the installed Pillow can open."""
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN)


def matches(rel_path: str, glob: str | None) -> bool:
    """Whether a relative POSIX path is selected.

    Without `glob`, by extension (any format Pillow reads). With `glob`, by fnmatch against the
    relative path (`*` also crosses `/`), or against the file name when the pattern has no `/`.
    """
    if glob is None:
        return os.path.splitext(rel_path)[1].lower() in image_extensions()
    if "/" in glob:
        return fnmatch.fnmatchcase(rel_path, glob.removeprefix("**/")) or fnmatch.fnmatchcase(
            rel_path, glob
        )
    return fnmatch.fnmatchcase(rel_path.rsplit("/", 1)[-1], glob)


def iter_files(root: str | Path, glob: str | None = None) -> Iterator[str]:
    """Yield the selected files under `root` as POSIX paths relative to it, sorted per folder.

    Regular files, and also entries that cannot be stat'ed as directories (dangling symlinks,
    sockets): they are yielded so that scoring reports them as error rows instead of silently
    dropping them. Symlinked directories are not followed (no cycles). Folders that cannot be
    listed are logged and skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"input folder {root} does not exist or is not a folder")

    def walk(folder: Path, prefix: str) -> Iterator[str]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            logger.warning("cannot list folder %s: %s", folder, exc)
            return
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                yield from walk(Path(entry.path), rel + "/")
            elif matches(rel, glob):
                yield rel

    yield from walk(root, "")
