"""Requests with no usable image in them, each to be refused with a 4xx and the JSON error body:
bodies that are not an image at all, broken images (truncated, corrupt, zero-sized, claiming
huge sizes, a decompression bomb), JSON of the wrong shape or types or hostile nesting, and a
body one byte over the server's size limit (413 from TorchServe itself)."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from tests.hostile_corpus.encoding import b64
from tests.images import png_chunk, png_claiming_size


def png_decompression_bomb(side: int = 20_000) -> bytes:
    """A *complete*, valid 1-bit PNG of side x side black pixels: tiny file, 400 Mpx decoded."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def add_not_image_cases(add, plain_png: bytes) -> None:
    """Not an image at all: nothing, noise, text, markup, a vector image, a PDF, a PNG sent as a
    form, and a multipart text field."""
    rng = np.random.default_rng(20260424)
    add("empty_body", b"", "application/octet-stream", "reject")
    add("zero_bytes", b"\x00" * 4096, "application/octet-stream", "reject")
    add("random_bytes_1k", rng.bytes(1024), "application/octet-stream", "reject")
    add("random_bytes_256k", rng.bytes(256 * 1024), "application/octet-stream", "reject")
    add("text_plain", b"seven\n", "text/plain", "reject")
    add(
        "html",
        b"<!doctype html><html><body><img src=x onerror=alert(1)>7</body></html>",
        "text/html",
        "reject",
    )
    svg = (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
        b'<rect width="28" height="28"/><text x="8" y="22" fill="white" font-size="20">7</text>'
        b"</svg>"
    )
    add("svg", svg, "image/svg+xml", "reject", note="vector image: not a raster format")
    pdf = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )
    add("pdf", pdf, "application/pdf", "reject")
    add(
        "png_as_form_urlencoded",
        plain_png,
        "application/x-www-form-urlencoded",
        "reject",
        note="curl --data-binary without -H: TorchServe splits the bytes as a form",
    )
    boundary = "hostile0boundary"
    text_part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n\r\n'
        f"not an image\r\n--{boundary}--\r\n"
    ).encode()
    add("multipart_text_field", text_part, f"multipart/form-data; boundary={boundary}", "reject")


def add_broken_image_cases(add, plain_png: bytes, jpeg: bytes) -> None:
    """Broken images: truncated, corrupt, zero-sized, or claiming more pixels than they hold."""
    add("png_signature_only", plain_png[:8], "image/png", "reject")
    add("png_truncated_header", plain_png[:20], "image/png", "reject")
    add("png_truncated_half", plain_png[: len(plain_png) // 2], "image/png", "reject")
    add("jpeg_truncated_half", jpeg[: len(jpeg) // 2], "image/jpeg", "reject")
    corrupt = bytearray(plain_png)
    corrupt[40:60] = b"\xff" * 20  # inside IDAT: bad CRC / zlib stream
    add("png_corrupt_idat", bytes(corrupt), "image/png", "reject")
    add("png_zero_width", png_claiming_size(0, 28), "image/png", "reject")
    add(
        "png_header_30000x30000",
        png_claiming_size(30_000, 30_000),
        "image/png",
        "reject",
        note="header claims 900 Mpx; body holds one row",
    )
    add(
        "png_decompression_bomb",
        png_decompression_bomb(),
        "image/png",
        "reject",
        note="valid 20000x20000 1-bit PNG, a few KB on the wire",
    )


def add_json_cases(add) -> None:
    """JSON bodies: the wrong shape, the wrong types, not JSON, hostile nesting."""
    add("json_invalid_base64", b'{"image": "!!!not*base64@@@"}', "application/json", "reject")
    add(
        "json_base64_of_text",
        json.dumps({"image": b64(b"just some text")}).encode(),
        "application/json",
        "reject",
    )
    add("json_wrong_field", b'{"picture": 7, "size": [28, 28]}', "application/json", "reject")
    add("json_wrong_type", b'{"image": 12345}', "application/json", "reject")
    add("json_null_image", b'{"image": null}', "application/json", "reject")
    add("json_images_empty", b'{"images": []}', "application/json", "reject")
    add("json_images_all_bad", b'{"images": ["%%%", ""]}', "application/json", "reject")
    add("json_empty_object", b"{}", "application/json", "reject")
    add("json_empty_list", b"[]", "application/json", "reject")
    add("json_malformed", b'{"image": "iVBORw0KGgo', "application/json", "reject")
    add("json_deeply_nested_lists", b"[" * 100_000 + b"]" * 100_000, "application/json", "reject")
    nested = b'{"image": ' * 5_000 + b'"x"' + b"}" * 5_000
    add("json_deeply_nested_objects", nested, "application/json", "reject")


def add_oversize_case(add, max_request_size: int) -> None:
    """Over the size limit: TorchServe itself must answer 413, before any worker sees it."""
    add(
        "oversize_body",
        b"\x00" * (max_request_size + 1),
        "application/octet-stream",
        "reject",
        status=413,
        note=f"{max_request_size + 1} bytes, limit {max_request_size}",
    )
