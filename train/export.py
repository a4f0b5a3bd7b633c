"""Writing the model artifacts: TorchScript with embedded metadata, the JSON beside it, ONNX.

Every file is written to a temporary name in the target folder and renamed into place, so a
crash never leaves a half-written `lenet.pt` for the archiver or the handler to pick up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from handler.artifact import METADATA_NAME
from project.paths import REPO_ROOT

logger = logging.getLogger(__name__)

ONNX_OPSET = 18


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; artifacts must be readable like any other file (the archiver,
        # a container user), so apply the usual umask-based mode before publishing.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: Path, text: str) -> None:
    """Write `text` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def git_commit() -> str:
    """The repository's HEAD commit, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_torchscript(model: nn.Module, path: Path, metadata: dict) -> torch.jit.ScriptModule:
    """Script `model` (on CPU, eval mode) and save it with `metadata` embedded as lenet.json.

    Also writes the same JSON next to it (`path` with suffix .json). Returns the scripted module.
    """
    model = model.cpu().eval()
    json_text = json.dumps(metadata, indent=2, sort_keys=True)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated, but it is the format TorchServe 0.12's
        # handler and the artifact contract use; the warning is not actionable here.
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model)
        torch.jit.save(scripted, str(tmp), _extra_files={METADATA_NAME: json_text})
    write_text_atomic(path.with_suffix(".json"), json_text + "\n")
    logger.info("wrote %s and %s", path, path.with_suffix(".json"))
    return scripted


def save_onnx(model: nn.Module, path: Path, opset: int = ONNX_OPSET) -> None:
    """Export `model` to ONNX with a dynamic batch axis (input "input", output "logits").

    Uses the torch.export-based exporter (the default in torch 2.13; needs onnxscript) with
    all weights embedded in the one file so the atomic rename moves everything.
    """
    # The exporter warns once per missing torchvision op; LeNet uses none of them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    model = model.cpu().eval()
    example = (torch.zeros(2, 1, 28, 28),)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # torch.export's pytree emits a FutureWarning about its own internals (not actionable).
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            model,
            example,
            input_names=["input"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )
        program.save(str(tmp), external_data=False)
    logger.info("wrote %s (opset %d)", path, opset)
