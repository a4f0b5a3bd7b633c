"""Build `model_store/lenet.mar` from the trained TorchScript artifact.

The archive holds:
- `lenet.pt`: the TorchScript model (serialized-file). No model .py: the handler loads the
  scripted graph and never needs a copy of the model class;
- `lenet_handler.py` at the top level, where TorchServe imports its handler from;
- `handler/`: the whole `handler` package, as it is in the repository (it holds exactly what
  serving needs: `handler/__init__.py` says so). TorchServe puts the extracted model dir on the
  worker's sys.path, so `from handler.preprocessing import ...` resolves inside the archive as
  it does in the repository;
- `model-config.yaml`: workers, batching and timeouts (deploy/model-config.yaml).

The archive is built with the real `torch-model-archiver` in a temporary directory and renamed
into place, so a failed build never leaves a half-written .mar behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import handler
from deploy.config import MAR_NAME, MODEL_CONFIG
from handler import MODEL_NAME
from handler.artifact import load_torchscript
from project import paths

logger = logging.getLogger(__name__)

HANDLER_DIR = Path(handler.__file__).resolve().parent
HANDLER_FILE = HANDLER_DIR / "lenet_handler.py"


class ArchiveError(RuntimeError):
    """The archive could not be built; the message says which input or step failed."""


def archiver_command() -> list[str]:
    """The torch-model-archiver CLI of this interpreter's environment."""
    script = Path(sys.executable).with_name("torch-model-archiver")
    return (
        [str(script)]
        if script.exists()
        else [sys.executable, "-m", "model_archiver.model_packaging"]
    )


def build_archive(
    artifact: Path = paths.DEFAULT_ARTIFACT,
    model_store: Path | None = None,
    model_config: Path = MODEL_CONFIG,
    version: str | None = None,
) -> Path:
    """Write `<model_store>/lenet.mar` atomically and return its path.

    The version defaults to the one recorded in the artifact's embedded metadata.
    """
    artifact = Path(artifact).resolve()
    model_store = Path(model_store or paths.model_store()).resolve()
    for path in (artifact, model_config, HANDLER_FILE):
        if not Path(path).is_file():
            raise ArchiveError(f"cannot build the archive: {path} does not exist")
    _, metadata = load_torchscript(artifact)  # also checks the normalisation it was trained with
    version = version or str(metadata.get("version") or "")
    if not version:
        raise ArchiveError(f"{artifact} records no version; pass --version")
    model_store.mkdir(parents=True, exist_ok=True)
    target = model_store / MAR_NAME
    # The temp dir sits in the model store so the final rename stays on one file system.
    with tempfile.TemporaryDirectory(prefix=".lenet-archive-", dir=model_store) as tmp:
        tmp = Path(tmp)
        extra = tmp / "extra"
        shutil.copytree(HANDLER_DIR, extra / "handler",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
        cmd = [
            *archiver_command(),
            "--model-name", MODEL_NAME,
            "--version", version,
            "--serialized-file", str(artifact),
            "--handler", str(HANDLER_FILE),
            # A directory: the archiver copies its children, so `handler/` stays a package.
            "--extra-files", str(extra),
            "--config-file", str(model_config),
            "--export-path", str(tmp),
        ]  # fmt: skip
        logger.info("running %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        built = tmp / MAR_NAME
        if proc.returncode != 0 or not built.is_file():
            raise ArchiveError(
                f"torch-model-archiver failed (exit {proc.returncode}):\n"
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        os.replace(built, target)
    logger.info("wrote %s (lenet %s)", target, version)
    return target


def archive_contents(mar: Path) -> list[str]:
    """The file names inside a .mar (a zip file)."""
    with zipfile.ZipFile(mar) as zf:
        return sorted(zf.namelist())
