"""The hostile-input corpus: request bodies a public endpoint must survive.

Every case is a complete HTTP request body plus its Content-Type and what the server must do
with it:

- ``reject``     -> a 4xx whose body is the JSON `ErrorResponse` (``status`` pins the code when
                    it matters, e.g. 413 for an over-size body);
- ``digit``      -> 200 with a `Prediction` naming ``label`` (a legitimate if unusual encoding
                    of a real MNIST test digit: 16-bit, palette, 1-bit, RGBA, CMYK, GIF, ...);
- ``prediction`` -> 200 with a schema-valid `Prediction` (a real image with no digit in it,
                    e.g. 1x1 or blank: any digit is an acceptable answer, a crash is not).

The digits are MNIST test digits (the tests pass conftest's `mnist_test`), so the expected
labels are read from the data, never typed. `python -m tests.hostile_corpus OUT_DIR` writes the
corpus to disk with a `manifest.json`, for poking the server by hand with curl.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from samples.digits import encode_png
from tests.images import encode, png_chunk, png_claiming_size
from tests.server_access import TORCHSERVE_DEFAULT_MAX_REQUEST_SIZE

# MNIST test-set indices used as the "real digit" of each legitimate case. They are the first
# ones of the test set, so anyone can look them up; their labels are read from the IDX file.
DIGIT_INDICES = (0, 1, 2, 3, 4, 5, 6, 7)


@dataclass(frozen=True)
class Case:
    """One hostile or unusual request."""

    id: str
    body: bytes = field(repr=False)
    content_type: str
    expect: str  # "reject" | "digit" | "prediction"
    label: int | None = None
    status: int | None = None  # exact status required (otherwise any 4xx for "reject")
    note: str = ""

    def __post_init__(self) -> None:
        if self.expect not in {"reject", "digit", "prediction"}:
            raise ValueError(f"case {self.id}: unknown expectation {self.expect!r}")
        if self.expect == "digit" and self.label is None:
            raise ValueError(f"case {self.id}: a 'digit' case needs its label")


# --- image helpers --------------------------------------------------------------------------
def upscale(pixels: np.ndarray, size: int) -> Image.Image:
    """An MNIST digit as a smooth `size`x`size` grayscale image (like a scan, not a 28px blob)."""
    return Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC)


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


def photo_of_digit(pixels: np.ndarray, width: int, height: int, seed: int = 7) -> Image.Image:
    """A camera-like RGB photo: dark ink digit on an uneven, noisy light paper background."""
    rng = np.random.default_rng(seed)
    # Paper: light, with a gentle lighting gradient and sensor noise.
    gradient = np.linspace(215, 240, width, dtype=np.float32)[None, :, None]
    paper = gradient + rng.normal(0, 4, size=(height, width, 3)).astype(np.float32)
    side = int(min(width, height) * 0.6)
    ink = np.asarray(upscale(pixels, side), dtype=np.float32)[..., None] / 255.0
    top, left = (height - side) // 2, (width - side) // 2
    region = paper[top : top + side, left : left + side]
    paper[top : top + side, left : left + side] = region * (1 - ink) + 30.0 * ink
    image = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8), mode="RGB")
    return image.filter(ImageFilter.GaussianBlur(1.5))


def b64(data: bytes) -> str:
    """Base64 text of `data`."""
    return base64.b64encode(data).decode("ascii")


# --- the corpus -----------------------------------------------------------------------------
def build_corpus(
    images: np.ndarray,
    labels: np.ndarray,
    max_request_size: int = TORCHSERVE_DEFAULT_MAX_REQUEST_SIZE,
    max_image_pixels: int | None = None,
) -> list[Case]:
    """Every hostile and unusual case, in a stable order with unique ids.

    `images`, `labels`: the MNIST test set (uint8 `(N, 28, 28)`, white ink on black) the
    legitimate cases are made of. `max_request_size` is the server's body limit (the over-size
    case sends one byte more); `max_image_pixels` is the handler's decode limit: the 4000x3000
    photo is a legitimate image that must be answered when it is within the limit, and refused
    (4xx) otherwise.
    """
    digit = {i: (images[i], int(labels[i])) for i in DIGIT_INDICES}
    rng = np.random.default_rng(20260424)
    cases: list[Case] = []

    def add(*args, **kwargs) -> None:
        cases.append(Case(*args, **kwargs))

    px0, label0 = digit[0]
    plain_png = encode_png(px0)
    jpeg = encode(upscale(px0, 280).convert("RGB"), "JPEG", quality=90)

    # Not an image at all.
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

    # Broken images.
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

    # JSON bodies: the wrong shape, the wrong types, not JSON, hostile nesting.
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

    # Over the size limit: TorchServe itself must answer 413, before any worker sees it.
    add(
        "oversize_body",
        b"\x00" * (max_request_size + 1),
        "application/octet-stream",
        "reject",
        status=413,
        note=f"{max_request_size + 1} bytes, limit {max_request_size}",
    )

    # Real images with nothing to recognise: any digit is fine, a crash is not.
    add("png_1x1_black", encode(Image.new("L", (1, 1), 0), "PNG"), "image/png", "prediction")
    add("png_1x1_white", encode(Image.new("L", (1, 1), 255), "PNG"), "image/png", "prediction")
    add("png_blank_black", encode(Image.new("L", (28, 28), 0), "PNG"), "image/png", "prediction")
    add(
        "png_blank_white",
        encode(Image.new("L", (280, 280), 255), "PNG"),
        "image/png",
        "prediction",
    )

    # Legitimate digits in unusual encodings: the right digit must come back.
    add("png_plain_mnist", plain_png, "image/png", "digit", label=label0, note="control")
    add("jpeg_rgb", jpeg, "image/jpeg", "digit", label=label0)
    px, lb = digit[1]
    arr16 = np.asarray(upscale(px, 112), dtype=np.uint16) * 257  # full 16-bit range
    sixteen = Image.fromarray(arr16.astype("<u2"))  # mode I;16
    add("png_16bit", encode(sixteen, "PNG"), "image/png", "digit", label=lb)
    px, lb = digit[2]
    palette = upscale(px, 112).convert("RGB").quantize(colors=16)
    add("png_palette", encode(palette, "PNG"), "image/png", "digit", label=lb)
    px, lb = digit[3]
    one_bit = upscale(px, 112).point(lambda v: 255 if v >= 128 else 0).convert("1")
    add("png_1bit", encode(one_bit, "PNG"), "image/png", "digit", label=lb)
    px, lb = digit[4]
    rgba = upscale(px, 112).convert("RGBA")  # fully opaque: alpha carries no information
    add("png_rgba", encode(rgba, "PNG"), "image/png", "digit", label=lb)
    px, lb = digit[5]
    cmyk = upscale(px, 112).convert("RGB").convert("CMYK")
    add("jpeg_cmyk", encode(cmyk, "JPEG", quality=95), "image/jpeg", "digit", label=lb)
    px, lb = digit[6]
    frames = [upscale(px, 84)] + [upscale(digit[i][0], 84) for i in (0, 1)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("gif_animated", gif, "image/gif", "digit", label=lb, note="first frame is the digit")
    px, lb = digit[7]
    add("bmp", encode(upscale(px, 56), "BMP"), "image/bmp", "digit", label=lb)
    add("tiff", encode(upscale(px, 56), "TIFF"), "image/tiff", "digit", label=lb)
    add("webp", encode(upscale(px, 56), "WEBP", lossless=True), "image/webp", "digit", label=lb)
    add(
        "json_base64_png",
        json.dumps({"image": b64(plain_png)}).encode(),
        "application/json",
        "digit",
        label=label0,
        note="the documented JSON form",
    )

    # A 4000x3000 phone photo of a digit: answered when within the pixel limit, else refused.
    photo = encode(photo_of_digit(px0, 4000, 3000), "JPEG", quality=85)
    pixels = 4000 * 3000
    if len(photo) > max_request_size:
        add("photo_4000x3000", photo, "image/jpeg", "reject", status=413, note="over size limit")
    elif max_image_pixels is not None and pixels > max_image_pixels:
        add("photo_4000x3000", photo, "image/jpeg", "reject", note="over the pixel limit")
    else:
        add("photo_4000x3000", photo, "image/jpeg", "digit", label=label0, note="12 Mpx JPEG")

    add_limit_cases(add, plain_png, label0)
    add_contract_cases(add, plain_png, label0)

    ids = [case.id for case in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise AssertionError(f"duplicate corpus ids: {sorted(duplicates)}")
    return cases


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


def add_contract_cases(add, png: bytes, label: int) -> None:
    """Legitimate requests in forms clients really send, and a float image with extremes."""
    text = b64(png)
    wrapped = "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    cases = {
        "json_content_type_capitalised": (json.dumps({"image": text}), "Application/JSON"),
        "json_charset_uppercase": (json.dumps({"image": text}), "APPLICATION/JSON; CHARSET=UTF-8"),
        "json_base64_rfc2045_lines": (json.dumps({"image": wrapped}), "application/json"),
        "json_base64_literal_line_breaks": ('{"image": "' + wrapped + '"}', "application/json"),
        "json_base64_bom": (json.dumps({"image": "\ufeff" + text}), "application/json"),
        "json_data_uri": (json.dumps({"image": f"data:image/png;base64,{text}"}), "text/json"),
        "json_body_with_bom": ("\ufeff" + json.dumps({"image": text}), "application/json"),
        "json_untyped": (json.dumps({"image": text}), "application/octet-stream"),
    }
    for case_id, (body, ctype) in cases.items():
        add(case_id, body.encode("utf-8"), ctype, "digit", label=label)
    extremes = np.linspace(-3e38, 3e38, 28 * 28, dtype=np.float32).reshape(28, 28)
    add("tiff_float_extremes", encode(Image.fromarray(extremes, mode="F"), "TIFF"),
        "image/tiff", "prediction", note="leaked an IndexError")
    body, ctype = multipart([("a", png)], "Content-Transfer-Encoding: 8bit\r\n")
    add("multipart_transfer_encoding_8bit", body, ctype, "digit", label=label)


def write_corpus(cases: list[Case], out_dir: Path) -> Path:
    """Write each body to `out_dir/<id>.bin` and a `manifest.json`; returns the manifest path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = []
    for case in cases:
        (out_dir / f"{case.id}.bin").write_bytes(case.body)
        manifest.append(
            {
                "id": case.id,
                "file": f"{case.id}.bin",
                "bytes": len(case.body),
                "content_type": case.content_type,
                "expect": case.expect,
                "label": case.label,
                "status": case.status,
                "note": case.note,
            }
        )
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: write the corpus to a folder."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io_group = parser.add_argument_group("input and output")
    io_group.add_argument("out_dir", type=Path, help="folder to write <id>.bin and manifest.json")
    io_group.add_argument(
        "--mnist-dir", type=Path, default=None, help="MNIST IDX folder (default: $MNIST_DIR)"
    )
    limits = parser.add_argument_group("server limits the corpus is built against")
    limits.add_argument(
        "--max-request-size",
        type=int,
        default=TORCHSERVE_DEFAULT_MAX_REQUEST_SIZE,
        help="body limit in bytes",
    )
    limits.add_argument("--max-image-pixels", type=int, default=None, help="decode limit")
    args = parser.parse_args(argv)
    from train.mnist import DEFAULT_CACHE_DIR, MnistError, load_test_digits

    # An explicit folder, so that this never downloads.
    folder = args.mnist_dir or Path(os.environ.get("MNIST_DIR") or DEFAULT_CACHE_DIR)
    try:
        images, labels = load_test_digits(folder)
    except MnistError as exc:
        print(f"hostile_corpus: error: {exc}", file=sys.stderr)
        return 2
    cases = build_corpus(images, labels, args.max_request_size, args.max_image_pixels)
    path = write_corpus(cases, args.out_dir)
    print(f"wrote {len(cases)} cases to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
