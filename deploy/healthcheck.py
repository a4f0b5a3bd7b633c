#!/opt/venv/bin/python
"""Container HEALTHCHECK: healthy when TorchServe can answer a prediction now.

Two local requests, standard library only (it runs every few seconds):
1. GET /ping on the inference API must say "Healthy";
2. the management API's describe of the model must list at least one READY worker. /ping alone
   is not enough: TorchServe 0.12.0 answers Healthy while the worker is still loading, seconds
   before it can answer a prediction.

With token authorisation on (the default) each request carries its key from the key file
TorchServe wrote into its working directory (deploy/keys.py: $LENET_RUN_DIR/key_file.json).
The keys are never printed.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

from deploy.keys import auth_headers, inference_token, management_token
from handler import MODEL_NAME


def _get_json(url: str, token: str | None):
    request = urllib.request.Request(url, headers=auth_headers(token))
    with urllib.request.urlopen(request, timeout=3) as response:
        return json.loads(response.read())


def check() -> str | None:
    """None when healthy, else the reason."""
    inference = f"http://127.0.0.1:{os.environ.get('LENET_INFERENCE_PORT', '8080')}"
    management = f"http://127.0.0.1:{os.environ.get('LENET_MANAGEMENT_PORT', '8081')}"
    try:
        status = _get_json(f"{inference}/ping", inference_token()).get("status")
        if status != "Healthy":
            return f"{inference}/ping says {status!r}"
        described = _get_json(f"{management}/models/{MODEL_NAME}", management_token())
    except (urllib.error.URLError, OSError, ValueError, RuntimeError) as exc:
        return f"{exc}"
    workers = [w.get("status") for model in described for w in model.get("workers", [])]
    if "READY" not in workers:
        return f"no READY worker for {MODEL_NAME} yet: {workers}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when healthy, else 1 with the reason on stdout (shown by docker inspect)."""
    reason = check()
    print(f"unhealthy: {reason}" if reason else "healthy")
    return 1 if reason else 0


if __name__ == "__main__":
    sys.exit(main())
