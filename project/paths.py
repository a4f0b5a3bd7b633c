"""Default locations, built from this file's position, never from the current directory.

Each can be moved by one environment variable; every tool reads it from here.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_DIR = REPO_ROOT / "artifacts"
DEFAULT_ARTIFACT = ARTIFACTS_DIR / "lenet.pt"
DEPLOY_DIR = REPO_ROOT / "deploy"
RESULTS_DIR = REPO_ROOT / "loadtests" / "results"


def model_store() -> Path:
    """The folder holding `lenet.mar`: `$LENET_MODEL_STORE`, else the repository's model_store/."""
    return Path(os.environ.get("LENET_MODEL_STORE") or REPO_ROOT / "model_store")


def run_dir() -> Path:
    """The launcher's working directory (pid file, logs, key file): `$LENET_RUN_DIR` or .run/."""
    return Path(os.environ.get("LENET_RUN_DIR") or REPO_ROOT / ".run").resolve()


def default_model() -> Path:
    """The model a client scores with when none is named: `$LENET_MODEL`, else the trained
    artifact, else the one inside the archive."""
    if os.environ.get("LENET_MODEL"):
        return Path(os.environ["LENET_MODEL"])
    if DEFAULT_ARTIFACT.is_file():
        return DEFAULT_ARTIFACT
    return model_store() / "lenet.mar"
