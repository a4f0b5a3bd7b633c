"""Body builders the case modules share: an MNIST digit scaled up like a scan, base64 text, and a
multipart/form-data body."""

from __future__ import annotations

import base64

import numpy as np
from PIL import Image


def upscale(pixels: np.ndarray, size: int) -> Image.Image:
    """An MNIST digit as a smooth `size`x`size` grayscale image (like a scan, not a 28px blob)."""
    return Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC)


def b64(data: bytes) -> str:
    """Base64 text of `data`."""
    return base64.b64encode(data).decode("ascii")


def multipart(parts: list[tuple[str, bytes]], extra_headers: str = "") -> tuple[bytes, str]:
    """A multipart/form-data body of `(field name, bytes)` file parts, and its Content-Type."""
    boundary = "hostile0limits"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"'
        f"\r\nContent-Type: application/octet-stream\r\n{extra_headers}\r\n".encode()
        + data + b"\r\n"
        for name, data in parts
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
