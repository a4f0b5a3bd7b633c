# The benchmark's baseline: handler/preprocessing.py as of commit bf77909, verbatim below this
# comment except the EXIF step (`_upright`, unchanged since, imported from the handler), so
# `python -m tools.preprocess_bench` can time it against today's module in one run.
# Not shipped in the .mar and imported by nothing else.
"""Turn whatever image a person sends into an MNIST-like model input.

This is the single source of truth for preprocessing: the TorchServe handler, the batch job and
the tests all call `preprocess` (or `decode_image` + `to_mnist`). It ships inside the .mar, so it
imports only numpy, Pillow and `handler.normalization` -- never torch or scipy.

The steps reproduce how MNIST itself was made (LeCun et al.): the ink of a digit is cropped to its
bounding box, scaled (aspect preserved, anti-aliased) so that its longer side is 20 px, and pasted
into a 28x28 field so that its centre of mass sits at the centre. Before that, a photo or scan of
dark ink on light paper is turned into MNIST's white-ink-on-black with its background removed and
its contrast stretched, so that a phone photo and an MNIST test image look alike to the model:

1. decode (format allow-list, pixel limit from the header, JPEG DCT-scaled for big photos, EXIF
   orientation) and flatten any mode to grayscale floats, compositing transparency;
2. polarity: the border is paper; invert when the ink is darker than it;
3. background: a tile grid of paper levels (ink masked out) follows shadows and gradients;
   noise from neighbour differences; a soft threshold from the noise floor to the stroke cores;
4. bounding box on clearly inked, non-speck pixels; hairline strokes thickened to MNIST width;
5. area-resample to a 20 px box, paste with the centre of mass at (14, 14).

A digit already in MNIST's form (28x28, black background, 20 px box, centred) passes through
unchanged, so a PNG of an MNIST test digit gets exactly the answer its IDX tensor gets.
Nothing here mutates process-global state, so calls are thread-safe.

Every failure a bad upload can cause is raised as `InvalidImage`, whose message is complete and
user-facing; the caller only prefixes which image of the request it was.
"""

from __future__ import annotations

import io
import logging
import struct

import numpy as np
from PIL import Image

from handler.image_decoding import _upright  # unchanged since: only what changed is timed
from handler.normalization import IMAGE_SIZE, normalize

logger = logging.getLogger(__name__)

# Decompression-bomb limit, enforced by this module on every decode independently of Pillow's
# process-global `Image.MAX_IMAGE_PIXELS`. 40 MP admits every common camera's default output
# (12 MP phones, 24-33 MP DSLRs, 36 MP full-frame) while bounding one decode to ~160 MB (8-bit
# RGBA) -- an attacker's 100-byte PNG claiming 30000x30000 would otherwise ask for 3.6 GB.
MAX_IMAGE_PIXELS = 40_000_000

# Formats we let Pillow parse. Restricting the list keeps untrusted bytes away from every other
# Pillow plugin (EPS, for one, shells out to Ghostscript). MPO, the multi-picture JPEG many phones
# write, is listed for Pillow versions that register it separately; Pillow 13 opens it as JPEG.
ACCEPTED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "TIFF", "WEBP")
ACCEPTED_FORMATS_TEXT = "PNG, JPEG, BMP, GIF, TIFF, WebP accepted"

DIGIT_BOX = 20  # MNIST scales each digit so that its longer side is 20 px ...
CENTRE = IMAGE_SIZE / 2  # ... and puts its centre of mass at (14, 14) in pixel-index coordinates.

# Large inputs are reduced early so that their longer side lies in [WORKING_SIZE, 2*WORKING_SIZE):
# a digit that fills a tenth of the frame still spans > 40 px there, twice what we keep.
WORKING_SIZE = 400

