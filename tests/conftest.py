"""Shared fixtures. Names are stable: the batch, load, reliability and security tests use them.

- `mar_path` (session): `model_store/lenet.mar`; integration tests SKIP with the reason (build it
  with `make archive`) when it is missing.
- `torchserve` (session): ONE real TorchServe (`deploy.server.TorchServe.private`) serving that
  archive on free ports with token auth on and server-side batching (batchSize 16,
  maxBatchDelay 20 ms, so concurrent requests really share a forward pass). Attributes:
  `inference_url`, `management_url`, `metrics_url`, `predict_url`, `inference_token`,
  `management_token`, `key_file`, `run_dir`, `pid`, `worker_pids()`, `workers()`. Do not stop
  or reconfigure it.
- `torchserve_factory` (function): `torchserve_factory(**kwargs)` starts a PRIVATE server
  (`TorchServe.private(run_dir, **kwargs)`, `deploy.config.ServerConfig` fields, e.g.
  `model_config_overrides={"batchSize": 4}`, `token_auth=False`,
  `env={...}`, `stock=True`) on free ports in its own run dir and returns it started; pass
  `start=False` to get it unstarted. Every server it made is stopped at teardown.
- `mnist_test` (session): `(images, labels)` of the 10,000 MNIST TEST digits, uint8 `(N, 28, 28)`
  and `(N,)`, from `$MNIST_DIR` or the download cache (skips when neither has them; never
  downloads during tests).
- `mnist_png` (session): `(png_bytes, label)` of the first test digit.
- `png_encode` (session): function turning a 28x28 uint8 array into PNG bytes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploy.config import MAR_NAME
from deploy.server import TorchServe
from project import paths

SESSION_MODEL_CONFIG = {"batchSize": 16, "maxBatchDelay": 20}


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 array (grayscale), lossless."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def mar_path() -> Path:
    mar = paths.model_store() / MAR_NAME
    if not mar.is_file():
        pytest.skip(f"{mar} is missing: build it with `make archive` (needs artifacts/lenet.pt)")
    return mar


@pytest.fixture(scope="session")
def torchserve(mar_path: Path, tmp_path_factory) -> Iterator[TorchServe]:
    server = TorchServe.private(
        tmp_path_factory.mktemp("torchserve-session"),
        model_store=mar_path.parent,
        model_config_overrides=SESSION_MODEL_CONFIG,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def torchserve_factory(mar_path: Path, tmp_path) -> Iterator[Callable[..., TorchServe]]:
    made: list[TorchServe] = []

    def make(start: bool = True, **kwargs) -> TorchServe:
        kwargs.setdefault("model_store", mar_path.parent)
        run_dir = kwargs.pop("run_dir", tmp_path / f"torchserve-{len(made)}")
        server = TorchServe.private(run_dir, **kwargs)
        made.append(server)
        return server.start() if start else server

    yield make
    errors = []
    for server in made:
        try:
            server.stop()
        except Exception as exc:  # stop every server even if one fails to stop cleanly
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    from train.mnist import DEFAULT_CACHE_DIR, MnistError, load_mnist

    data_dir = os.environ.get("MNIST_DIR") or DEFAULT_CACHE_DIR
    if not Path(data_dir).is_dir():
        pytest.skip(f"MNIST not found: set MNIST_DIR (looked in {data_dir}); tests never download")
    try:
        _, _, images, labels = load_mnist(data_dir)
    except MnistError as exc:
        pytest.skip(f"MNIST unusable in {data_dir}: {exc}")
    return images, labels


@pytest.fixture(scope="session")
def png_encode() -> Callable[[np.ndarray], bytes]:
    return encode_png


@pytest.fixture(scope="session")
def mnist_png(mnist_test) -> tuple[bytes, int]:
    images, labels = mnist_test
    return encode_png(images[0]), int(labels[0])
