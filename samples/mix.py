"""The realistic traffic mix: the ONE definition of what clients send, for load tests and benches.

A benchmark that sends only 28x28 MNIST PNGs rewards a fast path no real client takes, so the
load tests, `make bench`, `make tune` and `make bench-batch` all draw their images from here.
Every item is an MNIST test digit with its known label, presented as one of `KINDS`:

- `mnist`: the 28x28 PNG itself (API clients that already crop and scale);
- `scan`: small scans and drawings, 40-400 px a side, PNG or JPEG: dark ink on light paper
  (`render_realistic`, flatbed `scan`), pen-tool drawings (some on a transparent canvas) and
  light ink on a dark ground;
- `photo`: phone photos of 1-3 MP, JPEG;
- `photo12mp`: full-resolution 12 MP phone photos, 4000x3000 (or 3000x4000) JPEG.

The pixels come from `samples.render` (the one home of presentation); photos are that
presentation scaled up to a camera's frame with sensor noise, by OpenCV. The mix is
deterministic: item `k` of a kind depends only on `(seed, kind, k)`, so a prefix of a mix is
the same whatever its length, and a 12 MP photo (~0.5 s to make) is cached on disk once made.
Nothing runs at import time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from handler import limits
from project import paths
from samples import render
from samples.digits import LabelledImages, encode_png

KINDS = ("mnist", "scan", "photo", "photo12mp")
# Shares of the mix. Small scans and drawings dominate real uploads (forms, web drawing pads);
# phone photos are a quarter; full 12 MP photos are rare (apps resize before upload) but each
# costs ~100 small images, so even 1.5 % of them weighs on throughput.
SHARES = {"mnist": 0.30, "scan": 0.45, "photo": 0.235, "photo12mp": 0.015}
SCAN_SIDE = (40, 400)  # each side of a `scan`, px
PHOTO_MEGAPIXELS = (1.0, 3.0)
PHOTO12MP_SIZE = (4000, 3000)
# How a scan is presented: (`samples.render` presentation, weight). `realistic` is
# `render_realistic` (64-400 px, PNG or JPEG); `pen` draws on a transparent canvas 30 % of
# the time; `dark` is light ink on a dark ground.
SCAN_STYLES = (("realistic", 0.4), ("scan", 0.25), ("pen", 0.2), ("dark", 0.15))
PHOTO_ASPECTS = (4 / 3, 3 / 4, 16 / 9)
PHOTO_NOISE = (3.0, 7.0)  # sensor noise sigma, gray levels: gives phone-like file sizes
PHOTO_QUALITY = (82, 94)
# Phones write 12 MP JPEGs of 2-4 MB; a noisier draw is re-encoded at lower quality until under
# this. It also keeps every photo under this deployment's body limit (TorchServe's
# max_request_size, 4 MiB in deploy/config.properties), so every item can be sent and checked.
PHOTO_MAX_BYTES = 3_500_000
_KIND_CODE = {kind: n for n, kind in enumerate(KINDS)}
DEFAULT_SEED = 1313
logger = logging.getLogger(__name__)
CACHE_DIR = paths.ARTIFACTS_DIR / "mix-cache"


@dataclass(frozen=True)
class MixItem:
    """One upload of the mix: its kind, true digit, bytes and format (`png` or `jpg`)."""

    kind: str
    label: int
    data: bytes
    fmt: str
    mnist_index: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) from the header."""
        return Image.open(io.BytesIO(self.data)).size

    @property
    def cost(self) -> int:
        """This image's pixel cost in a request (`handler.limits`), from its header."""
        return limits.probe(self.data).cost


