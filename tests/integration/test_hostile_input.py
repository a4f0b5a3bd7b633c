"""Hostile and unusual input against the real session TorchServe.

Every case of `tests/hostile_corpus/` (empty and random bodies, truncated and corrupt images,
text/HTML/SVG/PDF, broken JSON, a PNG claiming 30000x30000 pixels, a decompression bomb, an
over-size body, 1x1/blank images, 16-bit/palette/1-bit/RGBA/CMYK images, an animated GIF, a
4000x3000 photo) gets either a 4xx with the JSON error body or the right answer. While the whole
corpus runs, no backend worker may die and restart: the worker pids reported by the management
API are the same before and after, and a normal digit right after is still classified correctly.

What each case got is counted and written to `loadtests/results/hostile_input.json` (the
reliability page quotes it); every case that got something else is named in the failure.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import requests

from deploy.keys import auth_headers
from handler.preprocessing import MAX_IMAGE_PIXELS
from handler.schemas import ErrorResponse, Prediction
from project.paths import RESULTS_DIR
from tests.hostile_corpus import Case, build_corpus
from tests.server_access import max_request_size

# Decoding is bounded by the handler, but the slowest legitimate case (the 12 Mpx photo) may
# take a while on a loaded 2-core machine; nothing should take longer than this.
REQUEST_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def corpus(mnist_test, torchserve) -> list[Case]:
    """The corpus, built against the limits of the server under test."""
    images, labels = mnist_test
    return build_corpus(images, labels, max_request_size=max_request_size(torchserve),
                        max_image_pixels=MAX_IMAGE_PIXELS)  # fmt: skip


def post_case(server, case: Case) -> requests.Response:
    """Send one corpus case exactly as a client would."""
    headers = {"Content-Type": case.content_type, **auth_headers(server.inference_token)}
    return requests.post(server.predict_url, data=case.body, headers=headers,
                         timeout=REQUEST_TIMEOUT_S)  # fmt: skip


def judge(case: Case, resp: requests.Response) -> tuple[str, str | None]:
    """(what the server did, what was wrong with it or None)."""
    status = resp.status_code
    if case.expect == "reject":
        if not 400 <= status < 500:
            return f"HTTP {status}", f"expected a 4xx: {resp.text[:200]}"
        if case.status is not None and status != case.status:
            return f"HTTP {status}", f"expected {case.status}"
        if status == 413 and not resp.content:
            # TorchServe 0.12.0's frontend (Netty's HttpObjectAggregator) refuses an over-size
            # body before any handler runs, with an empty body: the status is the whole answer.
            return "refused 413 by the frontend, empty body", None
        try:
            error = ErrorResponse.model_validate_json(resp.content)
        except ValueError:
            return f"HTTP {status}", f"the body is no JSON error: {resp.text[:200]}"
        if error.code != status or not error.message:
            return f"HTTP {status}", f"body code {error.code}, message {error.message!r}"
        return "refused 4xx with the JSON error body", None
    if status != 200:
        return f"HTTP {status}", f"expected 200: {resp.text[:200]}"
    try:
        answer = Prediction.model_validate_json(resp.content)
    except ValueError:
        return "HTTP 200", f"not a Prediction: {resp.text[:200]}"
    if case.expect == "digit":
        if answer.digit != case.label:
            return "answered", f"digit {answer.digit}, not {case.label}"
        return "answered with the right digit", None
    return "answered with a valid prediction", None


def test_every_case_is_refused_or_answered_and_no_worker_dies(torchserve, corpus):
    before = torchserve.worker_pids()
    assert before, "the management API reports no worker for the model"
    outcomes: dict[str, str] = {}
    problems: dict[str, str] = {}
    slowest = (0.0, "")
    for case in corpus:
        started = time.monotonic()
        try:
            outcome, problem = judge(case, post_case(torchserve, case))
        except requests.RequestException as exc:  # a dropped connection is an answer too
            outcome, problem = "no answer", f"{type(exc).__name__}: {exc}"
        slowest = max(slowest, (time.monotonic() - started, case.id))
        outcomes[case.id] = outcome
        if problem:
            problems[case.id] = f"{outcome}: {problem}"
    control = next(case for case in corpus if case.id == "png_plain_mnist")
    _, control_problem = judge(control, post_case(torchserve, control))
    after = torchserve.worker_pids()
    counts = Counter(outcomes.values())
    record = {
        "cases": len(corpus),
        "outcomes": dict(counts.most_common()),
        "problems": problems,
        "slowest_case": {"id": slowest[1], "seconds": round(slowest[0], 2)},
        "workers_before": before,
        "workers_after": after,
        "control_digit_after": control_problem or "right",
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "hostile_input.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    assert not problems, f"{len(problems)} of {len(corpus)} cases went wrong: {problems}"
    assert control_problem is None, f"a normal digit after the corpus: {control_problem}"
    assert after == before, "a worker died during the corpus"
