"""Explanations through the handler, without a server: its explain path driven like TorchServe
drives it (a real `ts.context.Context`, the frontend's `explain: True` header), and the
explanation budget that admits or refuses them. `Predictor.explain` itself is
test_explanations.py.

What holds: explanations and predictions batched together never change each other's answers or
status; the limits and the 4xx rules are those of predictions; a failed explanation fails only
the explanations requests; a spent budget refuses with 429 before decoding, and refills at its
share of the model's time.
"""

from __future__ import annotations

import base64
from pathlib import Path
from unittest import mock

import pytest
import torch
from ts.context import Context, RequestProcessor

from handler import MODEL_NAME, lenet_handler, limits, schemas
from handler.lenet_handler import LenetHandler
from handler.schemas import Explanation, ImageError, MultiExplanation, MultiPrediction, Prediction
from tests.explanation_checks import Recording, assert_same

PNG = "image/png"


# --- the handler's explain path ------------------------------------------------------------------
def make_context(model_dir: Path) -> Context:
    manifest = {"model": {"modelName": MODEL_NAME, "serializedFile": "lenet.pt",
                          "handler": "lenet_handler.py", "modelVersion": "test"}}  # fmt: skip
    # No explanation budget: these tests explain back to back; the budget has its own tests.
    return Context(MODEL_NAME, str(model_dir), manifest, 32, None, "0.12.0",
                   metrics=mock.MagicMock(),
                   model_yaml_config={"handler": {"explain_share": 1}})  # fmt: skip


@pytest.fixture(scope="module")
def handler(model_path) -> LenetHandler:
    assert model_path.name == "lenet.pt", model_path
    threads = torch.get_num_threads()
    h = LenetHandler()
    h.initialize(make_context(model_path.parent))
    torch.set_num_threads(threads)
    return h


def run(handler: LenetHandler, requests: list[tuple[str, dict, str | None]], headers=None):
    """One TorchServe batch of (kind, row, content type); [(status, parsed body)] per request,
    each parsed with its endpoint's contract; each request's response headers into `headers`."""
    context = make_context(Path("."))
    context.request_processor = [
        RequestProcessor({**({"Content-Type": ct} if ct else {}),
                          **({"explain": "True"} if kind == "explain" else {})})
        for kind, _, ct in requests
    ]  # fmt: skip
    out = handler.handle([row for _, row, _ in requests], context)
    results = []
    for idx, ((kind, _, _), body) in enumerate(zip(requests, out, strict=True)):
        assert context.get_response_content_type(idx) == "application/json"
        assert context.get_response_headers(idx)[schemas.MODEL_VERSION_HEADER] == "test"
        parse = schemas.parse_explanation if kind == "explain" else schemas.parse_response
        results.append((context.get_response_status(idx)[0] or 200, parse(body)))
        if headers is not None:
            headers.append(context.get_response_headers(idx))
    return results


def test_one_and_several_images_answer_explanations_in_input_order(handler, pngs):
    b64 = [base64.b64encode(p).decode() for p in pngs[:2]]
    results = run(handler, [
        ("explain", {"body": pngs[0]}, PNG),
        ("explain", {"a": pngs[1], "bad": b"??", "c": pngs[2]}, "multipart/form-data; boundary=x"),
        ("explain", {"body": {"images": b64}}, "application/json"),
    ])  # fmt: skip
    assert [status for status, _ in results] == [200, 200, 200]
    single, multi, json_multi = (body for _, body in results)
    assert_same(single, handler.predictor.explain([pngs[0]])[0])
    assert isinstance(multi, MultiExplanation)
    a, bad, c = multi.explanations
    assert isinstance(bad, ImageError) and "'bad'" in bad.error.message
    pairs = [(a, pngs[1]), (c, pngs[2]), *zip(json_multi.explanations, pngs[:2], strict=True)]
    for answer, data in pairs:
        assert_same(answer, handler.predictor.explain([data])[0])


@pytest.mark.parametrize(
    ("row", "content_type", "status", "error_type", "words"),
    [
        ({"body": b"not an image"}, PNG, 400, "InvalidImage", ["cannot decode"]),
        ({"body": b""}, PNG, 400, "InvalidRequest", ["empty"]),
        ({"body": {"image": "%%%"}}, "application/json", 400, "InvalidImage", ["base64"]),
        ({"body": {"images": ["x"] * (limits.MAX_IMAGES_PER_REQUEST + 1)}}, "application/json",
         413, "RequestTooLarge", [f"{limits.MAX_IMAGES_PER_REQUEST} images per request"]),
    ],
)  # fmt: skip
def test_explanations_follow_the_4xx_rules_of_predictions(handler, row, content_type, status,
                                                          error_type, words):  # fmt: skip
    explained, predicted = run(handler, [("explain", row, content_type),
                                         ("predict", row, content_type)])  # fmt: skip
    assert explained[0] == predicted[0] == status
    assert explained[1] == predicted[1]  # the same ErrorResponse, word for word
    assert explained[1].type == error_type
    for word in words:
        assert word in explained[1].message


def test_an_explanations_request_carries_at_most_its_limit_of_images(handler, pngs):
    allowed = {f"d{i}": pngs[i % 4] for i in range(limits.MAX_IMAGES_PER_EXPLANATION)}
    over = {**allowed, "one_more": pngs[0]}
    multipart = "multipart/form-data; boundary=x"
    (ok, body), (refused, error), (predicted, _) = run(handler, [
        ("explain", allowed, multipart), ("explain", over, multipart), ("predict", over, multipart),
    ])  # fmt: skip
    assert ok == 200 and len(body.explanations) == limits.MAX_IMAGES_PER_EXPLANATION
    assert refused == 413 and error.type == "RequestTooLarge"
    assert f"limit of {limits.MAX_IMAGES_PER_EXPLANATION} images per explanations request" in (
        error.message)
    assert predicted == 200  # the same request is well within the predictions' limit
    # The largest admitted answer stays small (handler/limits.py: under 80 KB).
    assert len(body.model_dump_json()) < 80_000