def kind_schedule(count: int, kinds=None) -> list[str]:
    """The kind of each of `count` items: smooth weighted round robin over the shares, so any
    prefix holds each kind close to its share and the order never depends on `count`."""
    kinds = tuple(kinds or KINDS)
    if unknown := set(kinds) - set(KINDS):
        raise ValueError(f"unknown kinds {sorted(unknown)}; expected some of {KINDS}")
    weights = {k: SHARES[k] for k in kinds}
    total, current, out = sum(weights.values()), dict.fromkeys(kinds, 0.0), []
    for _ in range(count):
        for k in kinds:
            current[k] += weights[k]
        pick = max(kinds, key=lambda k: current[k])  # ties: the order of KINDS
        current[pick] -= total
        out.append(pick)
    return out


def build_mix(count: int, seed: int = DEFAULT_SEED, kinds=None, *, digits=None) -> list[MixItem]:
    """`count` items of the mix (of `kinds` only, their shares renormalised). `digits` is
    `(images, labels)` of MNIST test digits (`train.mnist.load_test_digits()`); the caller loads
    them, since samples may not import train."""
    if digits is None:
        raise ValueError("build_mix needs digits=(images, labels) of MNIST test digits")
    images, labels = digits
    seen = dict.fromkeys(KINDS, 0)
    items = []
    for kind in kind_schedule(count, kinds):
        items.append(make_item(kind, seen[kind], seed, images, labels))
        seen[kind] += 1
    return items


def as_uploads(count: int, seed: int, digits) -> LabelledImages:
    """`build_mix(count, seed, digits=digits)` as `LabelledImages` (MNIST indices and kinds)."""
    items = build_mix(count, seed, digits=digits)
    return LabelledImages(*([getattr(i, f) for i in items]
                            for f in ("data", "label", "mnist_index", "kind")))  # fmt: skip


def make_item(kind: str, k: int, seed: int, images: np.ndarray, labels: np.ndarray) -> MixItem:
    """Item `k` of `kind`: deterministic for `(seed, kind, k)` and the digits."""
    rng = np.random.default_rng([seed, _KIND_CODE[kind], k])
    index = int(rng.integers(len(images)))
    digit, label = images[index], int(labels[index])
    if kind == "mnist":
        data = encode_png(digit)
    elif kind == "scan":
        data = _scan(digit, rng)
    elif kind == "photo":
        megapixels = rng.uniform(*PHOTO_MEGAPIXELS)
        aspect = PHOTO_ASPECTS[int(rng.integers(len(PHOTO_ASPECTS)))]
        width = round((megapixels * 1e6 * aspect) ** 0.5)
        data = _photo(digit, rng, width, round(width / aspect))
    else:
        data = _cached_photo12mp(digit, rng, f"{seed}-{k}-{index}")
    return MixItem(kind, label, data, "jpg" if data[:2] == b"\xff\xd8" else "png", index)


