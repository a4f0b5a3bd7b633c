"""Where the project's clients find TorchServe's API keys.

With token authorisation on (the default here), TorchServe writes `key_file.json` (mode 0600)
into its working directory at start-up, holding an inference key, a management key and the
token API key. `deploy.server` runs TorchServe inside the run directory (`.run/` by default,
`LENET_RUN_DIR` to move it), so every client of this project (CLI, tests, batch job, load tests,
health checks) reads the keys from there, unless the environment provides them:

- `LENET_INFERENCE_TOKEN`  / `LENET_MANAGEMENT_TOKEN`: the key itself (e.g. in a container);
- `LENET_KEY_FILE`: another key file;
- `LENET_TOKEN_AUTH=off`: the documented switch for a tokens-off local run (no header is sent).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from project import paths

KEY_FILE_NAME = "key_file.json"

# How TorchServe 0.12.0 (the final release) refuses a missing, wrong or wrong-kind key: HTTP 400
# with this error type, not 401. Its token check raises InvalidKeyException, a ModelException,
# and the frontend's HttpRequestHandler maps every ModelException to BAD_REQUEST. Clients tell
# a refused key from a bad image by the type; the tests pin both values.
TOKEN_REFUSED_STATUS = 400
TOKEN_REFUSED_TYPE = "InvalidKeyException"


def key_file() -> Path:
    """The key file TorchServe wrote (or `LENET_KEY_FILE`)."""
    return Path(os.environ.get("LENET_KEY_FILE", paths.run_dir() / KEY_FILE_NAME))


def token_auth_enabled() -> bool:
    """False only when `LENET_TOKEN_AUTH=off` asks for a tokens-off run."""
    return os.environ.get("LENET_TOKEN_AUTH", "on").strip().lower() not in {"off", "0", "false"}


def read_key(kind: str, path: Path | None) -> str | None:
    """The `kind` ("inference"/"management") key in a key file, or None when none is written yet."""
    path = Path(path) if path else key_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RuntimeError(f"cannot read TorchServe key file {path}: {exc}") from exc
    if not text.strip():
        # TorchServe creates the file, then writes it: a reader polling a starting server
        # (TorchServe.wait_ready, a client after a restart) can see it empty. Not written yet.
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # Same race, one step later: the file is half written. A finished file that stays
        # unparsable is reported by the caller as "no key" (the server refuses the request).
        return None
    if not isinstance(data, dict) or not isinstance(data.get(kind), dict):
        return None
    return data[kind].get("key")


def inference_token(path: Path | None = None) -> str | None:
    """The inference key, or None when token auth is off or no key is known yet."""
    if not token_auth_enabled():
        return None
    return os.environ.get("LENET_INFERENCE_TOKEN") or read_key("inference", path)


def management_token(path: Path | None = None) -> str | None:
    """The management key, or None when token auth is off or no key is known yet."""
    if not token_auth_enabled():
        return None
    return os.environ.get("LENET_MANAGEMENT_TOKEN") or read_key("management", path)


def auth_headers(token: str | None) -> dict[str, str]:
    """`Authorization: Bearer <token>` when there is a token, else nothing."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def main() -> int:
    """`python3 -m deploy.keys`: print the inference key (stdlib only, for curl one-liners)."""
    token = inference_token()
    if token is None:
        print("no inference key: is the server running (make serve), or token auth off?",
              file=sys.stderr)  # fmt: skip
        return 1
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
