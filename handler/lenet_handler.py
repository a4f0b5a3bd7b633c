"""TorchServe handler for the LeNet-5 MNIST classifier (`POST /predictions/lenet`).

Inputs (see `handler.request_parsing` for the exact rules): a raw image body, multipart/form-data
with one field name per file (TorchServe keeps one value per field name), or JSON
`{"image": b64}` / `{"images": [b64, ...]}`.

Answers (validated against `handler.schemas` before they leave):
- one image -> 200 `Prediction`;
- several   -> 200 `MultiPrediction` in input order; a bad image gets an `ImageError` slot and
  its good neighbours keep their answers;
- no usable image -> 400 `{"code": 400, "type": "InvalidImage" | "InvalidRequest", "message"}`.
A body over `max_request_size` never reaches the handler: TorchServe answers 413 itself.

All images of all requests of one TorchServe batch go through ONE forward pass, and a bad
request never changes the status or the answer of the good ones batched with it.

Imports: the archive ships `handler/` as a package next to this file (deploy/archive.py), and
TorchServe puts the model dir on sys.path, so the same absolute `handler.*` imports work in the
repository and inside the archive.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

from handler import preprocessing
from handler.artifact import load_torchscript
from handler.normalization import IMAGE_SIZE
from handler.request_parsing import ParsedRequest, RequestError, parse_request
from handler.schemas import (
    MODEL_NAME_HEADER,
    MODEL_VERSION_HEADER,
    ErrorBody,
    ErrorResponse,
    ImageError,
    MultiPrediction,
    Prediction,
)

logger = logging.getLogger(__name__)

THREADS_ENV = "LENET_TORCH_THREADS"  # wins over model-config.yaml `handler: torch_threads`
DEFAULT_TORCH_THREADS = 1  # one worker on a 2-core host: more threads only oversubscribe
JSON = "application/json"


def choose_device(gpu_id) -> torch.device:
    """`cuda:<gpu_id>` when TorchServe assigned a GPU and CUDA is usable, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


def torch_threads(handler_config: dict | None) -> int:
    """Intra-op threads for this worker: env var, then model-config, then 1. 0 keeps torch's."""
    value = os.environ.get(THREADS_ENV) or (handler_config or {}).get("torch_threads")
    return DEFAULT_TORCH_THREADS if value in (None, "") else int(value)


class LenetHandler(BaseHandler):
    """Decode -> one batched forward pass -> softmax -> schema-validated JSON per request."""

    def initialize(self, context):
        props = context.system_properties
        self.context = context
        self.manifest = context.manifest
        handler_config = (getattr(context, "model_yaml_config", None) or {}).get("handler")
        threads = torch_threads(handler_config)
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = choose_device(props.get("gpu_id"))
        model_path = os.path.join(props["model_dir"], self.manifest["model"]["serializedFile"])
        self.model, self.metadata = load_torchscript(model_path, device=self.device)
        # The archive's name and version (torch-model-archiver --version, from the metadata).
        self.model_name = str(self.manifest["model"].get("modelName", "lenet"))
        self.model_version = str(self.manifest["model"].get("modelVersion")
                                 or self.metadata.get("version", ""))
        with torch.inference_mode():  # warm-up: the first TorchScript call optimises the graph
            self.model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, device=self.device))
        self.initialized = True
        logger.info(
            "lenet %s (%s) ready on %s with %d torch thread(s); preprocessing from %s",
            self.metadata.get("version"), self.metadata.get("variant"), self.device,
            torch.get_num_threads(), preprocessing.__file__,
        )  # fmt: skip

    def preprocess(self, data):
        """Parse and decode every image of every request; stack the good ones into one tensor."""
        requests, arrays = [], []
        for idx, row in enumerate(data):
            req = ParsedRequest()
            requests.append(req)
            try:
                req.images = parse_request(row, self._content_type(idx))
            except RequestError as exc:
                req.failure = ErrorResponse(code=400, type="InvalidRequest", message=str(exc))
                continue
            for image in req.images:
                error = image.error
                if error is None:
                    try:
                        arrays.append(preprocessing.preprocess(image.data))
                        req.rows.append(len(arrays) - 1)
                        req.errors.append(None)
                        continue
                    except preprocessing.InvalidImage as exc:
                        error = str(exc)
                    except Exception as exc:  # hostile input must never crash the worker
                        logger.warning("unexpected failure decoding %s", image.name, exc_info=True)
                        error = f"cannot decode the image ({type(exc).__name__})"
                req.rows.append(None)
                req.errors.append(f"image '{image.name}': {error}")
        tensor = torch.from_numpy(np.stack(arrays)) if arrays else None
        return requests, tensor

    def inference(self, data, *args, **kwargs):
        """One forward pass over every good image of the batch; returns softmax rows."""
        requests, tensor = data
        if tensor is None:
            return requests, None
        with torch.inference_mode():
            probs = torch.softmax(self.model(tensor.to(self.device)), dim=1)
        return requests, probs.double().cpu().numpy()  # double: probabilities sum to 1 tightly

    def postprocess(self, data):
        """One JSON body per request, with its own HTTP status."""
        requests, probs = data
        return [self._answer(idx, req, probs) for idx, req in enumerate(requests)]

    def _answer(self, idx: int, req: ParsedRequest, probs) -> str:
        slots = [
            Prediction.from_probabilities(probs[row])
            if row is not None
            else ImageError(error=ErrorBody(code=400, type="InvalidImage", message=err))
            for row, err in zip(req.rows, req.errors, strict=True)
        ]
        if req.failure is None and all(isinstance(s, ImageError) for s in slots):
            req.failure = ErrorResponse(code=400, type="InvalidImage", message="; ".join(
                s.error.message for s in slots))  # fmt: skip
        if req.failure is not None:
            body = req.failure
            self.context.set_response_status(body.code, body.type, idx=idx)
        elif len(slots) == 1:
            body = slots[0]
        else:
            body = MultiPrediction(predictions=slots)
        self.context.set_response_content_type(idx, JSON)
        # Which model answered, on every response: a client (the batch job's rows) records it
        # without a management-API call, and it stays right across a server upgrade mid-run.
        self.context.set_response_header(idx, MODEL_NAME_HEADER, self.model_name)
        self.context.set_response_header(idx, MODEL_VERSION_HEADER, self.model_version)
        return body.model_dump_json()

    def _content_type(self, idx: int) -> str | None:
        headers = self.context.get_all_request_header(idx) or {}
        for key, value in headers.items():
            if isinstance(value, str) and key.lower() == "content-type":
                return value
        return None
