"""What one request may ask of the worker: every serving limit, in one place.

TorchServe kills a worker whose batch runs past `responseTimeout` (30 s) or whose answer is over
`max_response_size`, and every request batched with it fails. A request that multiplies work
(thousands of images, huge pixel counts, one error line per entry) would turn that into an
outage for every client, so each request is priced BEFORE the expensive work, from what it
declares: its number of images and each image's header. The values are chosen so that a whole
batch (batchSize 32) of the worst request they admit ends well inside `responseTimeout` and the
worker's memory budget; `python -m tools.limits_bench` measures that worst case on a real
TorchServe (figures and method: docs/reliability.md, "Limits").

| limit | value | refused with |
|---|---|---|
| images per request | `MAX_IMAGES_PER_REQUEST` | 413 `RequestTooLarge` |
| images per explanations request | `MAX_IMAGES_PER_EXPLANATION` | 413 `RequestTooLarge` |
| the worker's time spent explaining | `EXPLAIN_SHARE`, `EXPLAIN_BURST_S` | 429 `ExplanationsBusy` |
| values in a JSON body | `MAX_JSON_VALUES` (counted before parsing) | 413 `RequestTooLarge` |
| format | `ACCEPTED_FORMATS` (Pillow opens nothing else) | 400 `InvalidImage` |
| side of one image | `MAX_IMAGE_SIDE` | 400 `InvalidImage` (that image) |
| stored pixels of one image | `MAX_IMAGE_PIXELS` | 400 `InvalidImage` (that image) |
| decoded pixels of one image | `MAX_DECODED_PIXELS` | 400 `InvalidImage` (that image) |
| pixel cost of a request | `MAX_REQUEST_PIXELS` | 413 `RequestTooLarge` |
| answer size | by construction (below) | - |

The answer is bounded by construction: at most `MAX_IMAGES_PER_REQUEST` slots, each message cut
at `MAX_MESSAGE_CHARS` (client-chosen names at `MAX_NAME_CHARS`), and a request with no usable
image answers one summary plus its first `MAX_ERRORS_LISTED` image errors. An explanation slot
is at most ~9 KB (784 attribution values at `handler.schemas.ATTRIBUTION_DIGITS`; ~5 KB for a
digit, whose blank pixels are 0.0), so an explanations answer stays under 80 KB.

Explanations share the worker with predictions: `MAX_IMAGES_PER_EXPLANATION` bounds one
request, and `handler.explain_budget` (re-exported here) bounds their share of the worker's time.

Decoded pixels: a JPEG is decoded at 1/2 to 1/8 scale (libjpeg's DCT scaling), so only formats
decoded whole (PNG, GIF, BMP, TIFF, WebP) count their stored pixels; that is what bounds the
memory of one decode (`MAX_DECODED_PIXELS` x at most 4 bytes, plus a copy for a mode
conversion). The side limit keeps Pillow's per-row bookkeeping bounded (a 1 x 40,000,000 PNG
costs ~0.9 GB of row pointers and blocks, not 40 MB).

Pixel cost of a request (`check_request_cost`): the sum over its images of what decoding and
preprocessing will cost, estimated from the header, in units of about one decoded PNG pixel
(5-35 ns of one core: 1 byte a pixel for grayscale, 8 for 16-bit RGBA):

    cost = decode pixels + ANALYSIS_WEIGHT x analysed pixels

- decode pixels: the stored pixels of a format decoded whole; for a JPEG, 1/`BASELINE_JPEG_SHARE`
  of them when baseline (its entropy decoder still visits every block) and
  1/`PROGRESSIVE_JPEG_SHARE` when progressive (libjpeg keeps every coefficient of the whole
  image and walks them once per scan);
- analysed pixels: preprocessing works on the image reduced to under `ANALYSIS_SIDE` px a side
  (a JPEG's reduced decode, then an integer box reduction).

The weights make the CPU time per cost unit roughly uniform across the requests that stress
each term (`python -m tools.limits_bench cost` prints ns per unit per candidate), so that
`MAX_REQUEST_PIXELS` bounds a request's CPU time whichever term dominates it.

This module imports only the standard library and Pillow: the handler, the preprocessing and
the batch job's decode workers use it alike.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from handler.explain_budget import (  # noqa: F401 - the 429 limit, with every other limit here
    EXPLAIN_BURST_S,
    EXPLAIN_SHARE,
    ExplanationBudget,
    ExplanationsBusy,
)

# --- what a request may carry -------------------------------------------------------------
# 64 images: 8x what the batch job sends per request by default, and any multi-digit form a
# client crops; beyond it a request is a bulk job and belongs in `python -m batch`.
MAX_IMAGES_PER_REQUEST = 64
# A JSON body of at most 64 images needs a few values per image: counting `,`, `[` and `{`
# bounds how many Python objects parsing can create (each needs one), before parsing. Base64
# has none of those characters; a `data:` URI has one comma.
MAX_JSON_VALUES = 4 * MAX_IMAGES_PER_REQUEST + 64
# An explanation costs ~50 predictions (above): 8 covers a row of digits cropped from a form, and
# the page sends one.
MAX_IMAGES_PER_EXPLANATION = 8

# --- what one image may be ----------------------------------------------------------------
# Formats Pillow may parse. Restricting the list keeps untrusted bytes away from every other
# Pillow plugin (EPS, for one, shells out to Ghostscript). MPO, the multi-picture JPEG many phones
# write, is listed for Pillow versions that register it separately; Pillow 13 opens it as JPEG.
ACCEPTED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "TIFF", "WEBP")
ACCEPTED_FORMATS_TEXT = "PNG, JPEG, BMP, GIF, TIFF, WebP accepted"
JPEG_FORMATS = ("JPEG", "MPO")
# 16,384 px a side admits every camera (a 36 MP full-frame sensor is 7,360 px wide) and
# panoramas of 40 MP at 4:1; it bounds the rows Pillow allocates one by one.
MAX_IMAGE_SIDE = 16_384
# 40 MP stored admits every common camera's default output (12 MP phones, 24-36 MP DSLRs); a
# JPEG of that size decodes at 1/8 scale (under 0.7 MP).
MAX_IMAGE_PIXELS = 40_000_000
# Formats decoded whole: 6 MP (a 3000x2000 screenshot or a 300 dpi scan of a half page) keeps
# one decode under ~50 MB (4 bytes a pixel, plus one conversion) and ~0.25 s.
MAX_DECODED_PIXELS = 6_000_000

# --- what one request may cost ------------------------------------------------------------
# Preprocessing decodes a large JPEG at reduced scale and box-reduces any large image by an
# integer factor, to a longer side in [WORKING_SIZE, 2 x WORKING_SIZE), before analysing it
# (handler.preprocessing.WORKING_SIZE; tests/unit/test_limits.py checks that they agree).
WORKING_SIZE = 400
ANALYSIS_SIDE = 2 * WORKING_SIZE
# The weights, from `python -m tools.limits_bench cost` and per-term timings of the images that
# stress each term, CPU of one core: a PNG decodes at 5 (grayscale) to 35 ns a pixel (16-bit
# RGBA); an analysed pixel costs 5-12 ns (the 799x799 scans), so one unit each. A progressive
# JPEG costs 5 ns a stored pixel (40 MP of flat grey) to 16 (12 MP of noise at the body limit),
# a baseline one 1.6 (40 MP) to 3.4 ns (12 MP of noise at the body limit): 1/2 and 1/8.
ANALYSIS_WEIGHT = 1
BASELINE_JPEG_SHARE = 8  # a sequential JPEG counts 1/8 of its stored pixels ...
PROGRESSIVE_JPEG_SHARE = 2  # ... a progressive one 1/2
# At most ~35 ns a unit, 8 M units is ~0.3 s of one core at worst (a 6 MP 16-bit RGBA PNG and
# another 0.9 MP of one; a 15 MP progressive JPEG of noise), so a batch of 32 of them ends in
# ~10 s. It admits 25 uploads of 400x400 (0.32 M each), 64 of 250x250, one 40 MP baseline JPEG
# (5.2 M) or one 12 MP progressive one (6.2 M) (docs/reliability.md, "Limits").
MAX_REQUEST_PIXELS = 8_000_000

# --- what an answer may hold --------------------------------------------------------------
MAX_MESSAGE_CHARS = 300  # one image's error message
MAX_NAME_CHARS = 64  # a client-chosen field name quoted in a message
MAX_ERRORS_LISTED = 5  # a 400 for a request with no usable image lists this many image errors


class LimitExceeded(ValueError):
    """A limit refused a whole request: `status` (413) and a message naming the limit."""

    status = 413
    type = "RequestTooLarge"


class ImageRefused(ValueError):
    """One image is refused by a limit or is not an accepted format; str() says which."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image declares about itself, read without decoding any pixel."""

    format: str
    width: int
    height: int
    progressive: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def describe(self) -> str:
        return f"{self.format} of {self.width}x{self.height}"

    def decoded_size(self) -> tuple[int, int]:
        """Size the decoder writes: a JPEG of ANALYSIS_SIDE px or more is decoded at the
        smallest DCT scale (1/2, 1/4, 1/8) that keeps its longer side >= WORKING_SIZE."""
        w, h = self.width, self.height
        if self.format in JPEG_FORMATS and max(w, h) >= ANALYSIS_SIDE:
            scale = max(s for s in (1, 2, 4, 8) if max(w, h) / s >= WORKING_SIZE)
            w, h = -(-w // scale), -(-h // scale)
        return w, h

    @property
    def decoded_pixels(self) -> int:
        w, h = self.decoded_size()
        return w * h

    @property
    def analysed_pixels(self) -> int:
        """Pixels preprocessing analyses: the decoded image box-reduced by an integer factor to
        under ANALYSIS_SIDE a side when it is larger."""
        w, h = self.decoded_size()
        factor = max(w, h) // WORKING_SIZE
        return (w // factor) * (h // factor) if factor >= 2 else w * h

    @property
    def cost(self) -> int:
        """This image's share of a request's pixel cost (see the module docstring)."""
        if self.format in JPEG_FORMATS:
            share = PROGRESSIVE_JPEG_SHARE if self.progressive else BASELINE_JPEG_SHARE
            decode = self.pixels // share
        else:
            decode = self.pixels
        return decode + ANALYSIS_WEIGHT * self.analysed_pixels


def open_header(data: bytes) -> Image.Image:
    """Open image bytes lazily (header only) with the accepted formats; raises ImageRefused.

    The returned image has not decoded a pixel: `check_image` must pass before `load()`.
    """
    Image.init()  # loads every plugin once: BMP/GIF/TIFF/WebP register only on init()
    # Image.open(formats=...) raises KeyError for a name Pillow has not registered (MPO in 13).
    formats = [f for f in ACCEPTED_FORMATS if f in Image.OPEN]
    try:
        return Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own (global, looser) guard fired while reading the header: ours is stricter.
        raise ImageRefused(bomb_message(data)) from None
    except Exception:  # UnidentifiedImageError, or whatever a hostile header provokes
        raise ImageRefused(
            f"cannot decode {len(data):,} bytes as an image ({ACCEPTED_FORMATS_TEXT})"
        ) from None


def header_of(image: Image.Image) -> ImageHeader:
    """The `ImageHeader` of an image opened by `open_header`."""
    width, height = image.size
    fmt = image.format or "image"
    # Pillow marks every progressive frame type (SOF2/6/10/14) this way: those buffer the
    # coefficients of the whole image, whatever the output scale.
    progressive = fmt in JPEG_FORMATS and bool(image.info.get("progressive"))
    return ImageHeader(fmt, width, height, progressive)


def check_image(header: ImageHeader) -> None:
    """Raise ImageRefused when one image is over a per-image limit (from its header only)."""
    if header.width == 0 or header.height == 0:
        raise ImageRefused(f"image is {header.width}x{header.height}: it has no pixels")
    if header.pixels > MAX_IMAGE_PIXELS:
        raise ImageRefused(_over_limit(header.width, header.height))
    if max(header.width, header.height) > MAX_IMAGE_SIDE:
        raise ImageRefused(
            f"image is {header.width}x{header.height}: a side over the limit of "
            f"{MAX_IMAGE_SIDE:,} pixels"
        )
    if header.decoded_pixels > MAX_DECODED_PIXELS:
        raise ImageRefused(
            f"image is a {header.describe} = {header.pixels:,} pixels, over the limit of "
            f"{MAX_DECODED_PIXELS:,} for a {header.format}, which is decoded whole (a JPEG may "
            f"have up to {MAX_IMAGE_PIXELS:,}: it is decoded at reduced scale); send it smaller "
            "or as a JPEG"
        )
    if header.cost > MAX_REQUEST_PIXELS:
        raise ImageRefused(
            f"image is a {'progressive ' if header.progressive else ''}{header.describe} whose "
            f"pixel cost {header.cost:,} alone is over the limit of {MAX_REQUEST_PIXELS:,} per "
            "request; send it smaller"
        )


def probe(data: bytes) -> ImageHeader:
    """Read and check one image's header; raises ImageRefused. Decodes no pixel."""
    image = open_header(data)
    try:
        header = header_of(image)
    finally:
        image.close()
    check_image(header)
    return header


def check_request_cost(headers: list[ImageHeader]) -> int:
    """Raise LimitExceeded when a request's images cost more than `MAX_REQUEST_PIXELS`."""
    total = sum(h.cost for h in headers)
    if total > MAX_REQUEST_PIXELS:
        raise LimitExceeded(
            f"the request's {len(headers)} images have a pixel cost of {total:,}, over the "
            f"limit of {MAX_REQUEST_PIXELS:,} per request (decoded pixels + {ANALYSIS_WEIGHT} x "
            f"the pixels analysed, estimated from each image's header); send fewer or smaller "
            "images per request"
        )
    return total


def check_image_count(count: int) -> None:
    """Raise LimitExceeded when a request carries more than `MAX_IMAGES_PER_REQUEST` images."""
    _check_count(count, MAX_IMAGES_PER_REQUEST, "request", "split it (python -m batch scores "
                 "folders of any size)")


def check_explanation_count(count: int) -> None:
    """Raise LimitExceeded when an explanations request carries more than
    `MAX_IMAGES_PER_EXPLANATION` images."""
    _check_count(count, MAX_IMAGES_PER_EXPLANATION, "explanations request", "split it, or ask "
                 "/predictions for the digits only (an explanation costs about 50 predictions)")


def _check_count(count: int, limit: int, request: str, advice: str) -> None:
    if count > limit:
        raise LimitExceeded(f"the {request} carries {count:,} images, over the limit of {limit} "
                            f"images per {request}; {advice}")


def check_json_size(body: bytes) -> None:
    """Raise LimitExceeded when a JSON body holds more values than any valid request needs.

    Counted on the bytes before parsing, so a body of millions of tiny values (`[0,0,...]`,
    `["","",...]`, `[{},{},...]`) never becomes millions of Python objects.
    """
    values = body.count(b",") + body.count(b"[") + body.count(b"{")
    if values > MAX_JSON_VALUES:
        raise LimitExceeded(
            f"the JSON body holds at least {values:,} values, more than a request of at most "
            f"{MAX_IMAGES_PER_REQUEST} images needs (limit {MAX_JSON_VALUES} values)"
        )


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters (with an ellipsis), so no message grows with input."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _over_limit(width: int, height: int) -> str:
    return (
        f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
        f"{MAX_IMAGE_PIXELS:,}"
    )


def bomb_message(data: bytes) -> str:
    """Pillow's own pixel guard fired: name the claimed dimensions when readable (PNG IHDR)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return _over_limit(int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
    return f"image is over the limit of {MAX_IMAGE_PIXELS:,} pixels"
