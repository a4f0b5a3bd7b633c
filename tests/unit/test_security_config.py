"""The security defaults of docs/security.md that live in files: the committed configuration,
git, the Docker build context and the Dockerfile (no server needed; the live checks are in
tests/integration/test_security.py).

- the committed config binds loopback only, keeps token auth on and model registration off,
  and its `allowed_urls` admits no remote archive;
- key files never reach git or the Docker build context (Docker's own `.dockerignore` rules,
  applied by docker-py to a tree with key files planted where TorchServe and the tools write
  them);
- the image's final stage runs as a non-root user.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from deploy.config import BASE_CONFIG, read_properties
from deploy.keys import KEY_FILE_NAME
from project.paths import REPO_ROOT

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def test_config_binds_loopback_only_and_disables_registration():
    """The committed configuration: loopback addresses, tokens on, no model API."""
    props = read_properties(BASE_CONFIG)
    for key in ("inference_address", "management_address", "metrics_address"):
        host = re.sub(r"^https?://", "", props[key]).rsplit(":", 1)[0]
        assert host in {"127.0.0.1", "localhost"}, f"{BASE_CONFIG}: {key}={props[key]}"
    assert props.get("disable_token_authorization", "false").lower() == "false"
    assert props.get("enable_model_api", "false").lower() == "false"


def test_allowed_urls_admit_no_remote_archive():
    """`allowed_urls` matches local .mar files only: no http(s) URL passes the filter."""
    props = read_properties(BASE_CONFIG)
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


def build_context(root: Path, files: list[str], dockerignore: Path = DOCKERIGNORE) -> set[str]:
    """The files Docker sends as the build context of a folder `root` holding `files`, under
    the repository's `.dockerignore` (docker-py's implementation of Docker's rules)."""
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    shutil.copy(dockerignore, root / ".dockerignore")
    # Read as `docker build` reads the file (docker-py's APIClient.build does the same).
    lines = [line.strip() for line in dockerignore.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    sent = exclude_paths(str(root), patterns, dockerfile=str(DOCKERFILE.relative_to(REPO_ROOT)))
    return {p for p in sent if (root / p).is_file()}


SECRETS = [
    KEY_FILE_NAME,
    f".run/{KEY_FILE_NAME}",
    f"deploy/{KEY_FILE_NAME}",
    f"handler/{KEY_FILE_NAME}",
    f"loadtests/results/x/server/{KEY_FILE_NAME}",
    ".run/logs/ts_log.log",
    "deploy/tls.key",
    ".env",
]
NEEDED = ["pyproject.toml", "handler/lenet_handler.py", "deploy/config.properties",
          "project/paths.py", "train/model.py"]  # fmt: skip


def test_dockerignore_keeps_keys_and_run_dir_out_of_the_build_context(tmp_path):
    """`.dockerignore` excludes key files wherever they land, and the run dir, while the code
    the image needs is still sent."""
    if not DOCKERFILE.is_file():
        pytest.skip(f"{DOCKERFILE} not present")
    assert DOCKERIGNORE.is_file(), f"{DOCKERFILE} exists but {DOCKERIGNORE} does not"
    sent = build_context(tmp_path, SECRETS + NEEDED)
    leaked = [p for p in SECRETS if p in sent]
    assert not leaked, f"{DOCKERIGNORE} lets {leaked} into the build context"
    missing = [p for p in NEEDED if p not in sent]
    assert not missing, f"{DOCKERIGNORE} keeps {missing}, which the image needs, out"


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
