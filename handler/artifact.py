"""Loading the exported model together with its self-description, from a `.pt` or a `.mar`.

The training job saves `artifacts/lenet.pt` with `torch.jit.save(..., _extra_files={METADATA_NAME:
json})` and writes the same JSON beside it as `artifacts/lenet.json`. Everything downstream (the
handler, the batch job, the archiver, the benchmarks) reads the model's name, version, variant and
normalisation from here instead of typing them again. A `.mar` is a zip whose
`MAR-INF/MANIFEST.json` names the serialized model and records the archive's name and version.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from handler import normalization

METADATA_NAME = "lenet.json"
MANIFEST_NAME = "MAR-INF/MANIFEST.json"


class ArtifactError(RuntimeError):
    """The model file is missing, unreadable or does not describe itself consistently."""


def read_manifest(mar: str | Path) -> dict:
    """The `MANIFEST.json` of a TorchServe archive (raises `ArtifactError` when unreadable)."""
    try:
        with zipfile.ZipFile(mar) as zf:
            return json.loads(zf.read(MANIFEST_NAME))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{mar} is not a readable model archive: {exc!r}") from exc


def load_torchscript(path: str | Path, device="cpu"):
    """Load a TorchScript LeNet and its metadata from a `.pt` or a `.mar`; `(module, metadata)`.

    The module is in eval mode on `device`. For a `.mar`, the serialized file its manifest names
    is read from the zip in memory, and the archive's name and version fill in the metadata's
    when it lacks them. Raises `ArtifactError` when the file is missing, has no embedded
    metadata, or was trained with normalisation constants other than `handler.normalization`'s.
    """
    import torch  # here, not at the top: reading a manifest must not need torch

    path = Path(path)
    if not path.is_file():
        hint = "`python -m deploy archive`" if path.suffix == ".mar" else "`python -m train`"
        raise ArtifactError(f"model file {path} not found; build it with {hint}")
    manifest = None
    source: str | io.BytesIO = str(path)
    if path.suffix == ".mar":
        manifest = read_manifest(path)
        try:
            with zipfile.ZipFile(path) as zf:
                source = io.BytesIO(zf.read(manifest["model"]["serializedFile"]))
        except (KeyError, zipfile.BadZipFile) as exc:
            raise ArtifactError(f"{path} holds no usable serialized model: {exc!r}") from exc
    extra = {METADATA_NAME: ""}
    try:
        module = torch.jit.load(source, map_location=device, _extra_files=extra)
    except Exception as exc:  # torch raises bare RuntimeErrors with C++ traces
        raise ArtifactError(f"cannot load TorchScript from {path}: {exc}") from exc
    if not extra[METADATA_NAME]:
        raise ArtifactError(
            f"{path} carries no {METADATA_NAME}; re-export it with `python -m train`"
        )
    metadata = json.loads(extra[METADATA_NAME])
    if manifest is not None:
        metadata.setdefault("name", manifest["model"].get("modelName"))
        metadata.setdefault("version", manifest["model"].get("modelVersion"))
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
