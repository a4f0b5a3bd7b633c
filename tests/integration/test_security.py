"""The security defaults of docs/security.md, checked against the real session server.

- inference without a key, or with a wrong one, is refused by TorchServe's token check;
- management needs its own key: the inference key is refused there;
  (TorchServe 0.12.0 answers a missing or wrong key with HTTP 400 `InvalidKeyException`, not
  401: the tests pin what the pinned server really does, see `deploy.keys.TOKEN_REFUSED_STATUS`.)
- model registration is off (405), whatever the archive URL;
- only 127.0.0.1 is bound (the listening sockets of the real processes, read with psutil);
- keys never reach TorchServe's logs (grepped for the real keys), and the key file is private.

What lives in files (configuration, .gitignore, .dockerignore, Dockerfile) is checked without a
server in tests/unit/test_security_config.py; the container's uid in tests/compose.
"""

from __future__ import annotations

import ipaddress

import psutil
import pytest
import requests

from deploy.keys import KEY_FILE_NAME, auth_headers
from handler import MODEL_NAME
from handler.schemas import Prediction
from tests.server_access import assert_token_refused

WRONG_TOKEN = "not-the-key-0123456789"


def list_models(server, token: str | None) -> requests.Response:
    """`GET /models` on the server's management API, sending `token` (None: no header)."""
    return requests.get(f"{server.management_url}/models", headers=auth_headers(token),
                        timeout=10)  # fmt: skip


def post_digit(server, png: bytes, token: str | None) -> requests.Response:
    """One digit to the inference API, sending `token` (None: no header)."""
    return requests.post(server.predict_url, data=png, timeout=10,
                         headers={"Content-Type": "image/png", **auth_headers(token)})  # fmt: skip


def test_inference_without_a_key_is_refused(torchserve, mnist_png):
    assert_token_refused(post_digit(torchserve, mnist_png[0], None))


@pytest.mark.parametrize("key", ["wrong", "management"])
def test_inference_with_a_wrong_key_is_refused(torchserve, mnist_png, key):
    """A made-up key, or the management key: neither is the inference key."""
    token = {"wrong": WRONG_TOKEN, "management": torchserve.management_token}[key]
    assert_token_refused(post_digit(torchserve, mnist_png[0], token))


def test_inference_with_the_key_works(torchserve, mnist_png):
    """The control: the same request with the inference key is answered."""
    resp = post_digit(torchserve, mnist_png[0], torchserve.inference_token)
    assert resp.status_code == 200, resp.text[:300]
    assert Prediction.model_validate_json(resp.content).digit == mnist_png[1]


@pytest.mark.parametrize("key", ["none", "wrong", "inference"])
def test_management_refuses_anything_but_the_management_key(torchserve, key):
    """`GET /models` with no key, a wrong key or the *inference* key: refused."""
    token = {"none": None, "wrong": WRONG_TOKEN, "inference": torchserve.inference_token}[key]
    assert_token_refused(list_models(torchserve, token))
    ok = list_models(torchserve, torchserve.management_token)
    assert ok.status_code == 200 and MODEL_NAME in ok.text


@pytest.mark.parametrize(
    "url", ["lenet.mar", "http://127.0.0.1:9/evil.mar", "https://example.com/evil.mar"]
)
def test_model_registration_is_disabled(torchserve, url):
    """`POST /models` with the management key: 405, whatever the archive URL."""
    resp = requests.post(
        f"{torchserve.management_url}/models",
        params={"url": url, "model_name": "intruder"},
        headers=auth_headers(torchserve.management_token),
        timeout=10,
    )
    assert resp.status_code == 405, resp.text[:300]
    assert "intruder" not in list_models(torchserve, torchserve.management_token).text


def listening_addresses(pid: int) -> set[str]:
    """IP addresses the process `pid` and its children listen on (TCP)."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    pids = {p.pid for p in procs}
    return {
        conn.laddr.ip
        for conn in psutil.net_connections(kind="tcp")
        if conn.pid in pids and conn.status == psutil.CONN_LISTEN
    }


def test_only_loopback_is_bound(torchserve):
    """Every listening socket of the real server is on 127.0.0.1 (no 0.0.0.0, no ::)."""
    addresses = listening_addresses(torchserve.pid)
    assert addresses, f"found no listening socket of pid {torchserve.pid}"
    for ip in addresses:
        address = ipaddress.ip_address(ip)
        # The JVM binds dual-stack sockets: 127.0.0.1 shows up as ::ffff:127.0.0.1.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        assert address.is_loopback, f"TorchServe listens on {ip}"


def test_keys_are_not_in_the_logs(torchserve, mnist_png):
    """TorchServe's real logs in the run dir never contain the real key values."""
    # Make sure authenticated requests have been logged before grepping.
    assert list_models(torchserve, torchserve.management_token).status_code == 200
    assert post_digit(torchserve, mnist_png[0], torchserve.inference_token).status_code == 200
    run_dir = torchserve.run_dir
    logs = [p for p in run_dir.rglob("*") if p.is_file() and p.name != KEY_FILE_NAME
            and (p.suffix in {".log", ".out", ".txt"} or "log" in p.parts)]  # fmt: skip
    assert logs, f"no log files under {run_dir}"
    keys = {k for k in (torchserve.inference_token, torchserve.management_token) if k}
    assert keys, "the server has no keys (token auth is off?)"
    for path in logs:
        text = path.read_text(errors="replace")
        for key in keys:
            assert key not in text, f"a key value appears in {path}"


def test_key_file_is_private(torchserve):
    """TorchServe's key file is readable by its owner only (mode 0600)."""
    path = torchserve.key_file
    assert path.is_file(), f"no key file at {path}"
    assert path.stat().st_mode & 0o077 == 0, f"{path} mode {oct(path.stat().st_mode)}"
