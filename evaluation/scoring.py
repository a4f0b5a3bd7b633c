"""Scoring uploads with a model: in-process (the handler's own predictor) and through TorchServe.

In-process: `handler.predictor.Predictor` on inputs made by `handler.preprocessing.preprocess`
(`samples.realworld.model_inputs`, cached beside the set since they do not depend on the model),
i.e. exactly what the handler runs, without HTTP. Its raw logits are kept, so the report can
show the scores before and after the artifact's temperature.

HTTP: the artifact is archived into a temporary model store with `deploy.archive`, served by a
private `deploy.server.TorchServe` on free ports (token auth on) and queried with the project's
`client.LenetClient`; the server is stopped afterwards.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from handler.predictor import Predictor

logger = logging.getLogger(__name__)

PER_REQUEST = 8  # images per HTTP request, as the batch job sends them (within the limits)


def logits_in_process(model_path: Path, inputs: np.ndarray, batch: int = 1000) -> np.ndarray:
    """`(N, 10)` float64 logits of the model at `model_path` (`.pt` or `.mar`) on `inputs`."""
    predictor = Predictor.load(model_path, "cpu")
    chunks = [predictor.logits(inputs[i : i + batch]) for i in range(0, len(inputs), batch)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 10))


def probabilities_over_http(model_path: Path, uploads: list[bytes]) -> np.ndarray:
    """`(N, 10)` probabilities the served model answers for `uploads` through the HTTP API
    (calibrated, as the server answers them).

    Archives `model_path`, starts a private TorchServe on free ports, sends the uploads in
    multi-image requests, stops the server. An upload the server refuses raises `RuntimeError`.
    """
    from client import LenetClient
    from deploy.archive import build_archive
    from deploy.server import TorchServe
    from handler.schemas import Prediction

    with tempfile.TemporaryDirectory(prefix="lenet-eval-") as tmp:
        store = build_archive(Path(model_path), model_store=Path(tmp) / "model_store").parent
        with TorchServe.private(Path(tmp) / "run", model_store=store) as server:
            answers = []
            with LenetClient(server.inference_url, token=server.inference_token,
                             timeout=120) as client:  # fmt: skip
                for start in range(0, len(uploads), PER_REQUEST):
                    answers += client.predict(uploads[start : start + PER_REQUEST])
    refused = [i for i, a in enumerate(answers) if not isinstance(a, Prediction)]
    if refused:
        raise RuntimeError(
            f"the server refused {len(refused)} uploads, e.g. #{refused[0]}: {answers[refused[0]]}"
        )
    return np.array([a.probabilities for a in answers], dtype=np.float64)


def logits_from_probabilities(probabilities: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Logits equivalent to `probabilities` up to a per-row constant.

    The server answers softmax(logits / T); `T * log p` is then the logits up to a constant per
    row, so the HTTP answers can be scored before and after calibration like in-process ones.
    Zero probabilities (underflow) are floored at 1e-300, far below anything that moves a score.
    """
    return temperature * np.log(np.maximum(probabilities, 1e-300))
