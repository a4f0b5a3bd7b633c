"""The security defaults of docs/security.md, checked against the real server and real files.

- inference without a key, or with a wrong one, is refused by TorchServe's token check;
- management needs its own key: the inference key is refused there;

  (TorchServe 0.12.0 answers a missing or wrong key with HTTP 400 `InvalidKeyException`, not
  401: the tests pin what the pinned server really does, see `deploy.keys.TOKEN_REFUSED_STATUS`.)
- model registration is off (405), and `allowed_urls` admits no http(s) archive;
- only 127.0.0.1 is bound (the listening sockets of the real processes, read with psutil);
- the container runs as a non-root user (Dockerfile `USER`, and `id -u` in the image if built);
- keys never reach git, the Docker build context, or TorchServe's logs (grepped for the real keys).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest
import requests

from handler.schemas import Prediction
from tests.server_access import (
    CONFIG_PROPERTIES,
    MODEL_NAME,
    REPO_ROOT,
    assert_token_refused,
    endpoints,
    read_properties,
)

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
KEY_FILE_NAME = "key_file.json"
IMAGE_NAME = "lenet-serve"  # repository of docker-compose*.yml's images (tags cpu, gpu)
WRONG_TOKEN = "not-the-key-0123456789"


# --- static: configuration and files -----------------------------------------------------------
def test_config_binds_loopback_only_and_disables_registration():
    """The committed configuration: loopback addresses, tokens on, no model API."""
    props = read_properties(CONFIG_PROPERTIES)
    for key in ("inference_address", "management_address", "metrics_address"):
        host = re.sub(r"^https?://", "", props[key]).rsplit(":", 1)[0]
        assert host in {"127.0.0.1", "localhost"}, f"{CONFIG_PROPERTIES}: {key}={props[key]}"
    assert props.get("disable_token_authorization", "false").lower() == "false"
    assert props.get("enable_model_api", "false").lower() == "false"


def test_allowed_urls_admit_no_remote_archive():
    """`allowed_urls` matches local .mar files only: no http(s) URL passes the filter."""
    props = read_properties(CONFIG_PROPERTIES)
    assert "allowed_urls" in props, "allowed_urls unset: TorchServe's default admits any URL"
    # TorchServe splits the value on commas and matches each regex against the whole URL.
    patterns = [re.compile(p) for p in props["allowed_urls"].split(",")]
    for url in (
        "http://example.com/lenet.mar",
        "https://169.254.169.254/latest/meta-data/x.mar",
        "http://127.0.0.1:8000/lenet.mar",
    ):
        assert not any(p.fullmatch(url) for p in patterns), f"allowed_urls lets {url} through"
    assert any(p.fullmatch("file:///srv/model_store/lenet.mar") for p in patterns)


def test_key_file_is_not_tracked_by_git_and_is_ignored():
    """No key file in git, and `.gitignore` keeps new ones out."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert not [p for p in tracked if Path(p).name == KEY_FILE_NAME]
    for candidate in (KEY_FILE_NAME, f".run/{KEY_FILE_NAME}", f"deploy/{KEY_FILE_NAME}"):
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", candidate], cwd=REPO_ROOT, check=False
        )
        assert ignored.returncode == 0, f".gitignore does not cover {candidate}"


def dockerignore_rules(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern]]:
    """(is_exception, regex) per `.dockerignore` line, in order (Docker's last match wins)."""
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        # A pattern that matches a folder excludes everything under it.
        rules.append((negate, re.compile(f"{regex}(/.*)?")))
    return rules


def excluded_from_build_context(relpath: str, rules) -> bool:
    """Whether Docker leaves `relpath` out of the build context under `rules`."""
    excluded = False
    for negate, regex in rules:
        if regex.fullmatch(relpath):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_keys_and_run_dir_out_of_the_build_context():
    """`.dockerignore` excludes key files wherever they land, and the run dir."""
    if not DOCKERFILE.is_file():
        pytest.skip(f"{DOCKERFILE} not present")
    assert DOCKERIGNORE.is_file(), f"{DOCKERFILE} exists but {DOCKERIGNORE} does not"
    rules = dockerignore_rules()
    for path in (
        KEY_FILE_NAME,
        f".run/{KEY_FILE_NAME}",
        f"deploy/{KEY_FILE_NAME}",
        f"handler/{KEY_FILE_NAME}",
        f"loadtests/results/x/server/{KEY_FILE_NAME}",
        ".run/logs/ts_log.log",
    ):
        assert excluded_from_build_context(path, rules), f"{DOCKERIGNORE} lets {path} in"
    # The control: the code the image needs is still sent.
    assert not excluded_from_build_context("handler/lenet_handler.py", rules)


def dockerfile_final_user(path: Path = DOCKERFILE) -> str | None:
    """The `USER` in force in the final stage of a Dockerfile (None when never set)."""
    user = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.upper().startswith("FROM "):
            user = None  # each stage starts as root again
        elif line.upper().startswith("USER "):
            user = line.split(None, 1)[1].strip()
    return user


def test_dockerfile_runs_as_non_root():
    """The final stage switches to a non-root user."""
    if not DOCKERFILE.is_file():
        pytest.skip(f"{DOCKERFILE} not present")
    user = dockerfile_final_user()
    assert user is not None, f"{DOCKERFILE}: no USER in the final stage (runs as root)"
    name = user.split(":")[0]
    assert name not in {"root", "0"}, f"{DOCKERFILE}: USER {user}"


