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

The cases are made by kind of input, one module each, and `build_corpus` puts them together in
a fixed order:

- `malformed`   -> what is not a usable image: not an image at all, broken images, bad JSON,
                   an over-size body (all refused);
- `legitimate`  -> real images: without a digit, digits in unusual encodings, a 12 Mpx photo,
                   and the request forms clients really send;
- `work_limits` -> requests that multiply the work (counts, parts, declared pixels), refused
                   from what they declare;
- `case` (the `Case` record), `encoding` (body builders), `corpus` (`build_corpus`) and `cli`
  (`write_corpus`, `main`). Every name the single module had is importable from here.
"""

from tests.hostile_corpus.case import DIGIT_INDICES, Case
from tests.hostile_corpus.cli import main, write_corpus
from tests.hostile_corpus.corpus import build_corpus
from tests.hostile_corpus.encoding import b64, multipart, upscale
from tests.hostile_corpus.legitimate import add_contract_cases, photo_of_digit
from tests.hostile_corpus.malformed import png_decompression_bomb
from tests.hostile_corpus.work_limits import add_limit_cases, jpeg_header

__all__ = [
    "DIGIT_INDICES", "Case", "add_contract_cases", "add_limit_cases", "b64", "build_corpus",
    "jpeg_header", "main", "multipart", "photo_of_digit", "png_decompression_bomb", "upscale",
    "write_corpus",
]  # fmt: skip
