"""Real images a public endpoint must answer (200): images with nothing to recognise (any digit
is fine, a crash is not), MNIST digits in unusual encodings (16-bit, palette, 1-bit, RGBA, CMYK,
animated GIF, BMP, TIFF, WebP, base64 JSON), a 4000x3000 phone photo (refused only past the
limits), and the forms of JSON and multipart requests clients really send."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageFilter

from tests.hostile_corpus.encoding import b64, multipart, upscale
from tests.images import encode


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


def add_no_digit_cases(add) -> None:
    """Real images with nothing to recognise: any digit is fine, a crash is not."""
    add("png_1x1_black", encode(Image.new("L", (1, 1), 0), "PNG"), "image/png", "prediction")
    add("png_1x1_white", encode(Image.new("L", (1, 1), 255), "PNG"), "image/png", "prediction")
    add("png_blank_black", encode(Image.new("L", (28, 28), 0), "PNG"), "image/png", "prediction")
    add(
        "png_blank_white",
        encode(Image.new("L", (280, 280), 255), "PNG"),
        "image/png",
        "prediction",
    )


def add_digit_cases(add, digit: dict, plain_png: bytes, jpeg: bytes) -> None:
    """Legitimate digits in unusual encodings: the right digit must come back."""
    label0 = digit[0][1]
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


def add_photo_case(add, px0: np.ndarray, label0: int, max_request_size: int,
                   max_image_pixels: int | None) -> None:  # fmt: skip
    """A 4000x3000 phone photo of a digit: answered when within the pixel limit, else refused."""
    photo = encode(photo_of_digit(px0, 4000, 3000), "JPEG", quality=85)
    pixels = 4000 * 3000
    if len(photo) > max_request_size:
        add("photo_4000x3000", photo, "image/jpeg", "reject", status=413, note="over size limit")
    elif max_image_pixels is not None and pixels > max_image_pixels:
        add("photo_4000x3000", photo, "image/jpeg", "reject", note="over the pixel limit")
    else:
        add("photo_4000x3000", photo, "image/jpeg", "digit", label=label0, note="12 Mpx JPEG")

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
