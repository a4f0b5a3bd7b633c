"""MNIST IDX reading, checksums and mirror download (`train.mnist`)."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from project.paths import REPO_ROOT
from train import mnist
from train.cli import main


def idx_bytes(magic: int, array: np.ndarray, declared_count: int | None = None) -> bytes:
    """IDX encoding of a uint8 array: big-endian magic, dimension sizes, then the bytes."""
    dims = list(array.shape)
    if declared_count is not None:
        dims[0] = declared_count
    return struct.pack(f">{1 + len(dims)}i", magic, *dims) + array.astype(np.uint8).tobytes()


def write_idx(path: Path, data: bytes, gz: bool = False) -> Path:
    """Write IDX bytes to `path` (gzipped and suffixed .gz when `gz`)."""
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def copy_of_mnist(source: Path, target: Path) -> Path:
    """A writable stand-in for the real MNIST folder: links to its IDX files."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if "idx" in entry.name:
            (target / entry.name).symlink_to(entry.resolve())
    return target


def _assert_clear_error(message: str, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from error: {message}"
    assert "--data-dir" in message and "MNIST_DIR" in message, message
    assert "Traceback" not in message


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_parses_valid_image_and_label_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    img_path = write_idx(tmp_path / "img", idx_bytes(mnist.IMAGES_MAGIC, images), gz=gz)
    lab_path = write_idx(tmp_path / "lab", idx_bytes(mnist.LABELS_MAGIC, labels), gz=gz)

    parsed_images = mnist.parse_idx(
        mnist.read_bytes(img_path), images=True, expected_count=5, source="img"
    )
    parsed_labels = mnist.parse_idx(
        mnist.read_bytes(lab_path), images=False, expected_count=5, source="lab"
    )

    assert parsed_images.dtype == np.uint8 and parsed_images.shape == (5, 28, 28)
    np.testing.assert_array_equal(parsed_images, images)
    np.testing.assert_array_equal(parsed_labels, labels)


def test_bad_magic_is_a_clear_error():
    labels = np.zeros(3, dtype=np.uint8)
    with pytest.raises(mnist.MnistError) as err:
        mnist.parse_idx(
            idx_bytes(mnist.IMAGES_MAGIC, labels), images=False, expected_count=3, source="f"
        )
    _assert_clear_error(str(err.value), "magic number 2051", "expected 2049")


def test_truncated_file_is_a_clear_error():
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    data = idx_bytes(mnist.IMAGES_MAGIC, images)[:-10]
    with pytest.raises(mnist.MnistError) as err:
        mnist.parse_idx(data, images=True, expected_count=4, source="cut.idx")
    _assert_clear_error(str(err.value), "cut.idx", "truncated")


def test_truncated_header_is_a_clear_error():
    with pytest.raises(mnist.MnistError) as err:
        mnist.parse_idx(b"\x00\x00\x08", images=True, expected_count=None, source="tiny")
    _assert_clear_error(str(err.value), "truncated")


def test_wrong_count_is_a_clear_error():
    labels = np.zeros(7, dtype=np.uint8)
    with pytest.raises(mnist.MnistError) as err:
        mnist.parse_idx(
            idx_bytes(mnist.LABELS_MAGIC, labels), images=False, expected_count=10, source="f"
        )
    _assert_clear_error(str(err.value), "declares 7 items, expected 10")


def test_cli_stops_with_one_message_on_bad_magic(tmp_path, capsys):
    """The job itself: exit code 2 and one message, no traceback."""
    bad = idx_bytes(mnist.LABELS_MAGIC, np.zeros((2, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-images-idx3-ubyte", bad, gz=True)
    for name in mnist.FILE_NAMES[1:]:
        write_idx(tmp_path / name, bad)

    code = main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"])

    err = capsys.readouterr().err
    assert code == 2
    _assert_clear_error(err, "train-images-idx3-ubyte.gz", "magic number 2049")
    assert not (tmp_path / "out" / "lenet.pt").exists()


def test_missing_directory_as_a_real_process_gives_one_line_and_exit_code(tmp_path):
    missing = tmp_path / "nowhere"
    proc = subprocess.run(
        [sys.executable, "-m", "train", "--data-dir", str(missing), "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: MNIST directory")
    _assert_clear_error(proc.stderr, str(missing))


# --- the real data and checksums ---------------------------------------------------------


def test_loads_real_mnist_with_expected_shapes_and_checksums(mnist_dir):
    train_x, train_y, test_x, test_y = mnist.load_mnist(mnist_dir)
    assert train_x.shape == (60_000, 28, 28) and test_x.shape == (10_000, 28, 28)
    assert train_y.shape == (60_000,) and test_y.shape == (10_000,)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.uint8
    assert set(np.unique(test_y)) == set(range(10))
    # Known facts about the first digits of each split (the files are bit-exact MNIST).
    assert train_y[:5].tolist() == [5, 0, 4, 1, 9]
    assert test_y[:5].tolist() == [7, 2, 1, 0, 4]


def test_local_checksum_mismatch_is_a_clear_error(tmp_path, mnist_dir):
    data_dir = copy_of_mnist(mnist_dir, tmp_path / "mnist")
    name = "t10k-labels-idx1-ubyte"
    original = mnist.read_bytes(mnist.find_file(data_dir, name))
    tampered = bytearray(original)
    tampered[-1] = (tampered[-1] + 1) % 10  # still a valid label file, just one label changed
    for stale in data_dir.glob(f"{name}*"):
        stale.unlink()
    (data_dir / name).write_bytes(bytes(tampered))

    with pytest.raises(mnist.MnistError) as err:
        mnist.load_mnist(data_dir)
    _assert_clear_error(str(err.value), "checksum mismatch", name, mnist.SHA256[name])


# --- download from mirrors (local http.server only) ---------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def serve_dir():
    """Start an http.server on 127.0.0.1 for a folder; yields a function -> base URL."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _dead_mirror() -> str:
    """A 127.0.0.1 URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def _gz_copy(source: Path, target: Path) -> Path:
    """The four files gzipped under their mirror names."""
    target.mkdir()
    for name in mnist.FILE_NAMES:
        (target / f"{name}.gz").write_bytes(
            gzip.compress(mnist.read_bytes(mnist.find_file(source, name)), compresslevel=1)
        )
    return target


def test_download_falls_back_past_dead_and_bad_mirrors(tmp_path, serve_dir, mnist_dir):
    good = serve_dir(_gz_copy(mnist_dir, tmp_path / "good"))
    (tmp_path / "empty").mkdir()
    empty = serve_dir(tmp_path / "empty")  # a live server that answers 404 for every file
    cache = tmp_path / "cache"

    got = mnist.download_mnist(cache, mirrors=[_dead_mirror(), empty, good], timeout=5)

    assert got == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in mnist.FILE_NAMES)
    train_x, _, test_x, _ = mnist.load_mnist(cache)
    assert train_x.shape == (60_000, 28, 28) and test_x.shape == (10_000, 28, 28)
    # A second call reuses the verified cache: it must not need any mirror.
    assert mnist.download_mnist(cache, mirrors=[_dead_mirror()], timeout=5) == cache


def test_mirror_with_wrong_bytes_is_skipped_then_reported(tmp_path, serve_dir):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name in mnist.FILE_NAMES:
        (wrong / f"{name}.gz").write_bytes(gzip.compress(b"not mnist"))
    url = serve_dir(wrong)

    with pytest.raises(mnist.MnistError) as err:
        mnist.download_file(mnist.FILE_NAMES[3], tmp_path / "cache", [url], timeout=5)
    _assert_clear_error(str(err.value), "checksum mismatch", url)
    cached = list((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else []
    assert cached == [], "a file with the wrong checksum must not be cached"


def test_cli_without_data_and_no_reachable_mirror_fails_clearly(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MNIST_DIR", raising=False)
    dead = _dead_mirror()

    code = main(
        [
            "--cache-dir",
            str(tmp_path / "cache"),
            "--mirror",
            dead,
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )

    err = capsys.readouterr().err
    assert code == 2
    _assert_clear_error(err, "could not download", dead)


def test_resolve_prefers_option_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "env"))
    assert mnist.resolve_data_dir(tmp_path / "opt") == tmp_path / "opt"
    assert mnist.resolve_data_dir(None) == tmp_path / "env"


def test_cached_copy_is_not_refetched(tmp_path, mnist_dir):
    source = mnist_dir
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in mnist.FILE_NAMES:
        shutil.copy(mnist.find_file(source, name), cache / f"{name}.gz")
    assert mnist.download_mnist(cache, mirrors=[_dead_mirror()], timeout=5) == cache


def test_test_digits_need_only_the_two_test_files(tmp_path, mnist_dir):
    source = mnist_dir
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        found = mnist.find_file(source, name)
        (tmp_path / found.name).symlink_to(found.resolve())

    images, labels = mnist.load_test_digits(tmp_path)

    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    with pytest.raises(mnist.MnistError, match="train-images-idx3-ubyte"):
        mnist.load_mnist(tmp_path)
