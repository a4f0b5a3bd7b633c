"""TorchServe handler for the LeNet-5 MNIST classifier (`POST /predictions/lenet` and
`POST /explanations/lenet`).

A thin adapter: `handler.request_parsing` turns each request of a TorchServe batch into its
images, `handler.limits` prices them from their headers, `handler.predictor.Predictor` answers
all prediction images of the batch with ONE forward pass and all explanation images with one
batch of attributions, and every answer is validated by `handler.schemas` before it leaves:

- one image -> 200 `Prediction` (`Explanation` on /explanations);
- several   -> 200 `MultiPrediction` (`MultiExplanation`) in input order; a bad image gets an
  `ImageError` slot and its good neighbours keep their answers;
- no usable image -> 400 `{"code": 400, "type": "InvalidImage" | "InvalidRequest", "message"}`,
  the message one summary plus the first few image errors (`handler.limits`);
- over a request limit -> 413 `RequestTooLarge`, naming the limit and its value, before any
  pixel is decoded (an explanations request also carries at most
  `limits.MAX_IMAGES_PER_EXPLANATION` images);
- an explanations request when explanations have used their share of the worker
  (`limits.ExplanationBudget`) -> 429 `ExplanationsBusy` with `Retry-After`, before decoding.

Each request is answered by its own kind and its own content: TorchServe's `BaseHandler.handle`
decides "explain" from the FIRST request of a batch (and `explain_handle` then explains the
whole batch), so `handle` is overridden to route every request by its own `explain` header. A
request never changes the status or the answer of the others batched with it; an explanation
that fails fails only the explanations requests. A body over `max_request_size` never reaches
the handler: TorchServe answers 413 itself.

Imports: the archive ships `handler/` as a package next to this file (deploy/archive.py), and
TorchServe puts the model dir on sys.path, so the same absolute `handler.*` imports work in the
repository and inside the archive.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import replace

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

from handler import MODEL_NAME, limits, preprocessing
from handler.inputs import prepare
from handler.normalization import IMAGE_SIZE
from handler.predictor import Predictor, torch_threads
from handler.request_parsing import ParsedRequest, RequestError, parse_request
from handler.schemas import (
    MODEL_NAME_HEADER,
    MODEL_VERSION_HEADER,
    ErrorResponse,
    ImageError,
    MultiExplanation,
    MultiPrediction,
)

logger = logging.getLogger(__name__)

JSON = "application/json"
# TorchServe's Python worker parses a JSON body (`json.loads`, unbounded) and decodes text
# bodies before the handler runs, and matches `application/json` case-sensitively. Switched off,
# every value arrives as the client's bytes and request_parsing decodes them under the limits.
DECODE_ENV = "TS_DECODE_INPUT_REQUEST"
EXPLAIN_HEADER = "explain"  # set to "True" by the frontend on /explanations requests
PREDICT, EXPLAIN = "predict", "explain"  # the kinds of request, `LenetHandler._kind`


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
        self.predictor = Predictor.load(model_path, "cpu" if gpu_id is None else int(gpu_id),
                                        explanations=True)  # fmt: skip
        self.explain_budget = limits.ExplanationBudget(
            float(handler_config.get("explain_share", limits.EXPLAIN_SHARE)))
        self.explain_cost_s = self._time_one_explanation()
        self._explain_estimate = 0.0  # what the current batch's explanations were charged
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
        """Parse and price every request of the batch; prepare the images of each kind
        (predictions, explanations) together. Explanations requests are also charged to the
        explanation budget, before any decoding."""
        requests, self._explain_estimate = [], 0.0
        images: dict[str, list] = {PREDICT: [], EXPLAIN: []}
        failed: dict[str, list] = {PREDICT: [], EXPLAIN: []}
        for idx, row in enumerate(data):
            kind = self._kind(idx)
            req = ParsedRequest(first=len(images[kind]), kind=kind)
            requests.append(req)
            try:
                parsed = self._parse(idx, row, kind)
            except RequestError as exc:
                req.failure = ErrorResponse(code=400, type="InvalidRequest", message=str(exc))
                continue
            except (limits.LimitExceeded, limits.ExplanationsBusy) as exc:
                req.failure = ErrorResponse(code=exc.status, type=exc.type, message=str(exc))
                continue
            for image in parsed:
                req.names.append(image.name)
                images[kind].append(image.data)
                failed[kind].append(image.error)
        return requests, {kind: prepare(images[kind], failed[kind]) for kind in images}

    def _parse(self, idx: int, row: dict, kind: str) -> list:
        """One request's images, each header checked, the request's pixel cost within budget."""
        parsed = parse_request(row, self._content_type(idx), self._part_types(idx, row))
        if kind == EXPLAIN:
            limits.check_explanation_count(len(parsed))
        checked, headers = [], []
        for image in parsed:
            if image.error is None:
                try:
                    headers.append(limits.probe(image.data))
                except limits.ImageRefused as exc:
                    image = replace(image, data=None, error=str(exc))
            checked.append(image)
        limits.check_request_cost(headers)
        if kind == EXPLAIN and headers:
            estimate = len(headers) * self.explain_cost_s
            self.explain_budget.admit(estimate)  # raises ExplanationsBusy when spent
            self._explain_estimate += estimate
        return checked

    def inference(self, data, *args, **kwargs):
        """One forward pass over the batch's good prediction images, and the explanations of its
        good explanation images; {kind: answers in order}, None for explanations that failed."""
        requests, prepared = data
        answers = {PREDICT: self.predictor.complete(prepared[PREDICT]), EXPLAIN: []}
        if len(prepared[EXPLAIN]):
            start = time.perf_counter()
            try:
                answers[EXPLAIN] = self.predictor.complete_explanations(prepared[EXPLAIN])
            except Exception:  # noqa: BLE001 - the predictions batched with it must still answer
                logger.exception("explaining %d image(s) failed", len(prepared[EXPLAIN]))
                answers[EXPLAIN] = None
            self._settle_explanations(len(prepared[EXPLAIN].inputs), time.perf_counter() - start)
        return requests, answers

    def _time_one_explanation(self) -> float:
        """Seconds one image's explanation takes here (the best of three): the first estimate
        of what an explanations request costs the budget."""
        blank = np.zeros((1, 1, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            self.predictor.attributions(blank, np.zeros(1, np.int64))
            times.append(time.perf_counter() - start)
        return min(times)

    def _settle_explanations(self, images: int, seconds: float) -> None:
        """Charge the budget what the batch's explanations took, and follow the cost per image
        (a moving average: the host's load changes it)."""
        self.explain_budget.settle(self._explain_estimate, seconds)
        if images:
            self.explain_cost_s = 0.8 * self.explain_cost_s + 0.2 * seconds / images

    def postprocess(self, data):
        """One JSON body per request, with its own HTTP status."""
        requests, answers = data
        return [self._answer(idx, req, answers) for idx, req in enumerate(requests)]

    def _answer(self, idx: int, req: ParsedRequest, answers: dict) -> str:
        body = req.failure if req.failure is not None else _body(req, answers[req.kind])
        if isinstance(body, ErrorResponse):
            self.context.set_response_status(body.code, body.type, idx=idx)
            retry = self.explain_budget.retry_after()
            if body.type == limits.ExplanationsBusy.type and math.isfinite(retry):
                self.context.set_response_header(idx, "Retry-After", str(max(1, math.ceil(retry))))
        self.context.set_response_content_type(idx, JSON)
        # Which model answered, on every response: a client (the batch job's rows) records it
        # without a management-API call, and it stays right across a server upgrade mid-run.
        self.context.set_response_header(idx, MODEL_NAME_HEADER, self.model_name)
        self.context.set_response_header(idx, MODEL_VERSION_HEADER, self.model_version)
        return body.model_dump_json()

    def _kind(self, idx: int) -> str:
        """EXPLAIN for a request that came in on /explanations, else PREDICT."""
        return EXPLAIN if self.context.get_request_header(idx, EXPLAIN_HEADER) == "True" \
            else PREDICT  # fmt: skip

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


# What each explanations request of a batch gets when computing the explanations raised (the
# worker's log has why); the predictions batched with them are answered as if they were not there.
EXPLANATION_FAILED = ErrorResponse(
    code=500, type="ExplanationFailed",
    message=f"the explanation could not be computed; POST /predictions/{MODEL_NAME} answers the "
            "same inputs with predictions",
)  # fmt: skip


def _body(req: ParsedRequest, answers: list | None):
    """The answer to one parsed request from the answers of its kind (None: explaining failed)."""
    if answers is None:
        return EXPLANATION_FAILED
    slots = answers[req.first : req.first + len(req.names)]
    for slot, name in zip(slots, req.names, strict=True):
        if isinstance(slot, ImageError):
            slot.error.message = limits.clip(f"image '{name}': {slot.error.message}")
    if all(isinstance(s, ImageError) for s in slots):
        return ErrorResponse(code=400, type="InvalidImage", message=_summary(slots))
    if len(slots) == 1:
        return slots[0]
    if req.kind == EXPLAIN:
        return MultiExplanation(explanations=slots)
    return MultiPrediction(predictions=slots)


def _summary(slots: list[ImageError]) -> str:
    """One bounded message for a request none of whose images was usable: the first
    `MAX_ERRORS_LISTED` image errors and how many more there were."""
    listed = "; ".join(s.error.message for s in slots[: limits.MAX_ERRORS_LISTED])
    if len(slots) == 1:
        return listed
    more = len(slots) - limits.MAX_ERRORS_LISTED
    return f"none of the {len(slots)} images is usable: {listed}" + (
        f"; and {more} more" if more > 0 else "")
