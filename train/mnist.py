"""MNIST in the standard IDX layout: read, verify, and (when no local copy is given) download.

`load_mnist(data_dir)` returns `(train_x, train_y, test_x, test_y)` as uint8 numpy arrays
(images `(N, 28, 28)`, labels `(N,)`). Each of the four files may be gzipped or not. The sha256
of the *decompressed* bytes is checked against `SHA256`, so a local copy and a download are held
to the same standard.

Every problem (bad magic, truncation, wrong count, checksum mismatch, no reachable mirror) raises
`MnistError` with one message that also says how to point the job at a local copy.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

IMAGES_MAGIC = 2051  # IDX: unsigned byte data, 3 dimensions
LABELS_MAGIC = 2049  # IDX: unsigned byte data, 1 dimension
TRAIN_COUNT = 60_000
TEST_COUNT = 10_000

# sha256 of the decompressed files, from the issue; a file that differs is not MNIST.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FILE_NAMES = tuple(SHA256)

# Tried in order; each serves the four files gzipped under these names.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "lenet-mnist"
DOWNLOAD_TIMEOUT_S = 30.0

HOW_TO_FIX = (
    "Point the job at a local copy of the four MNIST IDX files (gzipped or not) with "
    "--data-dir DIR or the MNIST_DIR environment variable."
)


class MnistError(RuntimeError):
    """MNIST could not be read, verified or downloaded; the message says what, where and how."""


@dataclass(frozen=True)
class Mnist:
    """The four arrays plus the sha256 of each decompressed file (recorded in metadata)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    sha256: dict[str, str]
    source: str


def _fail(message: str) -> MnistError:
    return MnistError(f"{message}\n{HOW_TO_FIX}")


def find_file(data_dir: Path, name: str) -> Path:
    """The path of `name` or `name.gz` in `data_dir` (the uncompressed file wins)."""
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise _fail(f"MNIST file {name}[.gz] not found in {data_dir}")


def read_bytes(path: Path) -> bytes:
    """The decompressed content of an IDX file, gzipped (by magic bytes) or not."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise _fail(f"cannot read MNIST file {path}: {exc}") from exc


def parse_idx(data: bytes, *, images: bool, expected_count: int | None, source: str) -> np.ndarray:
    """Parse IDX bytes into a uint8 array `(N, rows, cols)` for images or `(N,)` for labels.

    Checks the magic number, the header length, the declared count against `expected_count`
    and that the payload is exactly as long as the header says.
    """
    header_len = 16 if images else 8
    want_magic = IMAGES_MAGIC if images else LABELS_MAGIC
    if len(data) < header_len:
        raise _fail(f"{source} is truncated: {len(data)} bytes, shorter than its IDX header")
    magic, count = struct.unpack(">ii", data[:8])
    if magic != want_magic:
        kind = "images" if images else "labels"
        raise _fail(
            f"{source} has magic number {magic}, expected {want_magic} for IDX {kind}; "
            "it is not an MNIST file (or is corrupted)"
        )
    shape: tuple[int, ...] = (count,)
    if images:
        rows, cols = struct.unpack(">ii", data[8:16])
        shape = (count, rows, cols)
    if expected_count is not None and count != expected_count:
        raise _fail(f"{source} declares {count} items, expected {expected_count}")
    want_len = header_len + int(np.prod(shape))
    if len(data) < want_len:
        raise _fail(f"{source} is truncated: {len(data)} bytes, header says {want_len}")
    if len(data) > want_len:
        raise _fail(f"{source} has {len(data) - want_len} trailing bytes after its data")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def _expected_count(name: str) -> int:
    return TRAIN_COUNT if name.startswith("train") else TEST_COUNT


def load_mnist(
    data_dir: str | Path, *, verify: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read MNIST from `data_dir`; returns `(train_x, train_y, test_x, test_y)` uint8 arrays."""
    m = load_verified(Path(data_dir), verify=verify)
    return m.train_x, m.train_y, m.test_x, m.test_y


