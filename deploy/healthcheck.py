#!/opt/venv/bin/python
"""Container HEALTHCHECK: GET /ping on the local inference API, healthy on 200 "Healthy".

With token authorisation on (the default) the request carries the inference key from the key
file TorchServe wrote into its working directory (deploy/keys.py: $LENET_RUN_DIR/key_file.json).
Standard library only and one short request: it runs every few seconds. The key is never printed.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

from deploy.keys import auth_headers, inference_token


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when TorchServe answers /ping with Healthy, else 1 with the reason on stdout."""
    port = os.environ.get("LENET_INFERENCE_PORT", "8080")
    url = f"http://127.0.0.1:{port}/ping"
    try:
        token = inference_token()
    except RuntimeError as exc:
        print(f"unhealthy: {exc}")
        return 1
    request = urllib.request.Request(url, headers=auth_headers(token))
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            status = json.loads(response.read()).get("status")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}")
        return 1
    if status != "Healthy":
        print(f"unhealthy: {url} says {status!r}")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