def _scan(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A scan or drawing of 40-400 px a side; presentations drawn bigger are drawn again
    (a pen pad can be 469 px wide), which keeps the range exact and the draw deterministic."""
    names = [name for name, _ in SCAN_STYLES]
    weights = np.array([w for _, w in SCAN_STYLES])
    while True:
        style = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        if style == "realistic":
            data = render.render_realistic(digit, rng)
        else:
            data = render.present(digit.astype(np.float32) / 255.0, style, rng)
        width, height = Image.open(io.BytesIO(data)).size
        if SCAN_SIDE[0] <= min(width, height) and max(width, height) <= SCAN_SIDE[1]:
            return data


def _photo(digit: np.ndarray, rng: np.random.Generator, width: int, height: int) -> bytes:
    """A phone photo of `width` x `height`: `samples.render`'s photo of paper, scaled up to fill
    the frame (the sheet's edge extended around it), with sensor noise, as a baseline JPEG."""
    ink = digit.astype(np.float32) / 255.0
    small = cv2.imdecode(np.frombuffer(render.present(ink, "photo", rng), np.uint8),
                         cv2.IMREAD_COLOR)  # fmt: skip
    scale = min(width / small.shape[1], height / small.shape[0])
    fitted = cv2.resize(small, (min(width, round(small.shape[1] * scale)),
                                min(height, round(small.shape[0] * scale))),
                        interpolation=cv2.INTER_CUBIC)  # fmt: skip
    left = int(rng.integers(width - fitted.shape[1] + 1))
    top = int(rng.integers(height - fitted.shape[0] + 1))
    frame = cv2.copyMakeBorder(fitted, top, height - fitted.shape[0] - top, left,
                               width - fitted.shape[1] - left, cv2.BORDER_REPLICATE)  # fmt: skip
    # Luma noise in C (cv2.randn, seeded from rng): numpy's normal is ~10x slower at 12 MP, and
    # without grain a 12 MP JPEG is 0.2 MB instead of a phone's 2-4 MB (decode cost follows bytes).
    noise = np.empty(frame.shape[:2], np.int16)
    cv2.setRNGSeed(int(rng.integers(2**31)))
    cv2.randn(noise, 0, float(rng.uniform(*PHOTO_NOISE)))
    frame = cv2.add(frame, cv2.merge([noise] * 3), dtype=cv2.CV_8U)
    quality = int(rng.integers(PHOTO_QUALITY[0], PHOTO_QUALITY[1] + 1))
    while True:
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode a {width}x{height} JPEG")
        if len(encoded) <= PHOTO_MAX_BYTES or quality <= 50:
            return encoded.tobytes()
        quality -= 8


def fingerprint() -> str:
    """A short hash of this module's and `samples.render`'s code: what makes the mix's bytes, so
    caches of them (12 MP photos, the load tests' pool) are keyed by it."""
    code = Path(__file__).read_bytes() + Path(render.__file__).read_bytes()
    return hashlib.sha256(code).hexdigest()[:12]


def _cached_photo12mp(digit: np.ndarray, rng: np.random.Generator, key: str) -> bytes:
    """A 12 MP photo, from the disk cache when this code has made it before. The key holds a
    fingerprint of this module and of `samples.render`, so changed code never serves stale bytes."""
    path = CACHE_DIR / f"photo12mp-{fingerprint()}-{key}.jpg"
    if path.is_file():
        return path.read_bytes()
    width, height = PHOTO12MP_SIZE if rng.random() < 0.7 else PHOTO12MP_SIZE[::-1]
    data = _photo(digit, rng, width, height)
    tmp = path.with_suffix(f".{id(data)}.tmp")  # atomic: parallel runs share the cache
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:  # a read-only checkout (a container's mount) only loses the cache
        logger.debug("12 MP photo not cached in %s: %s", path.parent, exc)
    return data


def pack(costs: list[int], max_images: int, budget: int = limits.MAX_REQUEST_PIXELS,
         sizes: list[int] | None = None, max_bytes: int | None = None) -> list[range]:  # fmt: skip
    """Consecutive positions grouped into requests of at most `max_images` images whose pixel
    costs sum to at most `budget` (the handler's per-request limit) and, given `sizes`, whose
    bytes sum to at most `max_bytes` (the server's body limit): how a client splits a mix."""
    sizes = sizes or [0] * len(costs)
    groups, start, total, nbytes = [], 0, 0, 0
    for i, cost in enumerate(costs):
        full = i - start == max_images or total + cost > budget
        if i > start and (full or (max_bytes is not None and nbytes + sizes[i] > max_bytes)):
            groups.append(range(start, i))
            start, total, nbytes = i, 0, 0
        total, nbytes = total + cost, nbytes + sizes[i]
    return groups + ([range(start, len(costs))] if costs else [])


def write_folder(folder: Path, items: list[MixItem]) -> int:
    """Write the items as `<kind>/<n>_<label>.<fmt>` plus `labels.csv` (path, label, kind,
    mnist_index) for batch benches, creating `folder`; returns the image bytes written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    with open(folder / "labels.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "label", "kind", "mnist_index"])
        for n, item in enumerate(items):
            rel = f"{item.kind}/{n:06d}_{item.label}.{item.fmt}"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(item.data)
            out.writerow([rel, item.label, item.kind, item.mnist_index])
            total += len(item.data)
    return total
