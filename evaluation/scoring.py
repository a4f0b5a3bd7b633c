"""Scoring uploads with a model: in-process (the handler's own path) and through TorchServe.

In-process: the TorchScript model from `handler.artifact.load_torchscript` on inputs made by
`handler.preprocessing.preprocess` (`samples.realworld.model_inputs`, cached beside the set since
they do not depend on the model), i.e. exactly what the handler runs, without HTTP.

HTTP: the artifact is archived into a temporary model store with `deploy.archive`, served by a
private `deploy.launcher.TorchServe` on free ports (token auth on) and queried with the
project's `LenetClient` in multi-image requests; the server is stopped afterwards.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from handler.artifact import load_torchscript

logger = logging.getLogger(__name__)

PER_REQUEST = 50  # images per HTTP request: 3,000 images in 60 round trips


def logits_in_process(model_path: Path, inputs: np.ndarray, batch: int = 1000) -> np.ndarray:
    """`(N, 10)` float64 logits of the TorchScript model at `model_path` on `inputs`."""
    module, _ = load_torchscript(model_path)
    with torch.inference_mode():
        chunks = [
            module(torch.from_numpy(inputs[i : i + batch])).double().numpy()
            for i in range(0, len(inputs), batch)
        ]
    return np.concatenate(chunks) if chunks else np.zeros((0, 10))


def probabilities_over_http(model_path: Path, uploads: list[bytes]) -> np.ndarray:
    """`(N, 10)` probabilities the served model answers for `uploads` through the HTTP API.

    Archives `model_path`, starts a private TorchServe on free ports, sends the uploads in
    multi-image requests, stops the server. An upload the server refuses raises `RuntimeError`.
    """
    from deploy.launcher import TorchServe, free_port
    from handler.client import LenetClient

    from deploy.archive import build_archive
    from handler.schemas import Prediction

    with tempfile.TemporaryDirectory(prefix="lenet-eval-") as tmp:
        store = build_archive(Path(model_path), model_store=Path(tmp) / "model_store").parent
        server = TorchServe(
            model_store=store,
            run_dir=Path(tmp) / "run",
            inference_port=free_port(),
            management_port=free_port(),
            metrics_port=free_port(),
            grpc_ports=(free_port(), free_port()),
            token_auth=True,
        )
        with server:  # starts it, and stops it however the block ends
            client = LenetClient(server.inference_url, token=server.inference_token, timeout=120)
            answers = []
            with client:
                for start in range(0, len(uploads), PER_REQUEST):
                    answers += client.predict(uploads[start : start + PER_REQUEST])
    refused = [i for i, a in enumerate(answers) if not isinstance(a, Prediction)]
    if refused:
        raise RuntimeError(
            f"the server refused {len(refused)} uploads, e.g. #{refused[0]}: {answers[refused[0]]}"
        )
    return np.array([a.probabilities for a in answers], dtype=np.float64)


def logits_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Logits equivalent to `probabilities` up to a per-row constant: `log p`.

    softmax(log p / T) equals softmax(logits / T), so the HTTP answers can be recalibrated. Zero
    probabilities (float32 underflow) are floored at 1e-45, far below anything that moves a
    calibrated score.
    """
    return np.log(np.maximum(probabilities, 1e-45))
