"""TorchServe handler for the LeNet-5 MNIST classifier (`POST /predictions/lenet`).

A thin adapter: `handler.request_parsing` turns each request of a TorchServe batch into its
images, `handler.limits` prices them from their headers, `handler.predictor.Predictor` answers
all images of all requests with ONE forward pass, and every answer is validated by
`handler.schemas` before it leaves:

- one image -> 200 `Prediction`;
- several   -> 200 `MultiPrediction` in input order; a bad image gets an `ImageError` slot and
  its good neighbours keep their answers;
- no usable image -> 400 `{"code": 400, "type": "InvalidImage" | "InvalidRequest", "message"}`,
  the message one summary plus the first few image errors (`handler.limits`);
- over a request limit -> 413 `RequestTooLarge`, naming the limit and its value, before any
  pixel is decoded;
- `POST /explanations/lenet` -> 404 `ExplanationsUnavailable` (not implemented yet).

Each request is answered by its own kind and its own content: TorchServe's `BaseHandler.handle`
decides "explain" from the FIRST request of a batch, so `handle` is overridden to route every
request by its own `explain` header. A request never changes the status or the answer of the
others batched with it. A body over `max_request_size` never reaches the handler: TorchServe
answers 413 itself.

Imports: the archive ships `handler/` as a package next to this file (deploy/archive.py), and
TorchServe puts the model dir on sys.path, so the same absolute `handler.*` imports work in the
repository and inside the archive.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace

import torch
from ts.torch_handler.base_handler import BaseHandler

from handler import MODEL_NAME, limits, preprocessing
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
# TorchServe's Python worker parses a JSON body (`json.loads`, unbounded) and decodes text
# bodies before the handler runs, and matches `application/json` case-sensitively. Switched off,
# every value arrives as the client's bytes and request_parsing decodes them under the limits.
DECODE_ENV = "TS_DECODE_INPUT_REQUEST"
EXPLAIN_HEADER = "explain"  # set to "True" by the frontend on /explanations requests


class LenetHandler(BaseHandler):
    """Parse every request, price it, predict all images at once, answer each request."""

    def initialize(self, context):
        # Read per request by the worker (ts/protocol/otf_message_handler.py): set here, the
        # archive behaves the same whatever environment the server was started with.
        os.environ[DECODE_ENV] = "false"
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
        logger.info("lenet %s ready on %s with %d torch thread(s); preprocessing from %s",
                    self.model_version, self.predictor.device, torch.get_num_threads(),
                    preprocessing.__file__)  # fmt: skip

    def handle(self, data, context):
        """Every request by its own kind (predictions, explanations), in one pass.

        Replaces BaseHandler.handle, which explains or predicts the WHOLE batch according to
        its first request.
        """
        start = time.time()
        self.context = context
        if self._is_describe():
            return [self.describe_handle()]
        output = self.postprocess(self.inference(self.preprocess(data)))
        context.metrics.add_time("HandlerTime", round((time.time() - start) * 1000, 2), None,
                                 "ms")  # fmt: skip
        return output

    def preprocess(self, data):
        """Parse and price every request of the batch; prepare all their images together."""
        requests, images, failed = [], [], []
        for idx, row in enumerate(data):
            req = ParsedRequest(first=len(images))
            requests.append(req)
            if self._kind(idx) == "explain":
                req.failure = EXPLANATIONS_UNAVAILABLE
                continue
            try:
                parsed = self._parse(idx, row)
            except RequestError as exc:
                req.failure = ErrorResponse(code=400, type="InvalidRequest", message=str(exc))
                continue
            except limits.LimitExceeded as exc:
                req.failure = ErrorResponse(code=exc.status, type=exc.type, message=str(exc))
                continue
            for image in parsed:
                req.names.append(image.name)
                images.append(image.data)
                failed.append(image.error)
        return requests, prepare(images, failed)

    def _parse(self, idx: int, row: dict) -> list:
        """One request's images, each header checked, the request's pixel cost within budget."""
        parsed = parse_request(row, self._content_type(idx), self._part_types(idx, row))
        checked, headers = [], []
        for image in parsed:
            if image.error is None:
                try:
                    headers.append(limits.probe(image.data))
                except limits.ImageRefused as exc:
                    image = replace(image, data=None, error=str(exc))
            checked.append(image)
        limits.check_request_cost(headers)
        return checked

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
                slot.error.message = limits.clip(f"image '{name}': {slot.error.message}")
        body = req.failure
        if body is None and all(isinstance(s, ImageError) for s in slots):
            body = ErrorResponse(code=400, type="InvalidImage", message=_summary(slots))
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

    def _kind(self, idx: int) -> str:
        """'explain' for a request that came in on /explanations, else 'predict'."""
        return "explain" if self.context.get_request_header(idx, EXPLAIN_HEADER) == "True" \
            else "predict"  # fmt: skip

    def _content_type(self, idx: int) -> str | None:
        headers = self.context.get_all_request_header(idx) or {}
        for key, value in headers.items():
            if isinstance(value, str) and key.lower() == "content-type":
                return value
        return None

    def _part_types(self, idx: int, row: dict) -> dict[str, str]:
        """{field name: its Content-Type} of a multipart request, as the worker records them."""
        types = {}
        for name in row:
            header = self.context.get_request_header(idx, name)
            if isinstance(header, dict) and isinstance(header.get("content-type"), str):
                types[name] = header["content-type"]
        return types


# Until explanations are implemented, each /explanations request gets this answer on its own;
# the predictions batched with it are answered as if it were not there.
EXPLANATIONS_UNAVAILABLE = ErrorResponse(
    code=404, type="ExplanationsUnavailable",
    message=f"explanations are not available for {MODEL_NAME} yet; "
            f"POST /predictions/{MODEL_NAME} answers the same inputs with predictions",
)  # fmt: skip


def _summary(slots: list[ImageError]) -> str:
    """One bounded message for a request none of whose images was usable: the first
    `MAX_ERRORS_LISTED` image errors and how many more there were."""
    listed = "; ".join(s.error.message for s in slots[: limits.MAX_ERRORS_LISTED])
    if len(slots) == 1:
        return listed
    more = len(slots) - limits.MAX_ERRORS_LISTED
    return f"none of the {len(slots)} images is usable: {listed}" + (
        f"; and {more} more" if more > 0 else "")
