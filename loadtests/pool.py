"""The image pool: MNIST test digits, as PNGs, that `handler.predictor.Predictor` (what the
server runs) gets right with the served model, so a wrong answer under load is a serving defect
(a mixed-up batch, a broken decode), never model error. Cached as JSON (no pickle) under
`loadtests/results/`, keyed by the model file's sha256, the size and the seed."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy.config import MAR_NAME
from project import paths

logger = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 512
DEFAULT_SEED = 20240601


@dataclass
class ImagePool:
    """PNG-encoded digits with their labels; `b64` holds the base64 text of each PNG."""

    pngs: list[bytes] = field(repr=False)
    labels: list[int]
    mnist_indices: list[int]
    model_sha256: str = ""

    def __post_init__(self) -> None:
        if not self.pngs or len(self.pngs) != len(self.labels):
            raise ValueError(f"a pool needs images, one label each: {len(self.labels)} labels "
                             f"for {len(self.pngs)} images")  # fmt: skip
        self.b64 = [base64.b64encode(png).decode("ascii") for png in self.pngs]

    def __len__(self) -> int:
        return len(self.pngs)

    def pick(self, rng: random.Random, count: int = 1) -> list[int]:
        """`count` random pool positions, distinct within one call."""
        return rng.sample(range(len(self)), k=min(count, len(self)))

    def save(self, path: Path) -> Path:
        """Write the pool as JSON, atomically (parallel runs share the cache)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self) | {"pngs": self.b64}))
        return tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ImagePool:
        """Read a pool written by `save`."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"no image pool {path}: `python -m loadtests pool` builds one")
        data = json.loads(Path(path).read_text())
        return cls(**data | {"pngs": [base64.b64decode(text) for text in data["pngs"]]})


def default_model() -> Path:
    """The archive a private server serves (`project.paths.model_store()`), else
    `project.paths.default_model()` (a remote server's model, e.g. in the compose stack)."""
    archive = paths.model_store() / MAR_NAME
    return archive if archive.is_file() else paths.default_model()


def ensure_pool(model: Path | None = None, mnist_dir: str | Path | None = None,
                size: int = DEFAULT_POOL_SIZE, seed: int = DEFAULT_SEED,
                rebuild: bool = False) -> Path:  # fmt: skip
    """Path of the pool of `size` digits for `model` (.pt or .mar, default `default_model()`):
    the first of the seeded MNIST test order it gets right, built and cached when missing."""
    model = Path(model or default_model())
    if not model.is_file():
        raise FileNotFoundError(f"model {model} not found; `make archive` builds it")
    with open(model, "rb") as fh:
        sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
    path = paths.RESULTS_DIR / f"pool-{sha256[:12]}-{size}-{seed}.json"
    if path.is_file() and not rebuild:
        return path
    from handler.predictor import Predictor
    from samples.digits import answered_correctly, as_uploads
    from train.mnist import load_test_digits

    logger.info("building an image pool of %d digits checked with %s", size, model)
    kept = answered_correctly(Predictor.load(model),
                              as_uploads(*load_test_digits(mnist_dir), seed=seed), limit=size)
    if len(kept) < size:
        raise RuntimeError(f"only {len(kept)} MNIST test digits are classified correctly by "
                           f"{model}; cannot build a pool of {size}")  # fmt: skip
    return ImagePool(kept.images, kept.labels, kept.indices, sha256).save(path)
