"""Turn one TorchServe request into the images it carries, before any decoding.

What the handler receives for one HTTP request is a dict `{field name: value}` built by
TorchServe 0.12.0's frontend and Python worker. The handler sets `TS_DECODE_INPUT_REQUEST=false`
in its worker (`handler.lenet_handler`), so values arrive as the client's bytes and this module
decodes JSON and text itself, with the limits of `handler.limits` applied BEFORE parsing:

- raw body (`curl -T digit.png`, or `--data-binary @digit.png -H 'Content-Type: image/png'`):
  `{"body": bytes}`;
- `multipart/form-data`: one entry per field name (`-F a=@a.png -F b=@b.png` -> `{"a": bytes,
  "b": bytes}`), each part's own Content-Type beside it. TorchServe keeps only ONE value per
  field name, so `-F image=@a -F image=@b` arrives as a single image: clients must give every
  file its own field name;
- JSON (any capitalisation of `application/json`, `+json` types, or an untyped body that starts
  with `{`): `{"image": "<base64>"}` or `{"images": ["<base64>", ...]}`. Base64 may be wrapped
  across lines (RFC 2045), URL-safe, unpadded, behind a UTF-8 BOM or a `data:...;base64,` prefix;
- `application/x-www-form-urlencoded` (what `curl --data-binary @f` sends without `-H`): the
  frontend has split the bytes at every `&` and `=` and URL-decoded the pieces (`+` -> space,
  `%xx` -> byte), so the original image cannot be rebuilt. Such a request is refused with a
  message that says how to send an image.

`parse_request` returns the images as `ImageInput`s (name, bytes, or a per-image error); it
raises `RequestError` when the request as a whole is unusable and `handler.limits.LimitExceeded`
when it asks for more than a request may.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from dataclasses import dataclass, field

from handler import limits

RAW_BODY_KEYS = ("body", "data")  # names TorchServe gives a non-multipart body
FORM_URLENCODED = "application/x-www-form-urlencoded"
UNTYPED = ("", "application/octet-stream")  # media types that say nothing about the body
HOW_TO_SEND = (
    "send the image bytes as the request body with an image Content-Type "
    "(curl -T digit.png URL, or curl --data-binary @digit.png -H 'Content-Type: image/png' URL), "
    "as multipart/form-data with one field name per file (curl -F a=@a.png -F b=@b.png URL), "
    'or as JSON {"image": "<base64>"} / {"images": ["<base64>", ...]}'
)


class RequestError(ValueError):
    """The request as a whole carries no usable image; str() is the user-facing message."""


@dataclass(frozen=True)
class ImageInput:
    """One image of a request: its name (for messages) and bytes, or why it is unusable."""

    name: str
    data: bytes | None = None
    error: str | None = None


@dataclass
class ParsedRequest:
    """One request of a TorchServe batch: its kind ("predict" or "explain"), the names of its
    images, where their answers start in the batch's flat list of images of that kind, or why
    the whole request is unusable."""

    names: list[str] = field(default_factory=list)
    first: int = 0
    kind: str = "predict"
    failure: object | None = None  # the handler's ErrorResponse for the whole request


def media_type(content_type: str | None) -> str:
    """`Application/JSON; charset=utf-8` -> `application/json` (case-insensitive, RFC 9110)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_request(row: dict, content_type: str | None = None,
                  part_types: dict[str, str] | None = None) -> list[ImageInput]:  # fmt: skip
    """The images of one request, in input order.

    `row` is the request's entry in TorchServe's `data` list; `content_type` its HTTP
    Content-Type header when known; `part_types` the Content-Type of each multipart field. Raises
    `RequestError` for a request that cannot carry an image at all (empty, form-urlencoded, JSON
    without images, ...) and `limits.LimitExceeded` for one over a request limit.
    """
    kind = media_type(content_type)
    if kind == FORM_URLENCODED:
        raise RequestError(
            "the body arrived as application/x-www-form-urlencoded (curl --data-binary without "
            "-H sends that), which TorchServe splits into form fields and so corrupts the "
            f"image; {HOW_TO_SEND}"
        )
    if not row:
        raise RequestError(f"the request carries no image; {HOW_TO_SEND}")
    if len(row) == 1 and next(iter(row)) in RAW_BODY_KEYS:
        return _parse_body(next(iter(row.values())), kind)
    # multipart/form-data: every field is one image, in the order the client sent them.
    limits.check_image_count(len(row))
    part_types = part_types or {}
    return [_field_image(name, value, media_type(part_types[name]) if name in part_types else None)
            for name, value in row.items()]  # fmt: skip