# Background/contrast estimation. Values are fractions of the [0, 1] grey range unless noted.
_TILE_MIN_PX = 16  # smallest tile of the local-background grid (px)
_TILE_GRID_MAX = 8  # at most 8x8 tiles: coarse enough that a stroke never fills a whole tile
_TILE_MIN_PAPER = 0.25  # a tile needs a quarter of its pixels outside the ink to estimate paper
_NOISE_SIGMAS = 3.0  # the soft threshold starts this many noise deviations above the background
_MIN_THRESHOLD = 0.02  # ... and never below 2 % of the ink level (drops quantisation dust)
_MAX_THRESHOLD = 0.35  # ... nor above 35 % of it (keeps strokes when noise is overestimated)
_INK_PERCENTILE = 90  # the ink level is the 90th percentile of ink pixels: stroke cores -> 1.0
_MIN_CONTRAST = 0.06  # below this ink-vs-background difference the image counts as blank ...
_MIN_CONTRAST_SIGMAS = 8.0  # ... or below this many noise deviations (blank paper's own grain)
_BLANK_MAX_INKED = 0.2  # ... unless this share of pixels is clearly inked
_MIXED_BORDER = 0.25  # border spread above this share of the image's range: no paper visible
_MIN_INK_PIXELS = 3  # fewer ink pixels than this is noise, not a digit
_STRONG_INK = 0.25  # the bounding box is measured on pixels at least this inked ...
_SPECK_MASS = 0.03  # ... drops detached end pieces lighter than 3 % of the ink (dust, ticks),
_MASS_TRIM = 0.002  # ... ignores the outermost 0.2 % of ink mass on each side ...
_FRINGE = 0.06  # ... then grows back over contiguous ink by up to 6 % of its extent (fringes)
_THIN_STROKE = 1.2  # strokes thinner than this in the 20 px box are thickened ...
_TARGET_STROKE = 2.0  # ... to this (MNIST: median 2.3 px, 25th percentile 2.0 px)


