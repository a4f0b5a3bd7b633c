"""Turn one TorchServe request into the images it carries, before any decoding.

What the handler receives for one HTTP request is a dict `{field name: value}` built by
TorchServe 0.12.0's frontend and Python worker:

- raw body (`curl -T digit.png`, or `--data-binary @digit.png -H 'Content-Type: image/png'`):
  `{"body": bytes}`;
- `multipart/form-data`: one entry per field name (`-F a=@a.png -F b=@b.png` -> `{"a": bytes,
  "b": bytes}`). TorchServe keeps only ONE value per field name, so `-F image=@a -F image=@b`
  arrives as a single image: clients must give every file its own field name;
- `application/json`: the worker has already parsed the body into a dict:
  `{"image": "<base64>"}` or `{"images": ["<base64>", ...]}`;
- `application/x-www-form-urlencoded` (what `curl --data-binary @f` sends without `-H`): the
  frontend has split the bytes at every `&` and `=` and URL-decoded the pieces (`+` -> space,
  `%xx` -> byte), so the original image cannot be rebuilt. Such a request is refused with a
  message that says how to send an image.

`parse_request` returns the images as `ImageInput`s (name, bytes, or a per-image error) and raises
`RequestError` when the request as a whole is unusable.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

RAW_BODY_KEYS = ("body", "data")  # names TorchServe gives a non-multipart body
FORM_URLENCODED = "application/x-www-form-urlencoded"
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
    """One request of a TorchServe batch: the names of its images, where their answers start in
    the batch's flat list of images, or why the whole request is unusable."""

    names: list[str] = field(default_factory=list)
    first: int = 0
    failure: object | None = None  # the handler's ErrorResponse for the whole request


def parse_request(row: dict, content_type: str | None = None) -> list[ImageInput]:
    """The images of one request, in input order.

    `row` is the request's entry in TorchServe's `data` list; `content_type` its HTTP
    Content-Type header when known. Raises `RequestError` for a request that cannot carry an
    image at all (empty, form-urlencoded, JSON without images, ...).
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == FORM_URLENCODED:
        raise RequestError(
            "the body arrived as application/x-www-form-urlencoded (curl --data-binary without "
            "-H sends that), which TorchServe splits into form fields and so corrupts the "
            f"image; {HOW_TO_SEND}"
        )
    if not row:
        raise RequestError(f"the request carries no image; {HOW_TO_SEND}")
    if len(row) == 1 and next(iter(row)) in RAW_BODY_KEYS:
        return _parse_body(next(iter(row.values())))
    # multipart/form-data: every field is one image, in the order the client sent them.
    return [_field_image(name, value) for name, value in row.items()]


def _parse_body(value) -> list[ImageInput]:
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise RequestError(f"the request body is empty; {HOW_TO_SEND}")
        return [ImageInput("body", bytes(value))]
    if isinstance(value, dict):
        return _parse_json(value)
    if isinstance(value, str):
        # text/* bodies are decoded to str by the worker: no image travels as text.
        raise RequestError(f"the body was sent as text, not as an image; {HOW_TO_SEND}")
    raise RequestError(f"a JSON body must be an object with 'image' or 'images'; {HOW_TO_SEND}")


def _parse_json(doc: dict) -> list[ImageInput]:
    if "image" in doc and "images" in doc:
        raise RequestError("the JSON body has both 'image' and 'images'; send one of them")
    if "image" in doc:
        return [_base64_image("image", doc["image"])]
    if "images" in doc:
        images = doc["images"]
        if not isinstance(images, list) or not images:
            raise RequestError("'images' must be a non-empty list of base64 strings")
        return [_base64_image(f"images[{i}]", item) for i, item in enumerate(images)]
    raise RequestError(f"the JSON body has no 'image' or 'images' key; {HOW_TO_SEND}")


def _base64_image(name: str, value) -> ImageInput:
    if not isinstance(value, str):
        return ImageInput(name, error=f"{name} must be a base64 string, not {_kind(value)}")
    text = value.strip()
    if text.startswith("data:") and "," in text:  # tolerate a data URL: data:image/png;base64,...
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        return ImageInput(name, error=f"{name} is not valid base64 ({exc})")
    if not data:
        return ImageInput(name, error=f"{name} is empty")
    return ImageInput(name, data)


def _field_image(name: str, value) -> ImageInput:
    if isinstance(value, (bytes, bytearray)):
        if not value:
            return ImageInput(name, error=f"form field '{name}' is empty")
        return ImageInput(name, bytes(value))
    # A field without a filename (-F name=text) is decoded to text by the worker.
    return ImageInput(
        name, error=f"form field '{name}' is not a file; attach the image with -F {name}=@file.png"
    )


def _kind(value) -> str:
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value), "a number")
