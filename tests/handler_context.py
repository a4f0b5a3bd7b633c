"""The handler driven the way TorchServe drives it, without a server: a real `ts.context.Context`
with a manifest, and one `handle(data, context)` call per batch.

For tests/unit/test_handler*.py, which check answers (test_handler.py) and what configures the
handler (test_handler_config.py) through the same context. The explanations tests build their
own context: theirs switches the explanation budget off.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

from ts.context import Context, RequestProcessor

from handler import MODEL_NAME, schemas
from handler.lenet_handler import LenetHandler


def make_context(model_dir: Path, gpu_id=None, yaml_config=None) -> Context:
    manifest = {"model": {"modelName": MODEL_NAME, "serializedFile": "lenet.pt",
                          "handler": "lenet_handler.py", "modelVersion": "test"}}  # fmt: skip
    # TorchServe hands every handler a metrics sink; this handler emits no custom metric.
    return Context(MODEL_NAME, str(model_dir), manifest, 32, gpu_id, "0.12.0",
                   metrics=mock.MagicMock(), model_yaml_config=yaml_config or {})  # fmt: skip


def run(handler: LenetHandler, rows: list[dict], content_types: list[str | None] | None = None):
    """Send one TorchServe batch; returns [(status, parsed body)] per request."""
    context = make_context(Path("."))  # only its per-request status/headers are used
    content_types = content_types or ["image/png"] * len(rows)
    context.request_processor = [
        RequestProcessor({"Content-Type": ct} if ct else {}) for ct in content_types
    ]
    out = handler.handle(rows, context)
    assert len(out) == len(rows)
    results = []
    for idx, body in enumerate(out):
        status = context.get_response_status(idx)[0] or 200
        assert context.get_response_content_type(idx) == "application/json"
        # Every answer, good or bad, says which model produced it (the manifest's name, "test").
        headers = context.get_response_headers(idx)
        assert headers[schemas.MODEL_NAME_HEADER] == MODEL_NAME
        assert headers[schemas.MODEL_VERSION_HEADER] == "test"
        results.append((status, schemas.parse_response(body)))
    return results