class InvalidImage(ValueError):
    """An uploaded image cannot be used; str(exc) is a complete user-facing message."""


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes into a fully loaded Pillow image, upright per its EXIF orientation.

    Accepts PNG, JPEG, BMP, GIF (first frame), TIFF (first page) and WebP. Large JPEGs are decoded
    at a reduced DCT scale (`Image.draft`), so the result may be smaller than the stored image.
    Raises `InvalidImage` for empty, unreadable, truncated or over-large (> MAX_IMAGE_PIXELS) data;
    no Pillow exception escapes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImage(f"image data must be bytes, not {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise InvalidImage("empty image data (0 bytes)")
    # Image.open(formats=...) raises KeyError for a name Pillow has not registered: 'MPO' is not
    # one in Pillow 13 (the JPEG plugin opens MPO files), and plugins past PNG/JPEG/BMP/GIF load
    # only on init(). Unfiltered, every BMP/GIF/TIFF/WebP was refused as "cannot decode".
    Image.init()  # loads every plugin once; a no-op afterwards
    formats = [f for f in ACCEPTED_FORMATS if f in Image.OPEN]
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own (global, looser) guard fired while reading the header; ours is stricter,
        # so this is always a rejection. The warning class only arrives as an exception when
        # warnings are configured as errors (e.g. `-W error`), but then it must reject too.
        raise InvalidImage(_bomb_message(data, exc)) from None
    except Exception as exc:  # UnidentifiedImageError, or whatever a hostile header provokes
        logger.debug("Image.open failed on %d bytes: %r", size, exc)
        raise InvalidImage(
            f"cannot decode {size:,} bytes as an image ({ACCEPTED_FORMATS_TEXT})"
        ) from None

    # Our limit, checked from the header before any pixel is decoded. This is what turns Pillow's
    # warning band (between its limit and twice its limit) into an error per call, without
    # touching the process-global warning filters or Image.MAX_IMAGE_PIXELS.
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidImage(_over_limit(width, height))
    if width == 0 or height == 0:
        raise InvalidImage(f"image is {width}x{height}: it has no pixels")

    fmt = image.format or "image"
    if fmt in ("JPEG", "MPO") and max(width, height) >= 2 * WORKING_SIZE:
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, straight to luma: a 12 MP photo then
        # costs milliseconds instead of a full-resolution decode we would throw away.
        scale = WORKING_SIZE / max(width, height)
        try:
            image.draft("L", (max(1, int(width * scale)), max(1, int(height * scale))))
        except Exception as exc:  # draft is an optimisation only; decode at full size instead
            logger.debug("JPEG draft failed: %r", exc)
    try:
        image.load()  # Pillow decodes lazily: force it here so corrupt data fails inside the guard
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(_bomb_message(data, exc)) from None
    except Exception as exc:
        raise InvalidImage(
            f"cannot decode {size:,} bytes as a {fmt} image: the data is truncated or corrupt "
            f"({_short(exc)})"
        ) from None
    return _upright(image)


def to_mnist(image: Image.Image) -> np.ndarray:
    """Map any decoded image to a (28, 28) float32 array in [0, 1], white ink on black, MNIST-style.

    Handles every Pillow mode (transparency is composited onto a background that keeps the ink
    visible; 16-bit and float images are scaled by their actual range), inverts dark-on-light
    input, removes uneven background, stretches the ink to 1.0, crops the ink, scales its longer
    side to 20 px and centres its centre of mass at (14, 14). An image without ink gives zeros.
    Raises `InvalidImage` if the image cannot be converted.
    """
    try:
        gray = _to_gray(image)
    except InvalidImage:
        raise
    except Exception as exc:
        raise InvalidImage(
            f"cannot convert a {image.mode} image of {image.size[0]}x{image.size[1]} to "
            f"grayscale ({_short(exc)})"
        ) from None
    if _is_mnist_form(gray):
        return gray  # already what MNIST's own normalisation produces: nothing to redo
    try:
        ink = _extract_ink(gray)
        if ink is None:
            return np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        return _centre_in_field(_fit_box(ink))
    except Exception as exc:  # a bug here must still answer the user with a 4xx, not a 500
        logger.exception("preprocessing failed on a %s image of %s", image.mode, image.size)
        raise InvalidImage(
            f"cannot preprocess a {image.mode} image of {image.size[0]}x{image.size[1]} "
            f"({_short(exc)})"
        ) from None


def preprocess(data: bytes) -> np.ndarray:
    """Decode image bytes into a normalised (1, 28, 28) float32 model input; raises InvalidImage."""
    return normalize(to_mnist(decode_image(data)))[np.newaxis]


# --- decoding helpers -----------------------------------------------------------------------


def _over_limit(width: int, height: int) -> str:
    return (
        f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
        f"{MAX_IMAGE_PIXELS:,}"
    )


def _bomb_message(data: bytes, exc: Exception) -> str:
    """Name the claimed dimensions when we can read them (PNG IHDR), else Pillow's pixel count."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return _over_limit(width, height)
    digits = [int(tok) for tok in str(exc).replace("(", " ").split() if tok.isdigit()]
    if digits:
        return f"image is {digits[0]:,} pixels, over the limit of {MAX_IMAGE_PIXELS:,}"
    return f"image is over the limit of {MAX_IMAGE_PIXELS:,} pixels"


def _short(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


# --- grayscale conversion ---------------------------------------------------------------------

_HIGH_DEPTH_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def _reduce_early(image: Image.Image) -> Image.Image:
    """Box-reduce a large image by an integer factor so its longer side is < 2*WORKING_SIZE."""
    factor = max(image.size) // WORKING_SIZE
    if factor < 2:
        return image
    try:
        return image.reduce(factor)
    except (ValueError, NotImplementedError):  # modes reduce() lacks: fall back to numpy later
        return image


def _to_gray(image: Image.Image) -> np.ndarray:
    """Grayscale float32 in [0, 1] with transparency composited; large inputs reduced first."""
    mode = image.mode
    if mode in ("P", "PA") or (mode in ("1", "L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")  # the palette may carry per-entry alpha (tRNS)
    elif mode in ("LA", "La", "RGBa"):
        image = image.convert("LA" if mode != "RGBa" else "RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("LAB",):
        image = image.getchannel("L")  # lightness is already a grayscale channel
    elif mode in ("HSV",):
        image = image.convert("RGB")
    elif mode.startswith("I;16"):
        image = image.convert("I")  # same values; reduce() has no 16-bit path
    elif mode not in ("L", "RGB", "RGBA", "LA", *_HIGH_DEPTH_MODES):
        image = image.convert("RGB")  # CMYK, YCbCr, RGBX, ...: Pillow's own colour conversion

    image = _reduce_early(image)
    mode = image.mode
    if mode in _HIGH_DEPTH_MODES:
        return _stretch_range(np.asarray(image, dtype=np.float32))
    if mode in ("RGBA", "LA"):
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) * (1 / 255)
        gray = np.asarray(image.convert("L") if mode == "RGBA" else image.getchannel("L"))
        return _composite(gray.astype(np.float32) * (1 / 255), alpha)
    if mode != "L":
        image = image.convert("L")
    return _block_reduce(np.asarray(image, dtype=np.float32) * (1 / 255))


def _block_reduce(gray: np.ndarray) -> np.ndarray:
    """Area-average by an integer factor when reduce() could not run on the Pillow image."""
    factor = max(gray.shape) // WORKING_SIZE
    if factor < 2:
        return gray
    h, w = (gray.shape[0] // factor) * factor, (gray.shape[1] // factor) * factor
    blocks = gray[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _stretch_range(values: np.ndarray) -> np.ndarray:
    """16-bit/32-bit/float pixels -> [0, 1] by their actual range (not by clipping at 255)."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    values = _block_reduce(values)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) * (1.0 / (high - low))).astype(np.float32)


def _composite(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten transparency onto the background colour the picture implies.

    A drawing of ink on a transparent sheet stores the ink as its only opaque pixels; whatever
    colour its transparent pixels happen to hold (often black) is meaningless. So when opaque
    pixels cover less than half the image they are the ink, and the background is the opposite
    of their brightness (black ink -> white paper, white ink -> black). When they cover most of
    it they are the paper itself, and transparent margins take the paper's (median) colour.
    """
    if alpha.min() >= 1.0:
        return gray
    coverage = float(alpha.mean())
    if coverage == 0.0:
        return np.zeros_like(gray)
    if coverage < 0.5:
        ink_brightness = float((gray * alpha).sum() / alpha.sum())
        background = 1.0 if ink_brightness < 0.5 else 0.0
    else:
        background = float(np.median(gray[alpha >= 0.5]))
    return gray * alpha + background * (1.0 - alpha)


# --- ink extraction ---------------------------------------------------------------------------


def _is_mnist_form(gray: np.ndarray) -> bool:
    """Is this a digit exactly as MNIST stores one: 28x28, white ink on an exactly black
    background, the ink's box 20 px on its longer side, its centre of mass within half a pixel
    of (14, 14)? (69,982 of the 70,000 MNIST images have that form: 16 have a 19 px box, and
    2 a centre just past the half pixel.)

    Such an image is already the output of the steps below; running them anyway would only
    re-estimate its contrast and may shift it by a pixel when its mass sits near a half-pixel.
    A rendered PNG of an MNIST digit is this case, and passes through exactly as the model was
    trained on it; a photo, a JPEG (never exactly black) or an off-centre digit is not.
    """
    if gray.shape != (IMAGE_SIZE, IMAGE_SIZE):
        return False
    rows, cols = gray.sum(axis=1), gray.sum(axis=0)
    inked_rows, inked_cols = np.flatnonzero(rows), np.flatnonzero(cols)
    if inked_rows.size == 0:
        return False
    height = inked_rows[-1] - inked_rows[0] + 1
    width = inked_cols[-1] - inked_cols[0] + 1
    if max(height, width) != DIGIT_BOX:
        return False
    cy, cx = _centre_of_mass(gray)
    return abs(cy - CENTRE) <= 0.5 and abs(cx - CENTRE) <= 0.5


def _median(values: np.ndarray) -> float:
    """Upper median by partition: np.median's generality costs more than the work on small input."""
    k = values.size // 2
    return float(np.partition(values.ravel(), k)[k])


def _border(gray: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels (about 3 % of the size, at least one pixel)."""
    h, w = gray.shape
    k = max(1, min(h, w) // 32)
    return np.concatenate(
        [gray[:k].ravel(), gray[-k:].ravel(), gray[k:-k, :k].ravel(), gray[k:-k, -k:].ravel()]
    )


def _rough_ink_mask(ink: np.ndarray) -> np.ndarray:
    """Pixels that are clearly ink in a bright-ink-on-dark image (a global, generous cut).

    Halfway between the paper (border median) and the ink's extreme (99.9th percentile, so that
    a digit covering a small part of a big canvas still counts). Used only to keep ink out of
    the background and noise estimates; a tightly cropped digit can cover half the picture.
    """
    paper = _median(_border(ink))
    k = int(0.999 * (ink.size - 1))
    top = float(np.partition(ink.ravel(), k)[k])
    return ink > paper + 0.5 * (top - paper)


def _background_field(ink: np.ndarray, inked: np.ndarray) -> np.ndarray | float:
    """Estimate the (possibly uneven) background of a bright-ink-on-dark image.

    A coarse grid of tiles, each summarised by the median of its pixels outside the rough ink
    mask `inked` (a tile that is mostly ink has no say), then a 3x3 median over the grid that
    fills such tiles from their neighbours and ignores odd ones out while a lighting gradient
    passes unchanged (the median of a ramp is its middle), then bilinear interpolation back to
    full size. This follows shadows, vignetting and lighting gradients of phone photos without
    scipy. Small images (MNIST's own 28x28 among them) get one level.
    """
    h, w = ink.shape
    paper = ink[~inked]
    if paper.size == 0:
        return 0.0
    overall = float(np.partition(paper, paper.size // 2)[paper.size // 2])
    rows = min(_TILE_GRID_MAX, h // _TILE_MIN_PX)
    cols = min(_TILE_GRID_MAX, w // _TILE_MIN_PX)
    if rows < 2 or cols < 2:
        return overall
    th, tw = h // rows, w // cols

    def tiled(values: np.ndarray) -> np.ndarray:
        cut = values[: rows * th, : cols * tw].reshape(rows, th, cols, tw)
        return cut.transpose(0, 2, 1, 3).reshape(rows, cols, th * tw)

    masked = np.where(tiled(inked), np.inf, tiled(ink))  # ink sorts after every paper pixel
    masked.sort(axis=2)
    valid = (~tiled(inked)).sum(axis=2)
    level = np.take_along_axis(masked, (valid // 2)[..., None], axis=2)[..., 0]
    level[valid < _TILE_MIN_PAPER * th * tw] = np.nan

    # 3x3 median over the grid, NaN-aware: sorting puts NaN last, so the median of the valid
    # neighbours is at index (count - 1) // 2.
    padded = np.pad(level, 1, mode="edge")
    stack = np.sort([padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3)], 0)
    count = (~np.isnan(stack)).sum(axis=0)
    median = np.take_along_axis(stack, np.maximum(count - 1, 0)[None] // 2, axis=0)[0]
    level = np.where(count > 0, median, overall).astype(np.float32)
    # Tile centres sit at (i + 0.5) * th; resizing the grid with BILINEAR maps them the same way.
    return np.asarray(Image.fromarray(level, mode="F").resize((w, h), Image.Resampling.BILINEAR))


def _ink_is_dark(gray: np.ndarray) -> bool:
    """Is this dark ink on light paper (how people write), rather than MNIST's light on dark?

    The border is paper. Ink is whatever departs from the paper level by more than the paper's
    own variation (grain, JPEG noise, a lighting gradient: 3 robust deviations of the border);
    the side with more such departure mass is the ink's. Comparing mass rather than percentiles
    keeps this right when the digit covers well under 1 % of a large canvas.
    """
    border = _border(gray)
    paper = _median(border)
    spread = 3.0 * 1.4826 * _median(np.abs(border - paper))
    flat = gray.ravel()
    k_low, k_high = int(0.001 * (flat.size - 1)), int(0.999 * (flat.size - 1))
    parted = np.partition(flat, (k_low, k_high))
    if spread > _MIXED_BORDER * float(parted[k_high] - parted[k_low]):
        # The border is not one level: a crop so tight that ink runs along it (a '1' cropped to
        # its stroke). No paper to compare with, so assume how people write: dark ink.
        return True
    deviation = gray - paper
    darker = float(np.clip(-deviation - spread, 0.0, None).sum())
    lighter = float(np.clip(deviation - spread, 0.0, None).sum())
    return darker > lighter


def _noise_sigma(residual: np.ndarray, inked: np.ndarray) -> float:
    """Pixel noise (paper grain, JPEG) from differences of horizontal neighbours on paper.

    Differencing cancels the smooth parts of the picture -- lighting, and the anti-aliased
    fringe around strokes, which a tight crop has more of than paper -- and keeps the noise:
    for Gaussian noise, median|a - b| = 0.6745 * sqrt(2) * sigma.
    """
    paper_pairs = ~(inked[:, 1:] | inked[:, :-1])
    if not paper_pairs.any():
        return 0.0
    steps = np.abs(np.diff(residual, axis=1))[paper_pairs]
    k = steps.size // 2
    return float(np.partition(steps, k)[k]) * (1.4826 / np.sqrt(2.0))


def _extract_ink(gray: np.ndarray) -> np.ndarray | None:
    """White-on-black ink in [0, 1] with background removed and contrast stretched, or None."""
    if _ink_is_dark(gray):
        gray = 1.0 - gray
    inked = _rough_ink_mask(gray)
    residual = gray - _background_field(gray, inked)

    # Paper level and noise from the pixels outside the rough ink mask.
    flat = residual.ravel()
    paper = residual[~inked] if not inked.all() else flat
    k50 = int(0.50 * (paper.size - 1))
    p50 = float(np.partition(paper, k50)[k50])  # O(n) order statistic; a full sort costs more
    sigma = _noise_sigma(residual, inked)
    floor = p50 + _NOISE_SIGMAS * sigma
    candidates = flat[flat > floor + _MIN_THRESHOLD * (1.0 - floor)]
    if candidates.size < _MIN_INK_PIXELS:
        return None
    k_ink = int(_INK_PERCENTILE / 100 * (candidates.size - 1))
    ink_level = float(np.partition(candidates, k_ink)[k_ink])
    if ink_level - p50 < _MIN_CONTRAST:
        return None
    if ink_level - p50 < _MIN_CONTRAST_SIGMAS * sigma and inked.mean() < _BLANK_MAX_INKED:
        # A photo of blank paper: its "ink" is the top of its own noise distribution. (When a
        # fifth of the picture is far from the paper level it is not blank: a '1' cropped to
        # its stroke has only anti-aliased fringe for paper, which reads as noise.)
        return None
    # Soft threshold: a linear ramp from the noise floor to the ink level, so anti-aliased
    # stroke edges keep their grey levels while paper texture and JPEG ringing go to zero.
    # A noise-free background (a digital drawing, a digit like MNIST's) needs no threshold.
    span = ink_level - p50
    minimum = _MIN_THRESHOLD * span if floor > p50 else 0.0
    low = p50 + min(max(floor - p50, minimum), _MAX_THRESHOLD * span)
    out = (residual - low) * (1.0 / (ink_level - low))
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def _extent(strong: np.ndarray, profile: np.ndarray) -> tuple[int, int]:
    """[start, stop) of the ink along one axis, from its projection profiles.

    `strong` is the profile of clearly inked pixels only, so faint residue spread over a large
    photo cannot stretch the box. Separate runs of ink at either end holding under
    `_SPECK_MASS` of the total (a dot of dust, a pen tick beside the digit) are dropped, and the
    outermost `_MASS_TRIM` of mass is ignored. `profile` (all ink) then lets the box grow back
    over the anti-aliased fringe that the trim and the strong-ink test cut off.
    """
    if not strong.any():  # only faint ink: measure that instead
        strong = profile
    inked = np.concatenate(([0], (strong > 0).astype(np.int8), [0]))
    edges = np.diff(inked)
    run_starts, run_stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    cumulative = np.concatenate(([0.0], np.cumsum(strong, dtype=np.float64)))
    total = cumulative[-1]
    run_mass = cumulative[run_stops] - cumulative[run_starts]
    first, last = 0, len(run_starts) - 1
    while first < last and run_mass[first] < _SPECK_MASS * total:
        first += 1
    while last > first and run_mass[last] < _SPECK_MASS * total:
        last -= 1
    low, high = int(run_starts[first]), int(run_stops[last])
    kept = cumulative[high] - cumulative[low]
    start = low + int(
        np.searchsorted(cumulative[low + 1 : high + 1] - cumulative[low], _MASS_TRIM * kept)
    )
    stop = low + 1 + int(
        np.searchsorted(
            cumulative[low + 1 : high + 1] - cumulative[low], (1.0 - _MASS_TRIM) * kept
        )
    )
    stop = min(max(stop, start + 1), high)
    # Grow back over contiguous ink (anti-aliased fringes the trim cut off), but only a little,
    # so that a speck a gap away is not pulled back in.
    grow = max(1, round(_FRINGE * (stop - start)))
    for _ in range(grow):
        if start > 0 and profile[start - 1] > 0:
            start -= 1
        else:
            break
    for _ in range(grow):
        if stop < profile.size and profile[stop] > 0:
            stop += 1
        else:
            break
    return start, stop


def _local_mean(ink: np.ndarray) -> np.ndarray:
    """3x3 box mean. A stroke, even a 1 px anti-aliased one, keeps a 3x3 mean near a third of
    its value or more; an isolated speck of paper grain that survived the threshold does not."""
    padded = np.pad(ink, 1)
    rows = padded[:-2] + padded[1:-1] + padded[2:]  # separable: 3 rows, then 3 columns
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) * (1.0 / 9.0)


def _stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: ink area over centre-line length, the length estimated as
    the count of ink/paper transitions over 2.55 (2 sides x 4/pi for random orientations)."""
    mask = (ink > 0.5).view(np.int8)
    transitions = np.count_nonzero(np.diff(mask, axis=0)) + np.count_nonzero(np.diff(mask, axis=1))
    return 2.55 * float(mask.sum()) / max(transitions, 1)


def _dilate(ink: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level dilation by a (2r+1)^2 square, separably, growing the canvas by r per side."""
    out = np.pad(ink, radius)
    for axis in (0, 1):
        source = out.copy()
        n = out.shape[axis]
        for shift in range(1, radius + 1):
            ahead = [slice(None)] * 2
            behind = [slice(None)] * 2
            ahead[axis], behind[axis] = slice(shift, n), slice(0, n - shift)
            np.maximum(out[tuple(ahead)], source[tuple(behind)], out=out[tuple(ahead)])
            np.maximum(out[tuple(behind)], source[tuple(ahead)], out=out[tuple(behind)])
    return out


def _normalise_stroke(crop: np.ndarray) -> np.ndarray:
    """Thicken hairline strokes (a ballpoint pen photographed at high resolution) to MNIST's.

    MNIST strokes are ~2.3 px wide in the 20 px box (1st percentile 1.3 px). A fine pen on a
    large photo comes out under a pixel there and the model, never having seen such faint
    strokes, fails. Below _THIN_STROKE the crop is reduced to 4x the box and dilated until the
    stroke reaches _TARGET_STROKE. MNIST-like input is never touched.
    """
    longer = max(crop.shape)
    if longer <= DIGIT_BOX:
        return crop
    width_in_box = _stroke_width(crop) * DIGIT_BOX / longer
    if width_in_box >= _THIN_STROKE:
        return crop
    work = 4 * DIGIT_BOX
    if longer > work:
        size = tuple(max(1, round(side * work / longer)) for side in crop.shape[::-1])
        small = Image.fromarray(np.ascontiguousarray(crop), mode="F").resize(
            size, Image.Resampling.BOX
        )
        crop = np.asarray(small)
        peak = float(crop.max())
        if peak > 0:  # reducing a hairline spreads its ink thinner: restore full intensity
            crop = np.minimum(crop * (1.0 / peak), 1.0)
        longer = max(crop.shape)
    px_per_box = longer / DIGIT_BOX
    radius = round((_TARGET_STROKE - width_in_box) * px_per_box / 2)
    return _dilate(crop, radius) if radius > 0 else crop


def _fit_box(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink and scale, aspect preserved, so the longer side is DIGIT_BOX pixels."""
    strong = np.where((ink >= _STRONG_INK) & (_local_mean(ink) >= _STRONG_INK * 0.8), ink, 0.0)
    top, bottom = _extent(strong.sum(axis=1), ink.sum(axis=1))
    left, right = _extent(strong.sum(axis=0), ink.sum(axis=0))
    crop = _normalise_stroke(ink[top:bottom, left:right])
    h, w = crop.shape
    longer = max(h, w)
    if longer == DIGIT_BOX:
        return crop
    size = (max(1, round(w * DIGIT_BOX / longer)), max(1, round(h * DIGIT_BOX / longer)))
    # BOX is exact area averaging when shrinking (anti-aliased); BILINEAR when enlarging.
    resample = Image.Resampling.BOX if longer > DIGIT_BOX else Image.Resampling.BILINEAR
    box = Image.fromarray(np.ascontiguousarray(crop), mode="F").resize(size, resample)
    return np.clip(np.asarray(box), 0.0, 1.0)


def _centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    """(row, column) of the ink's centre of mass in pixel-index coordinates; needs some ink."""
    mass = float(pixels.sum())
    rows, cols = np.arange(pixels.shape[0]), np.arange(pixels.shape[1])
    return float(pixels.sum(axis=1) @ rows) / mass, float(pixels.sum(axis=0) @ cols) / mass


def _centre_in_field(box: np.ndarray) -> np.ndarray:
    """Paste the box into 28x28 with its centre of mass at (14, 14), clipped to the canvas."""
    h, w = box.shape
    if float(box.sum()) <= 0.0:
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    cy, cx = _centre_of_mass(box)
    top = min(max(round(CENTRE - cy), 0), IMAGE_SIZE - h)
    left = min(max(round(CENTRE - cx), 0), IMAGE_SIZE - w)
    field = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    field[top : top + h, left : left + w] = box
    return field
