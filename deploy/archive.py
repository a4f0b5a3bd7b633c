"""Build `model_store/lenet.mar` from the trained TorchScript artifact.

The archive holds:
- `lenet.pt`: the TorchScript model (serialized-file). No model .py: the handler loads the
  scripted graph and never needs a copy of the model class;
- `lenet_handler.py`: the handler, at the top level where TorchServe imports it;
- `handler/`: the handler's own modules as a package (normalization, preprocessing, schemas,
  artifact, request_parsing). TorchServe puts the extracted model dir on the worker's sys.path,
  so `from handler.preprocessing import ...` resolves inside the archive exactly as it does in the
  repository; flattening them would break their own `from handler.x import` lines;
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

from handler.artifact import load_torchscript

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "lenet"
DEFAULT_ARTIFACT = REPO_ROOT / "artifacts" / "lenet.pt"
DEFAULT_MODEL_STORE = REPO_ROOT / "model_store"
MODEL_CONFIG = REPO_ROOT / "deploy" / "model-config.yaml"
HANDLER_DIR = REPO_ROOT / "handler"
HANDLER_FILE = HANDLER_DIR / "lenet_handler.py"
# Every module of `handler/` the handler imports, directly or through another module.
HANDLER_MODULES = (
    "__init__.py",
    "artifact.py",
    "normalization.py",
    "preprocessing.py",
    "request_parsing.py",
    "schemas.py",
)


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
    artifact: Path = DEFAULT_ARTIFACT,
    model_store: Path = DEFAULT_MODEL_STORE,
    model_config: Path = MODEL_CONFIG,
    version: str | None = None,
) -> Path:
    """Write `<model_store>/lenet.mar` atomically and return its path.

    The version defaults to the one recorded in the artifact's embedded metadata.
    """
    artifact, model_store = Path(artifact).resolve(), Path(model_store).resolve()
    for path in (artifact, model_config, HANDLER_FILE, *(HANDLER_DIR / m for m in HANDLER_MODULES)):
        if not Path(path).is_file():
            raise ArchiveError(f"cannot build the archive: {path} does not exist")
    _, metadata = load_torchscript(artifact)  # also checks the normalisation it was trained with
    version = version or str(metadata.get("version") or "")
    if not version:
        raise ArchiveError(f"{artifact} records no version; pass --version")
    model_store.mkdir(parents=True, exist_ok=True)
    target = model_store / f"{MODEL_NAME}.mar"
    # The temp dir sits in the model store so the final rename stays on one file system.
    with tempfile.TemporaryDirectory(prefix=".lenet-archive-", dir=model_store) as tmp:
        tmp = Path(tmp)
        extra = tmp / "extra"
        (extra / "handler").mkdir(parents=True)
        for module in HANDLER_MODULES:
            shutil.copy2(HANDLER_DIR / module, extra / "handler" / module)
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
        built = tmp / f"{MODEL_NAME}.mar"
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