def test_mixed_batch_answers_each_request_as_if_it_were_alone(handler, pngs, photo):
    """Explanations first and in between: every prediction is what it is in a batch of
    predictions only, every explanation what it is alone, whatever their order."""
    explain = [("explain", {"body": p}, None) for p in (pngs[0], photo)]
    predict = [("predict", {"body": p}, None) for p in (pngs[1], pngs[2], photo)]
    broken = [("explain", {"body": b"broken"}, None), ("predict", {"body": b"broken"}, None)]
    batch = [explain[0], predict[0], broken[0], predict[1], explain[1], broken[1], predict[2]]
    results = run(handler, batch)
    assert [s for s, _ in results] == [200, 200, 400, 200, 200, 400, 200]
    alone = [body for _, body in run(handler, predict)]
    assert [results[i][1] for i in (1, 3, 6)] == alone
    assert all(isinstance(b, Prediction) for b in alone)
    assert [results[i][1] for i in (0, 4)] == handler.predictor.explain([pngs[0], photo])


def test_predictions_run_their_own_forward_pass_beside_explanations(handler, pngs):
    recording = Recording(handler.predictor.module)
    real, handler.predictor.module = handler.predictor.module, recording
    try:
        run(handler, [("explain", {"body": pngs[0]}, PNG), ("predict", {"body": pngs[1]}, PNG),
                      ("predict", {"body": pngs[2]}, PNG)])  # fmt: skip
    finally:
        handler.predictor.module = real
    # The predictions' pass holds exactly the two prediction images, nothing of the explanation.
    predictions_pass = recording.inputs[0]
    assert tuple(predictions_pass.shape) == (2, 1, 28, 28)


def test_a_failed_explanation_fails_only_the_explanations_requests(handler, pngs, monkeypatch):
    def boom(prepared):
        raise RuntimeError("simulated failure inside the attribution")

    monkeypatch.setattr(handler.predictor, "complete_explanations", boom)
    results = run(handler, [("explain", {"body": pngs[0]}, PNG),
                            ("predict", {"body": pngs[1]}, PNG)])  # fmt: skip
    (status, error), (ok, prediction) = results
    assert status == 500 and error.type == "ExplanationFailed" and "simulated" not in error.message
    assert ok == 200 and isinstance(prediction, Prediction)
    assert not isinstance(prediction, MultiPrediction)


# --- the explanation budget ----------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_admits_while_not_empty_and_refills_at_its_share():
    clock = Clock()
    budget = limits.ExplanationBudget(share=0.1, burst_s=0.05, clock=clock)
    budget.admit(0.04)
    budget.admit(0.04)  # 0.01 left: admitted, into debt by its own cost
    with pytest.raises(limits.ExplanationsBusy, match="10% of the model's time"):
        budget.admit(0.001)
    assert budget.retry_after() == pytest.approx(0.3)  # 0.03 s of debt at 0.1 s per second
    clock.now += 0.3
    with pytest.raises(limits.ExplanationsBusy):
        budget.admit(0.001)  # exactly empty is still empty
    clock.now += 0.01
    budget.admit(0.001)
    budget.settle(estimated_s=0.081, actual_s=0.181)  # the work took 0.1 s more than estimated
    assert budget.retry_after() == pytest.approx(1.0)
    clock.now += 100
    budget.admit(0.0)
    assert budget.tokens == pytest.approx(0.05)  # never more than the burst saved up


@pytest.mark.parametrize(("share", "admitted"), [(1, True), (0, False)])
def test_share_one_switches_the_budget_off_and_zero_switches_explanations_off(share, admitted):
    budget = limits.ExplanationBudget(share=share, burst_s=0.0)
    if admitted:
        for _ in range(100):
            budget.admit(1.0)
    else:
        with pytest.raises(limits.ExplanationsBusy, match="switched off"):
            budget.admit(0.0)


def test_a_spent_budget_refuses_explanations_with_429_before_decoding(handler, pngs, monkeypatch):
    clock = Clock()
    spent = limits.ExplanationBudget(share=0.1, burst_s=0.1, clock=clock)
    spent.tokens = 0.0
    monkeypatch.setattr(handler, "explain_budget", spent)
    decoded_images = []
    real_prepare = lenet_handler.prepare
    monkeypatch.setattr(lenet_handler, "prepare",
                        lambda images, failed: decoded_images.extend(images)
                        or real_prepare(images, failed))  # fmt: skip
    headers: list[dict] = []
    (busy, error), (ok, prediction) = run(
        handler, [("explain", {"body": pngs[0]}, PNG), ("predict", {"body": pngs[1]}, PNG)],
        headers)  # fmt: skip
    assert busy == 429 and error.type == "ExplanationsBusy" and "retry in" in error.message
    assert headers[0]["Retry-After"] == "1"
    assert ok == 200 and isinstance(prediction, Prediction)
    assert decoded_images == [pngs[1]]  # the refused request's image was never decoded
    clock.now += 1.0  # 0.1 s of explanation time saved up: admitted, and charged
    ((status, explanation),) = run(handler, [("explain", {"body": pngs[0]}, PNG)])
    assert status == 200 and isinstance(explanation, Explanation)
    assert handler.explain_budget.tokens < 0.1
