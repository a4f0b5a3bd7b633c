"""The suite's shared fixtures, and its tiers.

Tiers are folders; the marker follows from the folder (`pytest_collection_modifyitems` below),
so `-m` selects exactly what the layout shows:

    tests/unit/         no server: functions, the handler driven like TorchServe drives it,
                        the CLIs as subprocesses
    tests/integration/  against a real TorchServe                  -> integration
    tests/faults/       faults injected into real processes        -> faults, slow, integration
    tests/compose/      the docker-compose deployment               -> docker
    tests/browser/      the web page in headless Chromium           -> browser, integration, slow

`slow` and `gpu` are set by the tests that need them. A test that asks for a server fixture
outside integration/ or faults/ is a collection error, so `-m "not integration"` never starts one.

Fixtures (names are stable; the load-test and fault tests use them too):

- MNIST: `mnist_dir` (the folder holding the four IDX files), `mnist_test` (the 10,000 test
  digits, `(images, labels)`, uint8 `(N, 28, 28)` and `(N,)`), `mnist_png` (`(png, label)` of
  the first test digit). They come from `$MNIST_DIR`, else `train.mnist`'s download cache, through
  `train.mnist`; tests never download: without the data they skip, saying why.
- PNG: a digit becomes an upload through `samples.digits.encode_png`, nowhere else;
  `digit_files(folder, count)` writes test digits as PNG files and returns their labels.
- models: `model_path` (the trained `artifacts/lenet.pt` when present, else an untrained LeNet-5
  exported the way training exports it: same code paths, meaningless digits), `trained_model`
  (skips without the trained one), `quick_run` (one `python -m train --quick`, shared),
  `mar_path` (`model_store/lenet.mar`; skips with `make archive` as the fix).
- servers: `torchserve` (session) is ONE real TorchServe serving that archive on free ports with
  token auth and server-side batching (batchSize 16, maxBatchDelay 20 ms), so concurrent requests
  really share a forward pass, and no explanation budget; do not stop or reconfigure it.
  `torchserve_factory(**settings)` starts a private `deploy.server.TorchServe.private(run_dir,
  **settings)` (any `deploy.config.ServerConfig` field, e.g. `model_config_overrides={"batchSize":
  4}`, `token_auth=False`); `start=False` returns it unstarted. Every one is stopped at teardown.
- the batch CLI: `batch_cli.run(...)`, `.start(...)`, `.command(...)` and `.rows(output)`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploy.config import MAR_NAME
from deploy.server import TorchServe
from handler.preprocessing import to_mnist
from project import paths
from samples.digits import encode_png
from tests.glyphs import ink_mask
from tests.images import write_labelled_pngs

TESTS_DIR = Path(__file__).resolve().parent

# Helper modules whose asserts check a test's result on its behalf: registered here, before any
# test imports them, so that their failures show the values compared, as a test's own do.
pytest.register_assert_rewrite(
    "tests.handler_context", "tests.explanation_checks", "tests.fault_harness", "tests.ray_cluster"
)

# Explanations unbudgeted (handler/limits.py `ExplanationBudget`): a test that counts statuses
# then gets the same ones however fast the host is; the budget has its own test on a private server.
SESSION_MODEL_CONFIG = {"batchSize": 16, "maxBatchDelay": 20, "explain_share": 1}

# Folder -> markers every test in it carries.
TIER_MARKERS = {
    "integration": ("integration",),
    "faults": ("faults", "slow", "integration"),
    "compose": ("docker",),
    "browser": ("browser", "integration", "slow"),
}
SERVER_FIXTURES = {"torchserve", "torchserve_factory"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Mark every test by its tier folder; refuse a server test outside the server tiers."""
    misplaced = []
    for item in items:
        try:
            tier = Path(item.path).resolve().relative_to(TESTS_DIR).parts[0]
        except ValueError:
            continue
        for name in TIER_MARKERS.get(tier, ()):
            item.add_marker(name)
        if SERVER_FIXTURES & set(item.fixturenames) and not item.get_closest_marker("integration"):
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            f"tests that start TorchServe must live in tests/integration or tests/faults "
            f"(or be marked integration): {misplaced}"
        )


