"""The worst requests `handler/limits.py` admits, built to sit just inside the limits.

Each stresses one cost: the analysis of a 799x799 scan whose content is slowest to analyse, a
6 MP 16-bit RGBA PNG (decoded whole) and another filling the request, the largest progressive
JPEG admitted (noise, at the body limit), 64 images filling the request, a 40 MP baseline JPEG
of noise. `candidates()` checks each against the limits (it must be admitted: 200).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from client import multipart_body
from deploy.config import max_request_size
from handler import limits


@dataclass(frozen=True, eq=False)
class Candidate:
    """One request built to sit just inside the limits."""

    name: str
    images: list[bytes]
    what: str

    def body(self) -> tuple[bytes, str]:
        """The multipart request body and its content type."""
        return multipart_body(self.images)

    @property
    def cost(self) -> int:
        """The request's pixel cost (raises if the limits refuse it)."""
        return limits.check_request_cost([limits.probe(d) for d in self.images])


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    """`image` as the bytes of a `fmt` file."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def bar(width: int, height: int) -> Image.Image:
    """A white bar on black: two grey levels (with JPEG ringing), the slowest to analyse."""
    pixels = np.zeros((height, width), np.uint8)
    pixels[height // 4 : 3 * height // 4, width * 2 // 5 : width * 3 // 5] = 255
    return Image.fromarray(pixels)


def _specks(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(((rng.random((height, width)) < 0.1) * 255).astype(np.uint8))


def _noise_photo(size: tuple[int, int], max_bytes: int, progressive: bool = True,
                 block: int = 4) -> bytes:
    """A JPEG of noise, as close to `max_bytes` as quality (then coarser noise: squares of
    `block` pixels and up) allows: its entropy decoding costs what its size costs."""
    rng = np.random.default_rng(1)
    width, height = size
    data = b""
    while block <= 64:
        noise = rng.integers(0, 256, (-(-height // block), -(-width // block), 3), np.uint8)
        photo = Image.fromarray(noise).resize(size, Image.Resampling.NEAREST)
        for quality in (95, 85, 75, 60, 45, 30):
            data = encode(photo, "JPEG", quality=quality, progressive=progressive,
                           subsampling=0)  # fmt: skip
            if len(data) <= max_bytes:
                return data
        block *= 2
    return data


def _png16_rgba(width: int, height: int) -> bytes:
    """A 16-bit RGBA PNG (8 bytes a pixel, the slowest PNG to decode) of a bar."""
    pixels = np.zeros((height, width, 4), np.uint16)
    pixels[height // 4 : 3 * height // 4, width * 2 // 5 : width * 3 // 5, :3] = 65535
    pixels[..., 3] = 65535
    return cv2.imencode(".png", pixels)[1].tobytes()


def _largest_within(make, budget: int, side: int) -> bytes:
    """`make(side)` for the largest side (down from `side`) whose pixel cost fits `budget`."""
    while side > 1:
        data = make(side)
        if limits.probe(data).cost <= budget:
            return data
        side = int(side * 0.99)
    raise ValueError(f"nothing fits a pixel cost of {budget:,}")


def _progressive_size() -> tuple[int, int]:
    """The largest 4:3 progressive JPEG a request may hold alone (its cost from its header)."""
    for width in range(8000, 400, -20):
        header = limits.ImageHeader("JPEG", width, width * 3 // 4, progressive=True)
        if header.cost <= limits.MAX_REQUEST_PIXELS:
            return width, width * 3 // 4
    raise ValueError("no progressive JPEG fits")


def candidates(body_limit: int | None = None) -> list[Candidate]:
    """The worst admitted requests, one per cost they stress (all within the limits)."""
    body_limit = body_limit or max_request_size()
    budget = limits.MAX_REQUEST_PIXELS
    per_small = budget // limits.MAX_IMAGES_PER_REQUEST
    small = _largest_within(lambda n: encode(_specks(n, n)), per_small, 400)
    png = _png16_rgba(2449, 2449)
    rest = budget - limits.probe(png).cost
    photo_size = _progressive_size()
    big_jpeg = _noise_photo((7300, 5470), body_limit - 65536, progressive=False, block=8)
    found = [
        Candidate("scan-799-jpeg", [encode(bar(799, 799).convert("RGB"), "JPEG")],
                  "one 799x799 JPEG of two grey levels: the largest image analysed whole"),
        Candidate("scan-799-png-specks", [encode(_specks(799, 799))],
                  "one 799x799 PNG, 10 % random specks"),
        Candidate("png-6mp-rgba16", [png, _largest_within(lambda n: _png16_rgba(n, n), rest, 2000)],
                  "a 2449x2449 16-bit RGBA PNG (the most pixels decoded whole, the slowest "
                  "mode) and another filling the rest of the request"),
        Candidate("photo-progressive", [_noise_photo(photo_size, body_limit - 4096)],
                  f"one {photo_size[0]}x{photo_size[1]} progressive JPEG of noise at the body "
                  "limit: the largest admitted"),
        Candidate("jpeg-40mp", [big_jpeg, encode(bar(560, 560).convert("RGB"), "JPEG")],
                  "a 40 MP baseline JPEG of noise near the body limit (decoded at 1/8) and a "
                  "560x560 one"),
        Candidate("64-small-images", [small] * limits.MAX_IMAGES_PER_REQUEST,
                  f"64 PNGs of {Image.open(io.BytesIO(small)).width} px specks, filling the "
                  "request"),
    ]  # fmt: skip
    for cand in found:
        cand.cost  # noqa: B018 - raises if a candidate is not admitted
    return found
