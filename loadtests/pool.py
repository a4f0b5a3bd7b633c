"""The image pool: real MNIST test digits, as PNG bytes, that the model gets right offline.

Every load-test request draws its images from this pool and checks the returned digit against
the label. The pool keeps only digits that the local model classifies correctly through the
shared preprocessing (`handler.preprocessing.preprocess`), so any wrong answer under load is a
real serving defect (a mixed-up batch, a wrong worker, a broken decode), never model error.

The pool is built once per model file and cached as an `.npz` (no pickles) under
`loadtests/results/`, keyed by the model's sha256, the pool size and the seed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loadtests import REPO_ROOT, RESULTS_DIR

logger = logging.getLogger(__name__)

DEFAULT_MODEL = REPO_ROOT / "artifacts" / "lenet.pt"
DEFAULT_POOL_SIZE = 512
DEFAULT_SEED = 20240601


@dataclass
class ImagePool:
    """PNG-encoded digits with their labels; `b64` holds the base64 text of each PNG."""

    pngs: list[bytes]
    labels: list[int]
    mnist_indices: list[int]
    model_sha256: str = ""
    b64: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.pngs:
            raise ValueError("an image pool needs at least one image")
        if len(self.pngs) != len(self.labels):
            raise ValueError(f"{len(self.pngs)} images but {len(self.labels)} labels")
        self.b64 = [base64.b64encode(png).decode("ascii") for png in self.pngs]

    def __len__(self) -> int:
        return len(self.pngs)

    def pick(self, rng: random.Random, count: int = 1) -> list[int]:
        """`count` random pool positions (with replacement across calls, distinct within)."""
        return rng.sample(range(len(self)), k=min(count, len(self)))

    def save(self, path: Path) -> Path:
        """Write the pool as a pickle-free `.npz`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(p) for p in self.pngs], dtype=np.int64)
        blob = np.frombuffer(b"".join(self.pngs), dtype=np.uint8)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            png_blob=blob,
            offsets=offsets,
            labels=np.asarray(self.labels, dtype=np.int64),
            mnist_indices=np.asarray(self.mnist_indices, dtype=np.int64),
            model_sha256=np.asarray(self.model_sha256),
        )
        tmp.replace(path)  # atomic: parallel runs never read a half-written pool
        return path

    @classmethod
    def load(cls, path: Path) -> ImagePool:
        """Read a pool written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"image pool {path} not found; build it with `python -m loadtests pool`"
            )
        with np.load(path, allow_pickle=False) as data:
            blob = data["png_blob"].tobytes()
            offsets = data["offsets"].tolist()
            return cls(
                pngs=[blob[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)],
                labels=data["labels"].tolist(),
                mnist_indices=data["mnist_indices"].tolist(),
                model_sha256=str(data["model_sha256"]),
            )


def encode_png(image: np.ndarray) -> bytes:
    """A 28x28 uint8 MNIST digit as PNG bytes (grayscale, as a client would upload it)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mnist_test_digits(mnist_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images (N, 28, 28) uint8 and labels (dir, else $MNIST_DIR/cache)."""
    from train.mnist import load_test_digits

    images, labels = load_test_digits(mnist_dir)
    return np.asarray(images, dtype=np.uint8).reshape(-1, 28, 28), np.asarray(labels)


def default_pool_path(model_path: Path, size: int, seed: int) -> Path:
    """Cache location: one file per (model bytes, size, seed)."""
    return RESULTS_DIR / f"pool-{file_sha256(model_path)[:12]}-{size}-{seed}.npz"


def build_pool(
    model_path: Path = DEFAULT_MODEL,
    mnist_dir: str | Path | None = None,
    size: int = DEFAULT_POOL_SIZE,
    seed: int = DEFAULT_SEED,
) -> ImagePool:
    """Encode random MNIST test digits as PNG and keep the first `size` the model gets right.

    Each candidate goes through exactly what the server does: PNG decode + the shared
    `preprocess`, then the TorchScript model.
    """
    import torch

    from handler.artifact import load_torchscript
    from handler.preprocessing import preprocess

    model, _ = load_torchscript(model_path)
    images, labels = mnist_test_digits(mnist_dir)
    order = np.random.default_rng(seed).permutation(len(images))
    pngs: list[bytes] = []
    kept_labels: list[int] = []
    kept_indices: list[int] = []
    rejected = 0
    chunk = 256
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        candidates = [encode_png(images[i]) for i in idx]
        batch = torch.stack(
            [torch.as_tensor(np.asarray(preprocess(png))).reshape(1, 28, 28) for png in candidates]
        )
        with torch.inference_mode():
            predicted = model(batch.float()).argmax(dim=1).tolist()
        for i, png, digit in zip(idx.tolist(), candidates, predicted, strict=True):
            if digit != int(labels[i]):
                rejected += 1
                continue
            pngs.append(png)
            kept_labels.append(int(labels[i]))
            kept_indices.append(i)
            if len(pngs) == size:
                logger.info("pool: kept %d digits, left out %d misclassified", size, rejected)
                return ImagePool(pngs, kept_labels, kept_indices, file_sha256(model_path))
    raise RuntimeError(
        f"only {len(pngs)} of {len(order)} MNIST test digits are classified correctly by "
        f"{model_path}; cannot build a pool of {size}"
    )


def model_in_archive(mar: str | Path) -> Path:
    """The serialized model inside a TorchServe archive, extracted once (cached by content).

    Building the pool from the model the server really serves (rather than artifacts/lenet.pt,
    which a retrain may have replaced since the archive was built) keeps "every pool digit is
    classified correctly" true for the server under test.
    """
    mar = Path(mar)
    try:
        with zipfile.ZipFile(mar) as zf:
            manifest = json.loads(zf.read("MAR-INF/MANIFEST.json"))
            data = zf.read(manifest["model"]["serializedFile"])
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise FileNotFoundError(f"cannot read the model inside archive {mar}: {exc}") from exc
    path = RESULTS_DIR / "models" / f"{hashlib.sha256(data).hexdigest()[:12]}.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def resolve_model(model_path: str | Path | None = None) -> Path:
    """The local model: the argument, else `$LENET_MODEL`, else artifacts/lenet.pt."""
    return Path(model_path or os.environ.get("LENET_MODEL", DEFAULT_MODEL))


def served_model(model_path: str | Path | None = None, remote: bool = False) -> Path:
    """The model to build the pool from: the argument; for a local server the model inside
    the .mar it serves (`$LENET_MODEL_STORE` or model_store/); else `resolve_model()`."""
    if model_path or remote:
        return resolve_model(model_path)
    store = Path(os.environ.get("LENET_MODEL_STORE", REPO_ROOT / "model_store"))
    mar = store / "lenet.mar"
    return model_in_archive(mar) if mar.is_file() else resolve_model()


def ensure_pool(
    model_path: Path | None = None,
    mnist_dir: str | Path | None = None,
    size: int = DEFAULT_POOL_SIZE,
    seed: int = DEFAULT_SEED,
    path: Path | None = None,
    rebuild: bool = False,
) -> Path:
    """Path of a pool for this model, building and caching it first when needed."""
    model_path = resolve_model(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(
            f"model {model_path} not found: the pool is checked against the local model; "
            "train it first with `make train` (or pass --model)"
        )
    path = Path(path) if path else default_pool_path(model_path, size, seed)
    if path.is_file() and not rebuild:
        return path
    logger.info("building image pool of %d digits from %s", size, model_path)
    return build_pool(model_path, mnist_dir, size, seed).save(path)
