"""The image pool: labelled images, as clients upload them, that `handler.predictor.Predictor`
(what the server runs) gets right with the served model, so a wrong answer under load is a serving
defect (a mixed-up batch, a broken decode), never model error. `source` picks what it holds:
`mix`, the realistic traffic mix of `samples.mix` (MNIST PNGs, scans, phone photos), or `mnist`
(MNIST test digits as PNGs only). The pool itself is `samples.pool.ImagePool`; cached as JSON
under `loadtests/results/`, keyed by the source, the model file's sha256, the size and the seed."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from deploy.config import MAR_NAME, max_request_size
from project import paths
from samples.pool import ImagePool

logger = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 512
DEFAULT_SEED = 20240601
SOURCES = ("mix", "mnist")
# A request's images, base64 in JSON, must fit TorchServe's body limit; 64 KiB for the rest.
MAX_BODY_BYTES = max_request_size() - 65_536


def default_model() -> Path:
    """The archive a private server serves (`project.paths.model_store()`), else
    `project.paths.default_model()` (a remote server's model, e.g. in the compose stack)."""
    archive = paths.model_store() / MAR_NAME
    return archive if archive.is_file() else paths.default_model()


def ensure_pool(model: Path | None = None, mnist_dir: str | Path | None = None,
                size: int = DEFAULT_POOL_SIZE, seed: int = DEFAULT_SEED,
                rebuild: bool = False, source: str = "mnist") -> Path:  # fmt: skip
    """Path of the pool of `size` images of `source` for `model` (.pt or .mar, default
    `default_model()`): the first of the seeded order it gets right, built and cached when
    missing; a `mix` has 5 % (+8) more candidates than `size`, for the few it gets wrong."""
    model = Path(model or default_model())
    if not model.is_file():
        raise FileNotFoundError(f"model {model} not found; `make archive` builds it")
    if source not in SOURCES:
        raise ValueError(f"unknown pool source {source!r}: one of {SOURCES}")
    with open(model, "rb") as fh:
        sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
    from samples.mix import fingerprint  # the mix's code: a changed generator is a new pool

    code = fingerprint() if source == "mix" else "mnist"
    path = paths.RESULTS_DIR / f"pool-{code}-{sha256[:12]}-{size}-{seed}.json"
    if path.is_file() and not rebuild:
        return path
    from handler.predictor import Predictor
    from samples import digits as mnist_uploads
    from samples import mix
    from train.mnist import load_test_digits

    logger.info("building a %s image pool of %d checked with %s", source, size, model)
    digits = load_test_digits(mnist_dir)
    candidates = (mnist_uploads.as_uploads(*digits, seed=seed) if source == "mnist"
                  else mix.as_uploads(size + size // 20 + 8, seed, digits))  # fmt: skip
    kept = mnist_uploads.answered_correctly(Predictor.load(model), candidates, limit=size)
    if len(kept) < size:
        raise RuntimeError(f"only {len(kept)} {source} images are classified correctly by "
                           f"{model}; cannot build a pool of {size}")  # fmt: skip
    return ImagePool(kept.images, kept.labels, kept.indices, sha256, kept.kinds).save(path)
