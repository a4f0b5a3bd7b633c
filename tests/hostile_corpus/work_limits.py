"""Requests that multiply the handler's work (thousands of JSON entries or multipart parts, many
images each claiming millions of pixels, a 1x40,000,000 PNG, long part names): each must be
refused from what it declares, before anything expensive runs (handler/limits.py)."""

from __future__ import annotations

import json
import struct
import zlib

from PIL import Image

from tests.hostile_corpus.encoding import b64, multipart
from tests.images import encode, png_chunk, png_claiming_size


def jpeg_header(width: int, height: int) -> bytes:
    """The first bytes of a real baseline JPEG of width x height: every marker up to the scan,
    no scan data. Its header is all a decoder reads before allocating."""
    data = encode(Image.new("L", (width, height), 128), "JPEG", quality=50)
    sos = data.index(b"\xff\xda")
    return data[: sos + 64]


def add_limit_cases(add, png: bytes, label: int) -> None:
    """Requests that multiply work: each must be refused from what it declares (413 naming the
    limit for the request, 400 for an image) before anything expensive runs (handler/limits.py).
    """
    from handler import limits

    zeros = b'{"images": [' + b",".join([b"0"] * 160_000) + b"]}"
    add("json_160k_zeros", zeros, "application/json", "reject", status=413,
        note="one error line per entry made a 12 MB answer and killed the worker")
    empties = b'{"images": [' + b",".join([b'""'] * 1_000_000) + b"]}"
    add("json_million_empty_strings", empties, "application/json", "reject", status=413,
        note="parsed into per-entry objects, this took the worker to ~4 GB")
    objects = b'{"images": [' + b",".join([b"{}"] * 1_000_000) + b"]}"
    add("json_million_empty_objects", objects, "application/json", "reject", status=413)
    add("json_images_over_count", json.dumps(
        {"images": [b64(png)] * (limits.MAX_IMAGES_PER_REQUEST + 1)}).encode(),
        "application/json", "reject", status=413)
    body, ctype = multipart([(f"f{i}", png) for i in range(limits.MAX_IMAGES_PER_REQUEST + 1)])
    add("multipart_over_count", body, ctype, "reject", status=413)
    body, ctype = multipart([(f"f{i}", b"x") for i in range(20_000)])
    add("multipart_20k_parts", body, ctype, "reject", status=413)
    claim_40mp = png_claiming_size(7000, 5714)
    body, ctype = multipart([(f"b{i}", claim_40mp) for i in range(300)])
    add("multipart_300_pngs_claiming_40mp", body, ctype, "reject", status=413,
        note="each decoded to 40 MP: past responseTimeout")
    body, ctype = multipart([(f"b{i}", claim_40mp) for i in range(limits.MAX_IMAGES_PER_REQUEST)])
    add("multipart_64_pngs_claiming_40mp", body, ctype, "reject", status=400,
        note="each refused from its header: a PNG is decoded whole")
    body, ctype = multipart([(f"j{i}", jpeg_header(7300, 5470)) for i in range(20)])
    add("multipart_20_jpegs_of_40mp", body, ctype, "reject", status=413,
        note="each admitted alone (decoded at 1/8), together over the request's pixel cost")
    scan = png_claiming_size(2449, 2449)  # 6 MP, each admitted alone
    body, ctype = multipart([("a", scan), ("b", scan)])
    add("multipart_two_6mp_pngs", body, ctype, "reject", status=413)
    tall = zlib.compress(b"\x00\x00" * 40_000_000)
    one_column = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 40_000_000,
                  8, 0, 0, 0, 0)) + png_chunk(b"IDAT", tall) + png_chunk(b"IEND", b""))
    add("png_1x40000000", one_column, "image/png", "reject", status=400,
        note="a complete PNG: ~0.9 GB per decode in row bookkeeping")
    add("png_over_decoded_limit", png_claiming_size(2500, 2500), "image/png", "reject",
        status=400, note="6.25 MP of PNG, decoded whole")
    long_names = [(("n" * 10_000) + str(i), b"junk") for i in range(limits.MAX_IMAGES_PER_REQUEST)]
    body, ctype = multipart(long_names)
    add("multipart_64_bad_parts_long_names", body, ctype, "reject", status=400,
        note="the answer lists five errors and clips names, whatever the request holds")