@pytest.mark.docker
def test_container_uid_is_not_zero():
    """`id -u` inside the built image is not 0 (needs a Docker engine and the image)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine")
    if subprocess.run([docker, "info"], capture_output=True, check=False).returncode != 0:
        # make test: compose-test starts the engine, checks the RUNNING server's uid (not 0)
        # itself, and stops the engine again, so this static check of the images then skips.
        pytest.skip("no running Docker engine (tests/test_compose.py checks the running "
                    "container's uid through deploy/compose-test.sh)")
    tags = subprocess.run(
        [docker, "images", IMAGE_NAME, "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    if not tags:
        pytest.skip(f"no {IMAGE_NAME} image built (docker compose -f docker-compose.cpu.yml build)")
    for tag in tags:  # cpu and gpu builds: every one must drop root
        uid = subprocess.run(
            [docker, "run", "--rm", "--network", "none", "--entrypoint", "id", tag, "-u"],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout.strip()  # fmt: skip
        assert uid.isdigit() and uid != "0", f"{tag} runs as uid {uid!r}"


# --- live: the real session server -------------------------------------------------------------
live = pytest.mark.integration


@live
def test_inference_without_a_key_is_refused(torchserve, mnist_png):
    ep = endpoints(torchserve)
    resp = requests.post(ep.predict_url, data=mnist_png[0], timeout=10,
                         headers={"Content-Type": "image/png"})  # fmt: skip
    assert_token_refused(resp)


@live
@pytest.mark.parametrize("key", ["wrong", "management"])
def test_inference_with_a_wrong_key_is_refused(torchserve, mnist_png, key):
    """A made-up key, or the management key: neither is the inference key."""
    ep = endpoints(torchserve)
    token = {"wrong": WRONG_TOKEN, "management": ep.management_token}[key]
    headers = {"Content-Type": "image/png", "Authorization": f"Bearer {token}"}
    resp = requests.post(ep.predict_url, data=mnist_png[0], headers=headers, timeout=10)
    assert_token_refused(resp)


@live
def test_inference_with_the_key_works(torchserve, mnist_png):
    """The control: the same request with the inference key is answered."""
    ep = endpoints(torchserve)
    headers = {"Content-Type": "image/png", **ep.inference_headers}
    resp = requests.post(ep.predict_url, data=mnist_png[0], headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text[:300]
    assert Prediction.model_validate_json(resp.content).digit == mnist_png[1]


@live
@pytest.mark.parametrize("key", ["none", "wrong", "inference"])
def test_management_refuses_anything_but_the_management_key(torchserve, key):
    """`GET /models` with no key, a wrong key or the *inference* key: refused."""
    ep = endpoints(torchserve)
    token = {"none": None, "wrong": WRONG_TOKEN, "inference": ep.inference_token}[key]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = requests.get(f"{ep.management_url}/models", headers=headers, timeout=10)
    assert_token_refused(resp)
    ok = requests.get(f"{ep.management_url}/models", headers=ep.management_headers, timeout=10)
    assert ok.status_code == 200 and MODEL_NAME in ok.text


@live
@pytest.mark.parametrize(
    "url", ["lenet.mar", "http://127.0.0.1:9/evil.mar", "https://example.com/evil.mar"]
)
def test_model_registration_is_disabled(torchserve, url):
    """`POST /models` with the management key: 405, whatever the archive URL."""
    ep = endpoints(torchserve)
    resp = requests.post(
        f"{ep.management_url}/models",
        params={"url": url, "model_name": "intruder"},
        headers=ep.management_headers,
        timeout=10,
    )
    assert resp.status_code == 405, resp.text[:300]
    models = requests.get(f"{ep.management_url}/models", headers=ep.management_headers, timeout=10)
    assert "intruder" not in models.text


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


@live
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


@live
def test_keys_are_not_in_the_logs(torchserve, mnist_png):
    """TorchServe's real logs in the run dir never contain the real key values."""
    ep = endpoints(torchserve)
    # Make sure authenticated requests have been logged before grepping.
    requests.get(f"{ep.management_url}/models", headers=ep.management_headers, timeout=10)
    requests.post(ep.predict_url, data=mnist_png[0], timeout=10,
                  headers={"Content-Type": "image/png", **ep.inference_headers})  # fmt: skip
    run_dir = Path(torchserve.run_dir)
    logs = [p for p in run_dir.rglob("*") if p.is_file() and p.name != KEY_FILE_NAME
            and (p.suffix in {".log", ".out", ".txt"} or "log" in p.parts)]  # fmt: skip
    assert logs, f"no log files under {run_dir}"
    keys = {k for k in (ep.inference_token, ep.management_token) if k}
    assert keys, "the server has no keys (token auth is off?)"
    for path in logs:
        text = path.read_text(errors="replace")
        for key in keys:
            assert key not in text, f"a key value appears in {path}"


@live
def test_key_file_is_private(torchserve):
    """TorchServe's key file is readable by its owner only (mode 0600)."""
    path = Path(torchserve.run_dir) / KEY_FILE_NAME
    assert path.is_file(), f"no key file at {path}"
    assert path.stat().st_mode & 0o077 == 0, f"{path} mode {oct(path.stat().st_mode)}"
