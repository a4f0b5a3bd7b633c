"""TorchServe handler for the LeNet-5 MNIST classifier (`POST /predictions/lenet`).

A thin adapter: `handler.request_parsing` turns each request of a TorchServe batch into its
images, `handler.predictor.Predictor` answers all images of all requests with ONE forward pass,
and every answer is validated by `handler.schemas` before it leaves:

- one image -> 200 `Prediction`;
- several   -> 200 `MultiPrediction` in input order; a bad image gets an `ImageError` slot and
  its good neighbours keep their answers;
- no usable image -> 400 `{"code": 400, "type": "InvalidImage" | "InvalidRequest", "message"}`.

A bad request never changes the status or the answer of the good ones batched with it. A body
over `max_request_size` never reaches the handler: TorchServe answers 413 itself.

Imports: the archive ships `handler/` as a package next to this file (deploy/archive.py), and
TorchServe puts the model dir on sys.path, so the same absolute `handler.*` imports work in the
repository and inside the archive.
"""

from __future__ import annotations

import logging
import os

import torch
from ts.torch_handler.base_handler import BaseHandler

from handler import MODEL_NAME
from handler.inputs import prepare
from handler.predictor import Predictor, torch_threads
from handler.request_parsing import ParsedRequest, RequestError, parse_request
from handler.schemas import (
    MODEL_NAME_HEADER,
    MODEL_VERSION_HEADER,
    ErrorResponse,
    ImageError,
    MultiPrediction,
)

logger = logging.getLogger(__name__)

JSON = "application/json"


class LenetHandler(BaseHandler):
    """Parse every request, predict all their images at once, answer each request."""

    def initialize(self, context):
        props = context.system_properties
        self.context = context
        self.manifest = context.manifest
        handler_config = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        threads = torch_threads(handler_config.get("torch_threads"))
        if threads > 0:
            torch.set_num_threads(threads)
        # The device TorchServe assigned: a GPU index, or none at all, which means the CPU
        # even when CUDA is present (TorchServe did not give this worker a GPU).
        gpu_id = props.get("gpu_id")
        model_path = os.path.join(props["model_dir"], self.manifest["model"]["serializedFile"])
        self.predictor = Predictor.load(model_path, "cpu" if gpu_id is None else int(gpu_id))
        # The archive's name and version (torch-model-archiver --version, from the metadata).
        self.model_name = str(self.manifest["model"].get("modelName") or MODEL_NAME)
        self.model_version = str(self.manifest["model"].get("modelVersion")
                                 or self.predictor.version)  # fmt: skip
        self.initialized = True
        logger.info("lenet %s ready on %s with %d torch thread(s)", self.model_version,
                    self.predictor.device, torch.get_num_threads())  # fmt: skip

    def preprocess(self, data):
        """Parse every request of the batch and prepare all their images together."""
        requests, images, failed = [], [], []
        for idx, row in enumerate(data):
            req = ParsedRequest(first=len(images))
            requests.append(req)
            try:
                parsed = parse_request(row, self._content_type(idx))
            except RequestError as exc:
                req.failure = ErrorResponse(code=400, type="InvalidRequest", message=str(exc))
                continue
            for image in parsed:
                req.names.append(image.name)
                images.append(image.data)
                failed.append(image.error)
        return requests, prepare(images, failed)

    def inference(self, data, *args, **kwargs):
        """One forward pass over every good image of the batch."""
        requests, prepared = data
        return requests, self.predictor.complete(prepared)

    def postprocess(self, data):
        """One JSON body per request, with its own HTTP status."""
        requests, answers = data
        return [self._answer(idx, req, answers) for idx, req in enumerate(requests)]

    def _answer(self, idx: int, req: ParsedRequest, answers: list) -> str:
        slots = answers[req.first : req.first + len(req.names)]
        for slot, name in zip(slots, req.names, strict=True):
            if isinstance(slot, ImageError):
                slot.error.message = f"image '{name}': {slot.error.message}"
        body = req.failure
        if body is None and all(isinstance(s, ImageError) for s in slots):
            body = ErrorResponse(code=400, type="InvalidImage", message="; ".join(
                s.error.message for s in slots))  # fmt: skip
        if body is not None:
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