def load_test_digits(data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 test images and labels, from `data_dir`, else $MNIST_DIR, else the cache.

    Reads (and verifies) only the two t10k files, so callers that need test digits do not pay
    for parsing the training set.
    """
    directory = Path(resolve_data_dir(data_dir))
    _check_dir(directory)
    images, _ = read_verified(directory, "t10k-images-idx3-ubyte")
    labels, _ = read_verified(directory, "t10k-labels-idx1-ubyte")
    return images, labels


def _check_dir(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise _fail(f"MNIST directory {data_dir} does not exist")


def read_verified(data_dir: Path, name: str, *, verify: bool = True) -> tuple[np.ndarray, str]:
    """Parse one of the four files in `data_dir` and check its checksum: `(array, sha256)`."""
    path = find_file(data_dir, name)
    data = read_bytes(path)
    # Structure first: "wrong magic" or "truncated" says more than a bare checksum mismatch.
    array = parse_idx(
        data, images="images" in name, expected_count=_expected_count(name), source=str(path)
    )
    digest = hashlib.sha256(data).hexdigest()
    if verify and digest != SHA256[name]:
        raise _fail(
            f"checksum mismatch for {path}: sha256 of the decompressed bytes is {digest}, "
            f"expected {SHA256[name]}"
        )
    return array, digest


def load_verified(data_dir: Path, *, verify: bool = True) -> Mnist:
    """Read, checksum and parse the four files in `data_dir` into an `Mnist`."""
    _check_dir(data_dir)
    arrays: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    for name in FILE_NAMES:
        arrays[name], digests[name] = read_verified(data_dir, name, verify=verify)
    for split in ("train", "t10k"):
        n_img = len(arrays[f"{split}-images-idx3-ubyte"])
        n_lab = len(arrays[f"{split}-labels-idx1-ubyte"])
        if n_img != n_lab:
            raise _fail(f"{data_dir}: {split} has {n_img} images but {n_lab} labels")
    return Mnist(
        train_x=arrays["train-images-idx3-ubyte"],
        train_y=arrays["train-labels-idx1-ubyte"],
        test_x=arrays["t10k-images-idx3-ubyte"],
        test_y=arrays["t10k-labels-idx1-ubyte"],
        sha256=digests,
        source=str(data_dir),
    )


def _fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed mirrors)
        return response.read()


def download_file(
    name: str, cache_dir: Path, mirrors: Sequence[str], timeout: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """Fetch `name.gz` from the first mirror that serves it with the right checksum.

    The file is written atomically into `cache_dir`; a cached file with the right checksum is
    reused without touching the network.
    """
    target = cache_dir / f"{name}.gz"
    if target.is_file() and hashlib.sha256(read_bytes(target)).hexdigest() == SHA256[name]:
        return target
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{name}.gz"
        try:
            payload = _fetch(url, timeout)
            data = gzip.decompress(payload) if payload[:2] == b"\x1f\x8b" else payload
        except (urllib.error.URLError, OSError, EOFError, ValueError) as exc:
            # URLError covers HTTP errors and unreachable hosts; a bad gzip is a bad mirror too.
            failures.append(f"{url}: {exc}")
            logger.warning("MNIST mirror failed: %s: %s", url, exc)
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256[name]:
            failures.append(f"{url}: checksum mismatch (sha256 {digest})")
            logger.warning("MNIST mirror served a file with the wrong checksum: %s", url)
            continue
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, delete=False, suffix=".part") as tmp:
            tmp.write(payload)
        os.replace(tmp.name, target)
        logger.info("downloaded %s from %s", name, mirror)
        return target
    raise _fail(f"could not download {name}.gz from any mirror:\n  " + "\n  ".join(failures))


def download_mnist(
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Make sure the four verified files are in `cache_dir` (downloading as needed); return it."""
    cache_dir = Path(cache_dir).expanduser()
    for name in FILE_NAMES:
        download_file(name, cache_dir, mirrors, timeout)
    return cache_dir


def resolve_data_dir(
    data_dir: str | Path | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    mirrors: Sequence[str] = MIRRORS,
) -> Path:
    """`data_dir`, else $MNIST_DIR, else the download cache (filled from the mirrors)."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("MNIST_DIR")
    if env:
        return Path(env).expanduser()
    return download_mnist(cache_dir, mirrors)