# --- MNIST ------------------------------------------------------------------------------------
def _mnist_folder() -> Path:
    """`$MNIST_DIR`, else `train.mnist`'s download cache: read only, tests never download."""
    from train.mnist import DEFAULT_CACHE_DIR

    return Path(os.environ.get("MNIST_DIR") or DEFAULT_CACHE_DIR).expanduser()


def _skip_without_mnist(exc: Exception) -> None:
    first_line = str(exc).splitlines()[0]
    pytest.skip(f"MNIST not on disk (set MNIST_DIR; tests never download): {first_line}")


@pytest.fixture(scope="session")
def ink() -> np.ndarray:
    """The test glyph's ink (tests.glyphs), 0..1, white on black."""
    return ink_mask()


@pytest.fixture(scope="session")
def reference(ink) -> np.ndarray:
    """What the glyph should become: white-on-black L input needs no inversion or cleaning."""
    return to_mnist(Image.fromarray((ink * 255).astype(np.uint8), "L"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with all four MNIST IDX files (training tests need the training split)."""
    from train.mnist import FILE_NAMES, MnistError, find_file

    folder = _mnist_folder()
    try:
        for name in FILE_NAMES:
            find_file(folder, name)
    except MnistError as exc:
        _skip_without_mnist(exc)
    return folder


@pytest.fixture(scope="session")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test digits and labels, read and verified by `train.mnist`."""
    from train.mnist import MnistError, load_test_digits

    folder = _mnist_folder()
    try:
        return load_test_digits(folder)  # a folder is given, so this never downloads
    except MnistError as exc:
        _skip_without_mnist(exc)


@pytest.fixture(scope="session")
def mnist_png(mnist_test) -> tuple[bytes, int]:
    """The first MNIST test digit as the PNG a client uploads, and its label."""
    images, labels = mnist_test
    return encode_png(images[0]), int(labels[0])


@pytest.fixture(scope="session")
def digit_files(mnist_test) -> Callable[..., dict[str, int]]:
    """`digit_files(folder, count, per_folder=500)`: the first `count` test digits as PNG files
    in sub-folders of `folder`; returns {relative path: label}."""
    images, labels = mnist_test

    def write(folder: Path, count: int, per_folder: int = 500) -> dict[str, int]:
        pngs = [encode_png(image) for image in images[:count]]
        return write_labelled_pngs(folder, pngs, labels[:count], count, per_folder)

    return write


# --- models -----------------------------------------------------------------------------------
def export_untrained(path: Path) -> Path:
    """A freshly initialised LeNet-5 exported exactly as training exports one (TorchScript with
    its metadata), for hosts without a trained model: same code paths, meaningless digits."""
    import torch

    from handler import MODEL_NAME, normalization
    from train.export import save_torchscript
    from train.model import LeNet5

    torch.manual_seed(0)
    metadata = {"name": MODEL_NAME, "version": "test-untrained", "variant": "modern",
                "normalization": normalization.describe()}  # fmt: skip
    save_torchscript(LeNet5("modern"), path, metadata)
    return path


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """The trained `artifacts/lenet.pt` when present, else an untrained export of LeNet-5."""
    if paths.DEFAULT_ARTIFACT.is_file():
        return paths.DEFAULT_ARTIFACT
    return export_untrained(tmp_path_factory.mktemp("untrained") / "lenet.pt")


@pytest.fixture(scope="session")
def trained_model() -> Path:
    """The trained `artifacts/lenet.pt`, for tests that check accuracy (skips without it)."""
    if not paths.DEFAULT_ARTIFACT.is_file():
        pytest.skip(f"no trained model at {paths.DEFAULT_ARTIFACT}: run `make train`")
    return paths.DEFAULT_ARTIFACT


@pytest.fixture(scope="session")
def quick_run(mnist_dir, tmp_path_factory) -> tuple[Path, dict]:
    """One in-process `python -m train --quick` for the session: (output folder, metrics)."""
    import json

    from train.cli import main

    out = tmp_path_factory.mktemp("quick-train")
    # On the CPU everywhere, so its figures mean the same on a GPU host.
    code = main(["--quick", "--out", str(out), "--data-dir", str(mnist_dir), "--device", "cpu",
                 "--no-progress"])  # fmt: skip
    assert code == 0, f"quick training run exited with {code}"
    return out, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="session")
def mar_path() -> Path:
    """`model_store/lenet.mar` (or under `$LENET_MODEL_STORE`); skips when it is not built."""
    mar = paths.model_store() / MAR_NAME
    if not mar.is_file():
        pytest.skip(f"{mar} is missing: build it with `make archive` (needs artifacts/lenet.pt)")
    return mar


# --- servers ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def torchserve(mar_path: Path, tmp_path_factory) -> Iterator[TorchServe]:
    server = TorchServe.private(tmp_path_factory.mktemp("torchserve-session"),
                                model_store=mar_path.parent,
                                model_config_overrides=SESSION_MODEL_CONFIG)  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def torchserve_factory(mar_path: Path, tmp_path) -> Iterator[Callable[..., TorchServe]]:
    made: list[TorchServe] = []

    def make(start: bool = True, **settings) -> TorchServe:
        settings.setdefault("model_store", mar_path.parent)
        run_dir = settings.pop("run_dir", tmp_path / f"torchserve-{len(made)}")
        server = TorchServe.private(run_dir, **settings)
        made.append(server)
        return server.start() if start else server

    yield make
    errors = []
    for server in made:
        try:
            server.stop()
        except Exception as exc:  # stop every server even if one fails to stop cleanly
            errors.append(exc)
    if errors:
        raise errors[0]


# --- the batch CLI ----------------------------------------------------------------------------
class BatchCli:
    """`python -m batch ...` exactly as a user runs it: a subprocess in the repository root.

    Its environment is the test's without any LENET_* setting (a developer's token or model
    must not leak in); `server=` points the job at that server's key file, as a user's shell
    would. `start` puts the job in its own process group, so a test can SIGKILL it whole.
    """

    def command(self, *args: str | Path) -> list[str]:
        return [sys.executable, "-m", "batch", *map(str, args)]

    def env(self, server: TorchServe | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LENET_")}
        if server is not None:
            env["LENET_KEY_FILE"] = str(server.key_file)
        return {**env, **extra}

    def run(self, *args: str | Path, server: TorchServe | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:  # fmt: skip
        """Run the job to completion; the completed process (stdout/stderr as text)."""
        return subprocess.run(self.command(*args), cwd=paths.REPO_ROOT, capture_output=True,
                              text=True, timeout=timeout,
                              env={**self.env(server), **(env or {})})  # fmt: skip

    def start(self, *args: str | Path, log: Path, server: TorchServe | None = None,
              env: dict | None = None) -> subprocess.Popen:  # fmt: skip
        """Start the job in its own process group, its output appended to `log`."""
        with open(log, "ab") as out:
            return subprocess.Popen(self.command(*args), cwd=paths.REPO_ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**self.env(server), **(env or {})})  # fmt: skip

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """SIGKILL a started job together with its decode workers."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    @staticmethod
    def rows(output: Path) -> list:
        """Every row of a predictions file (CSV or JSONL), read by the job's own reader."""
        from batch.open_output import read_rows
        from batch.output import format_for

        return list(read_rows(output, format_for(output)))


@pytest.fixture(scope="session")
def batch_cli() -> BatchCli:
    return BatchCli()
