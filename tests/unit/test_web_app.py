"""The draw-a-digit app on its own: a real `python -m web` process, no browser, no TorchServe.

What holds before any model answers: the page and its files are served with a strict Content
Security Policy; the app binds to loopback unless told otherwise; an upload over the limit gets a
413 that names the limit, before its body is read (declared length) or as soon as it passes the
limit (streamed body); with TorchServe away the app says so in words the page shows, and the
inference key it holds appears in none of its answers.
"""

from __future__ import annotations

import base64
import http.client
import json

import numpy as np
import psutil
import pytest
import requests

from project.ports import free_port
from tests.web_app import WebApp

KEY = "key-the-browser-must-never-see-4b1d"  # the app's inference key in these tests
LIMIT = 4096


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # Nothing listens on this port: TorchServe is "down" for the whole module.
    nowhere = f"http://127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("web") / "web.log"
    env = {"LENET_INFERENCE_TOKEN": KEY, "LENET_WEB_HOST": None}  # --host's own default
    with WebApp(nowhere, log, env=env, args=["--max-upload-bytes", str(LIMIT)]) as web:
        yield web


def test_page_and_its_files_are_served_with_a_content_security_policy(app):
    for path, kind in (("/", "text/html"), ("/app.js", "javascript"), ("/style.css", "text/css")):
        resp = requests.get(app.url + path, timeout=5)
        assert resp.status_code == 200, path
        assert kind in resp.headers["content-type"], path
        assert "default-src 'self'" in resp.headers["content-security-policy"], path
        assert resp.headers["x-content-type-options"] == "nosniff", path
    page = requests.get(app.url, timeout=5).text
    assert 'id="pad"' in page and 'accept="image/*" capture' in page


def test_app_binds_to_loopback_by_default(app):
    listening = {c.laddr.ip for c in psutil.Process(app.proc.pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}  # fmt: skip
    assert listening == {"127.0.0.1"}


def test_declared_oversize_upload_is_refused_before_its_body_is_sent(app):
    size = 50 * 2**20
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    try:
        conn.putrequest("POST", "/api/predict")
        conn.putheader("Content-Type", "image/png")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()  # headers only: the 50 MB never follow
        resp = conn.getresponse()  # times out (fails) if the app waits for the body
        status, error = resp.status, json.loads(resp.read())
    finally:
        conn.close()
    assert status == 413
    assert error["type"] == "RequestTooLarge"
    assert f"{size:,} bytes" in error["message"] and f"{LIMIT:,} bytes" in error["message"]


def test_streamed_oversize_upload_is_refused_with_the_same_message(app):
    def chunks():  # no Content-Length: sent chunked, counted by Starlette's body limit
        for _ in range(8):
            yield b"\0" * 1024

    resp = requests.post(app.url + "/api/predict", data=chunks(), timeout=10)
    assert resp.status_code == 413
    assert resp.json()["type"] == "RequestTooLarge"
    assert f"{LIMIT:,} bytes" in resp.json()["message"]


def test_torchserve_away_is_reported_in_words_and_no_key_leaves_the_app(app):
    health = requests.get(app.url + "/api/health", timeout=10)
    assert health.status_code == 200  # the app itself is up
    assert health.json()["torchserve"] == "down"
    resp = requests.post(app.url + "/api/predict", data=b"\x89PNG", timeout=10,
                         headers={"Content-Type": "image/png"})  # fmt: skip
    assert resp.status_code == 503
    body = resp.json()
    assert body["server"] == "down"
    assert "not answering" in body["message"] and "retries by itself" in body["message"]
    for answer in (health, resp, requests.get(app.url, timeout=5)):
        assert KEY not in answer.text
        assert KEY not in json.dumps(dict(answer.headers))


def test_the_page_shows_only_what_the_explanation_contract_admits():
    """`web.explanations` reads a single `Explanation` and nothing else: a multi-image answer,
    an error, a non-PNG input or a map of the wrong size reads as "no explanation"."""
    from handler.schemas import Explanation
    from samples.digits import encode_png
    from web.explanations import for_page, read_explanation

    probabilities = [0.0] * 7 + [1.0, 0.0, 0.0]
    png = encode_png(np.zeros((28, 28), np.uint8))
    good = Explanation.build(probabilities, png, np.zeros((28, 28)), "test").model_dump()
    assert read_explanation(json.dumps(good)) is not None
    assert set(for_page(read_explanation(good))) == {"input_png", "attribution"}
    wrong_size = encode_png(np.zeros((27, 28), np.uint8))
    for body in ({"explanations": [good]}, {"code": 400, "type": "InvalidImage", "message": "x"},
                 {**good, "input_png": "aGVsbG8="},
                 {**good, "input_png": base64.b64encode(wrong_size).decode()},
                 {**good, "attribution": good["attribution"][:27]},
                 {**good, "attribution": [[float("nan")] * 28] * 28}, b"not json"):  # fmt: skip
        assert read_explanation(body) is None, body