def _is_json(kind: str) -> bool:
    return kind in ("application/json", "text/json") or kind.endswith("+json")


def _parse_body(value, kind: str) -> list[ImageInput]:
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise RequestError(f"the request body is empty; {HOW_TO_SEND}")
        value = bytes(value)
        if _is_json(kind) or (kind in UNTYPED and value.lstrip(b" \t\r\n\xef\xbb\xbf")[:1] == b"{"):
            return _parse_json(_load_json(value))
        if kind.startswith("text/") and _is_utf8(value):
            # What TorchServe's own worker would have turned into text: no image travels so.
            raise RequestError(f"the body was sent as text, not as an image; {HOW_TO_SEND}")
        return [ImageInput("body", value)]
    if isinstance(value, dict):
        return _parse_json(value)
    if isinstance(value, str):
        # text/* bodies are decoded to str by a worker that decodes inputs: no image is text.
        raise RequestError(f"the body was sent as text, not as an image; {HOW_TO_SEND}")
    raise RequestError(f"a JSON body must be an object with 'image' or 'images'; {HOW_TO_SEND}")


def _load_json(body: bytes):
    """Parse a JSON body, refusing one with more values than a valid request needs first."""
    limits.check_json_size(body)
    if body.startswith(codecs.BOM_UTF8):
        body = body[len(codecs.BOM_UTF8):]
    try:
        # bytes: UTF-8/16/32 detected as RFC 8259 says. strict=False admits raw line breaks
        # inside strings: `printf '{"image": "%s"}' "$(base64 f.png)"` wraps at 76 columns.
        return json.loads(body, strict=False)
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"the body is not valid JSON ({limits.clip(str(exc), 120)}); "
                           f"{HOW_TO_SEND}") from None


def _parse_json(doc) -> list[ImageInput]:
    if not isinstance(doc, dict):
        raise RequestError(f"a JSON body must be an object with 'image' or 'images'; {HOW_TO_SEND}")
    if "image" in doc and "images" in doc:
        raise RequestError("the JSON body has both 'image' and 'images'; send one of them")
    if "image" in doc:
        return [_base64_image("image", doc["image"])]
    if "images" in doc:
        images = doc["images"]
        if not isinstance(images, list) or not images:
            raise RequestError("'images' must be a non-empty list of base64 strings")
        limits.check_image_count(len(images))
        return [_base64_image(f"images[{i}]", item) for i, item in enumerate(images)]
    raise RequestError(f"the JSON body has no 'image' or 'images' key; {HOW_TO_SEND}")


def decode_base64(text: str) -> bytes:
    """Base64 as clients send it: RFC 2045 line breaks (any whitespace), a UTF-8 BOM, a
    `data:<type>;base64,` prefix, the URL-safe alphabet, missing padding. Raises ValueError."""
    text = text.strip().lstrip("\ufeff").strip()
    if text[:5].lower() == "data:":
        head, comma, text = text.partition(",")
        if not comma or not head.lower().endswith(";base64"):
            raise ValueError("a data: URI must be of the form data:image/png;base64,<data>")
    text = "".join(text.split())
    if "-" in text or "_" in text:
        text = text.translate(str.maketrans("-_", "+/"))
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _base64_image(name: str, value) -> ImageInput:
    if not isinstance(value, str):
        return ImageInput(name, error=f"{name} must be a base64 string, not {_kind(value)}")
    try:
        data = decode_base64(value)
    except ValueError as exc:
        return ImageInput(name, error=f"{name} is not valid base64 ({limits.clip(str(exc), 120)})")
    if not data:
        return ImageInput(name, error=f"{name} is empty")
    return ImageInput(name, data)


def _field_image(name: str, value, kind: str | None = None) -> ImageInput:
    name = limits.clip(name, limits.MAX_NAME_CHARS)
    not_a_file = (f"form field '{name}' is not a file; attach the image with -F {name}=@file.png")
    if isinstance(value, (bytes, bytearray)):
        if not value:
            return ImageInput(name, error=f"form field '{name}' is empty")
        if (kind == "" or (kind or "").startswith("text/")) and _is_utf8(value):
            # A field without a filename (-F name=text) reaches the worker with no Content-Type
            # (a file always has one); text in it is not an image.
            return ImageInput(name, error=not_a_file)
        return ImageInput(name, bytes(value))
    # A worker that decodes inputs hands a text field over as str.
    return ImageInput(name, error=not_a_file)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _kind(value) -> str:
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value), "a number")
