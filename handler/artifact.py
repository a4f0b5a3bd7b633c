"""Loading the exported model together with its self-description.

The training job saves `artifacts/lenet.pt` with `torch.jit.save(..., _extra_files={METADATA_NAME:
json})` and writes the same JSON beside it as `artifacts/lenet.json`. Everything downstream (the
handler, the batch job, the archiver) reads the model's version, variant and normalisation from
here instead of typing them again.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from handler import normalization

METADATA_NAME = "lenet.json"


class ArtifactError(RuntimeError):
    """The model file is missing, unreadable or does not describe itself consistently."""


def load_torchscript(path: str | Path, device: str | torch.device = "cpu"):
    """Load a TorchScript LeNet and its metadata; returns `(module, metadata)` in eval mode.

    Raises `ArtifactError` when the file is missing, has no embedded metadata, or was trained
    with normalisation constants other than `handler.normalization`'s.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file {path} not found; train first with `python -m train`")
    extra = {METADATA_NAME: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:  # torch raises bare RuntimeErrors with C++ traces
        raise ArtifactError(f"cannot load TorchScript from {path}: {exc}") from exc
    if not extra[METADATA_NAME]:
        raise ArtifactError(
            f"{path} carries no {METADATA_NAME}; re-export it with `python -m train`"
        )
    metadata = json.loads(extra[METADATA_NAME])
    check_normalization(metadata, source=str(path))
    module.eval()
    return module, metadata


def check_normalization(metadata: dict, source: str = "artifact") -> None:
    """Refuse a model trained with other normalisation than the one serving applies."""
    norm = metadata.get("normalization", {})
    if norm.get("mean") != [normalization.MNIST_MEAN] or norm.get("std") != [
        normalization.MNIST_STD
    ]:
        raise ArtifactError(
            f"{source} was trained with normalisation {norm}, but serving applies "
            f"mean={normalization.MNIST_MEAN}, std={normalization.MNIST_STD}"
        )
