"""Turn whatever image a person sends into an MNIST-like model input.

This is the single source of truth for preprocessing: the TorchServe handler, the batch job and
the tests all call `preprocess` (or `decode_image` + `to_mnist`). It ships inside the .mar, so it
imports only numpy, Pillow, OpenCV and `handler.normalization` -- never torch or scipy. Pillow
decodes (it holds the format allow-list and reads every mode); OpenCV does the pixel work.

The steps reproduce how MNIST itself was made (LeCun et al.): the ink of a digit is cropped to its
bounding box, scaled (aspect preserved, anti-aliased) so that its longer side is 20 px, and pasted
into a 28x28 field so that its centre of mass sits at the centre. Before that, a photo or scan of
dark ink on light paper is turned into MNIST's white-ink-on-black with its background removed and
its contrast stretched, so that a phone photo and an MNIST test image look alike to the model:

1. decode (format allow-list and per-image limits from the header, both in `handler.limits`;
   JPEG decoded straight to luma and DCT-scaled for big photos, EXIF orientation), flatten any
   mode to grayscale compositing transparency, and area-reduce large images;
2. polarity: the border is paper; invert when the ink is darker than it;
3. background: a grid of paper levels (ink masked out) follows shadows and gradients; noise from
   neighbour differences; a soft threshold from the noise floor to the stroke cores;
4. bounding box on clearly inked, non-speck pixels; hairline strokes thickened to MNIST width;
5. area-resample to a 20 px box, paste with the centre of mass at (14, 14).

The pixel work runs on 8-bit images (OpenCV's fast path; MNIST itself has 8 bits), and order
statistics (medians, percentiles) come from 256-level histograms rather than sorts.

A digit already in MNIST's form (28x28, black background, 20 px box, centred) passes through
unchanged, so a PNG of an MNIST test digit gets exactly the answer its IDX tensor gets.
Calls are thread-safe.

Every failure a bad upload can cause is raised as `InvalidImage`, whose message is complete and
user-facing; the caller only prefixes which image of the request it was.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from PIL import Image, ImageOps

from handler import limits
from handler.normalization import IMAGE_SIZE, normalize

logger = logging.getLogger(__name__)

# One image is far too small work to split across threads, and every caller already runs
# preprocessing in parallel (TorchServe workers, the batch job's decode processes): OpenCV's own
# pool would only oversubscribe the cores.
cv2.setNumThreads(1)

# The format allow-list and the per-image limits (pixels, side, decoded size) live in
# handler/limits.py with every other serving limit; decode_image applies them to every decode.
MAX_IMAGE_PIXELS = limits.MAX_IMAGE_PIXELS

DIGIT_BOX = 20  # MNIST scales each digit so that its longer side is 20 px ...
CENTRE = IMAGE_SIZE / 2  # ... and puts its centre of mass at (14, 14) in pixel-index coordinates.

# Large inputs are reduced early so that their longer side lies in [WORKING_SIZE, 2*WORKING_SIZE):
# a digit that fills a tenth of the frame still spans > 40 px there, twice what we keep. (The
# limits price a request by this size, so it is defined with them.)
WORKING_SIZE = limits.WORKING_SIZE

# Background/contrast estimation. Values are fractions of the [0, 1] grey range unless noted.
_TILE_MIN_PX = 16  # smallest tile of the local-background grid (px)
_TILE_GRID_MAX = 8  # at most 8x8 tiles: coarse enough that a stroke never fills a whole tile
_TILE_MIN_PAPER = 0.25  # a tile needs a quarter of its pixels outside the ink to estimate paper
_FLAT_LEVELS = 2  # a background varying by at most this many grey levels is taken as one level
_NEIGHBOURS = np.ones((3, 3), np.uint8)  # 3x3 structuring element
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

_INDEX = np.arange(256)  # the grey levels of an 8-bit histogram
_SMALL_PIXELS = 64 * 64  # below this many pixels, per-call overhead outweighs per-pixel cost


class InvalidImage(ValueError):
    """An uploaded image cannot be used; str(exc) is a complete user-facing message."""


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes into a fully loaded Pillow image, upright per its EXIF orientation.

    Accepts PNG, JPEG, BMP, GIF (first frame), TIFF (first page) and WebP. JPEGs in colour are
    decoded straight to luma (mode L), and large ones at a reduced DCT scale (`Image.draft`), so
    the result may be smaller than the stored image.
    Raises `InvalidImage` for empty, unreadable, truncated or over-large (> MAX_IMAGE_PIXELS) data;
    no Pillow exception escapes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImage(f"image data must be bytes, not {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise InvalidImage("empty image data (0 bytes)")
    try:
        # Header only: the limits are checked before any pixel is decoded, independently of
        # Pillow's process-global `Image.MAX_IMAGE_PIXELS` and warning filters.
        image = limits.open_header(bytes(data))
        limits.check_image(limits.header_of(image))
    except limits.ImageRefused as exc:
        raise InvalidImage(str(exc)) from None
    width, height = image.size

    fmt = image.format or "image"
    if fmt in ("JPEG", "MPO"):
        # libjpeg then decodes luma only (the colour would be dropped anyway) and, for a big
        # photo, at 1/2, 1/4 or 1/8 scale: a 12 MP photo costs its entropy decoding and little
        # more, instead of a full-resolution decode we would throw away.
        longer = max(width, height)
        scale = WORKING_SIZE / longer if longer >= 2 * WORKING_SIZE else 1.0
        try:
            image.draft("L", (max(1, int(width * scale)), max(1, int(height * scale))))
        except Exception as exc:  # draft is an optimisation only; decode at full size instead
            logger.debug("JPEG draft failed: %r", exc)
    try:
        image.load()  # Pillow decodes lazily: force it here so corrupt data fails inside the guard
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage(limits.bomb_message(data)) from None
    except Exception as exc:
        raise InvalidImage(
            f"cannot decode {size:,} bytes as a {fmt} image: the data is truncated or corrupt "
            f"({_decoder_reason(exc)})"
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
    except Exception:
        logger.warning("grayscale conversion failed on a %s image", image.mode, exc_info=True)
        raise InvalidImage(
            f"cannot convert a {image.mode} image of {image.size[0]}x{image.size[1]} to "
            "grayscale: its pixel values cannot be interpreted"
        ) from None
    if _is_mnist_form(gray):
        # Already what MNIST's own normalisation produces: nothing to redo.
        return gray.astype(np.float32) * (1 / 255) if gray.dtype == np.uint8 else gray
    try:
        # Past this point 8 bits are plenty (MNIST itself has 8): uint8 is OpenCV's fast path.
        levels = gray if gray.dtype == np.uint8 else cv2.convertScaleAbs(gray, alpha=255.0)
        ink = _extract_ink(levels)
        if ink is None:
            return np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        return _centre_in_field(_fit_box(ink))
    except Exception:  # a bug here must still answer the user with a 4xx, not a 500
        logger.exception("preprocessing failed on a %s image of %s", image.mode, image.size)
        raise InvalidImage(  # what is wrong with the image, never the internal exception
            f"cannot preprocess a {image.mode} image of {image.size[0]}x{image.size[1]}: "
            "no digit could be isolated from its pixel values"
        ) from None


def preprocess(data: bytes) -> np.ndarray:
    """Decode image bytes into a normalised (1, 28, 28) float32 model input; raises InvalidImage."""
    return normalize(to_mnist(decode_image(data)))[np.newaxis]


# --- decoding helpers -----------------------------------------------------------------------


def _decoder_reason(exc: Exception) -> str:
    """The decoder's own words (Pillow raises OSError/SyntaxError/EOFError about the data);
    anything else is an internal exception a hostile file provoked: say so without it."""
    if not isinstance(exc, (OSError, SyntaxError, EOFError)):
        return "its structure is invalid"
    text = str(exc).strip() or "unreadable data"
    return text if len(text) <= 120 else text[:117] + "..."


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, as the phone that took the photo intended."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception as exc:  # broken EXIF must not reject an otherwise good image
        logger.debug("unreadable EXIF ignored: %r", exc)
        return image
    if orientation in (None, 1):
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:
        logger.debug("EXIF transpose failed, using stored orientation: %r", exc)
        return image


# --- grayscale conversion ---------------------------------------------------------------------

def _to_gray(image: Image.Image) -> np.ndarray:
    """Grayscale pixels, transparency composited, large inputs area-reduced.

    uint8 (0-255) for the 8-bit images nearly everyone sends, so that they pass through without
    a rounding step; float32 in [0, 1] when compositing or a high bit depth made finer values.
    """
    mode = image.mode
    if mode in ("P", "PA") or (mode in ("1", "L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")  # the palette may carry per-entry alpha (tRNS)
    elif mode in ("La", "RGBa"):
        image = image.convert("LA" if mode == "La" else "RGBA")  # un-premultiply
    elif mode == "1":
        image = image.convert("L")
    elif mode == "LAB":
        image = image.getchannel("L")  # lightness is already a grayscale channel
    elif mode.startswith("I;16"):
        image = image.convert("I")  # the same values as int32, which numpy reads natively
    elif mode not in ("L", "RGB", "RGBA", "LA", "I", "F"):
        image = image.convert("RGB")  # CMYK, YCbCr, HSV, RGBX, ...: Pillow's colour conversion

    pixels = np.asarray(image)
    mode = image.mode
    if mode in ("I", "F"):
        return _stretch_range(pixels.astype(np.float32))
    if mode == "L":
        return _reduce(pixels)
    if mode == "RGB":
        return _reduce(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY))
    if mode == "RGBA":
        gray, alpha = cv2.cvtColor(pixels, cv2.COLOR_RGBA2GRAY), pixels[..., 3]
    else:  # LA
        gray, alpha = cv2.split(pixels)
    return _composite(_reduce(gray), _reduce(np.ascontiguousarray(alpha)))


def _reduce(pixels: np.ndarray) -> np.ndarray:
    """Area-average a large image by an integer factor so its longer side is < 2*WORKING_SIZE."""
    factor = max(pixels.shape) // WORKING_SIZE
    if factor < 2:
        return pixels
    h, w = pixels.shape
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _stretch_range(values: np.ndarray) -> np.ndarray:
    """16-bit/32-bit/float pixels -> [0, 1] by their actual range (not by clipping at 255)."""
    # float64: float32 extremes (+-3.4e38) overflow to inf in their range, and the NaNs that
    # follow would leave no ink to find.
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    stretched = cv2.normalize(_reduce(values), None, 0.0, 1.0, cv2.NORM_MINMAX)  # flat -> zeros
    return stretched.astype(np.float32)


def _composite(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten transparency onto the background colour the picture implies.

    A drawing of ink on a transparent sheet stores the ink as its only opaque pixels; whatever
    colour its transparent pixels happen to hold (often black) is meaningless. So when opaque
    pixels cover less than half the image they are the ink, and the background is the opposite
    of their brightness (black ink -> white paper, white ink -> black). When they cover most of
    it they are the paper itself, and transparent margins take the paper's (median) colour.
    """
    if cv2.minMaxLoc(alpha)[0] >= 255:
        return gray
    coverage = cv2.mean(alpha)[0] / 255
    if coverage == 0.0:
        return np.zeros(gray.shape, dtype=np.float32)
    gray_f = gray.astype(np.float32) * (1 / 255)
    weight = alpha.astype(np.float32) * (1 / 255)
    if coverage < 0.5:
        ink_brightness = float(gray_f.ravel() @ weight.ravel()) / float(weight.sum())
        background = 1.0 if ink_brightness < 0.5 else 0.0
    else:
        opaque = cv2.compare(alpha, 127, cv2.CMP_GT)  # alpha >= 0.5
        background = _median(_histogram(gray, opaque)) / 255
    return gray_f * weight + background * (1.0 - weight)


# --- order statistics from histograms ---------------------------------------------------------


def _histogram(levels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Counts of the 256 grey levels of uint8 pixels (where `mask` is non-zero).

    calcHist is the faster per pixel; np.bincount has the lower fixed cost, which is what
    counts below about 64x64 pixels.
    """
    if mask is None and levels.size < _SMALL_PIXELS:
        return np.bincount(levels.ravel(), minlength=256)
    return cv2.calcHist([levels], [0], mask, [256], [0, 256]).ravel()


def _kth(cumulative: np.ndarray, k: float) -> int:
    """The level holding the k-th smallest pixel (0-based) -- np.partition(pixels, k)[k] -- from
    a histogram's cumulative counts."""
    return int(cumulative.searchsorted(k, side="right"))


def _border_histogram(levels: np.ndarray) -> np.ndarray:
    """Histogram of the outermost ring of pixels (about 3 % of the size, at least one pixel)."""
    h, w = levels.shape
    k = max(1, min(h, w) // 32)
    strips = (levels[:k], levels[-k:], levels[k:-k, :k], levels[k:-k, -k:])
    return np.bincount(np.concatenate([strip.ravel() for strip in strips]), minlength=256)


def _median(hist: np.ndarray) -> int:
    """The (upper) median level of a histogram."""
    cumulative = hist.cumsum()
    return _kth(cumulative, cumulative[-1] // 2)


# --- ink extraction ---------------------------------------------------------------------------


def _centre_of_mass(pixels: np.ndarray) -> tuple[float, float, float]:
    """(mass, row, column) of the ink's centre of mass in pixel-index coordinates."""
    moments = cv2.moments(pixels)
    mass = moments["m00"]
    if mass <= 0:
        return 0.0, 0.0, 0.0
    return mass, moments["m01"] / mass, moments["m10"] / mass


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
    inked = gray if gray.dtype == np.uint8 else cv2.compare(gray, 0.0, cv2.CMP_GT)
    _, _, width, height = cv2.boundingRect(inked)
    if max(width, height) != DIGIT_BOX:
        return False
    _, cy, cx = _centre_of_mass(gray)
    return abs(cy - CENTRE) <= 0.5 and abs(cx - CENTRE) <= 0.5


def _ink_is_dark(hist: np.ndarray, border: np.ndarray) -> bool:
    """Is this dark ink on light paper (how people write), rather than MNIST's light on dark?

    The border is paper. Ink is whatever departs from the paper level by more than the paper's
    own variation (grain, JPEG noise, a lighting gradient: 3 robust deviations of the border);
    the side with more such departure mass is the ink's. Comparing mass rather than percentiles
    keeps this right when the digit covers well under 1 % of a large canvas.
    """
    paper = _median(border)
    deviation = _INDEX - paper
    spread = 3.0 * 1.4826 * _median(np.bincount(np.abs(deviation), border, 256))
    cumulative = hist.cumsum()
    n = cumulative[-1]
    low, high = cumulative.searchsorted((int(0.001 * (n - 1)), int(0.999 * (n - 1))), "right")
    if spread > _MIXED_BORDER * (high - low):
        # The border is not one level: a crop so tight that ink runs along it (a '1' cropped to
        # its stroke). No paper to compare with, so assume how people write: dark ink.
        return True
    # Mass darker than paper - spread, minus mass lighter than paper + spread, in one sum.
    return bool(hist @ (np.minimum(np.maximum(deviation, -spread), spread) - deviation) > 0)


def _noise_sigma(levels: np.ndarray, inked: np.ndarray) -> float:
    """Pixel noise (paper grain, JPEG) in grey levels, from horizontal neighbours on paper.

    Differencing cancels the smooth parts of the picture -- lighting, and the anti-aliased
    fringe around strokes, which a tight crop has more of than paper -- and keeps the noise:
    for Gaussian noise, median|a - b| = 0.6745 * sqrt(2) * sigma. About 64 rows are plenty.
    """
    if levels.shape[1] < 2:
        return 0.0
    step = max(2, levels.shape[0] // 64)
    rows, mask = levels[::step], inked[::step]
    steps = cv2.absdiff(rows[:, 1:], rows[:, :-1])
    # Pairs that touch ink go to the top bin, which is then left out of the count.
    steps = cv2.bitwise_or(cv2.bitwise_or(steps, mask[:, 1:]), mask[:, :-1])
    hist = _histogram(steps)[:255]
    if not hist.any():
        return 0.0
    return _median(hist) * (1.4826 / np.sqrt(2.0))


def _background_field(levels: np.ndarray, inked: np.ndarray, overall: int) -> np.ndarray | None:
    """The (possibly uneven) background of a bright-ink-on-dark image, or None for one level.

    A coarse grid of tiles, each the mean of its paper pixels (those outside the rough ink mask
    `inked`, 255 on ink), then a 3x3 median over the grid that ignores odd tiles out while a
    lighting gradient passes unchanged (the median of a ramp is its middle), then bilinear
    interpolation back to full size. A tile that is mostly ink has no say and takes its
    neighbours' level (or `overall`, the paper's median, without any). This follows shadows,
    vignetting and lighting gradients of phone photos. Small images (MNIST's own 28x28 among
    them) and evenly lit ones get one level: None.
    """
    h, w = levels.shape
    rows = min(_TILE_GRID_MAX, h // _TILE_MIN_PX)
    cols = min(_TILE_GRID_MAX, w // _TILE_MIN_PX)
    if rows < 2 or cols < 2:
        return None
    # Tile statistics need no full resolution: area-reduce by an integer factor (exact and fast
    # in OpenCV) that leaves each tile at least 8 px, over whole tiles only.
    factor = max(1, min(h // rows, w // cols) // 8)
    tile_h, tile_w = h // rows // factor, w // cols // factor
    cut = (slice(0, rows * tile_h * factor), slice(0, cols * tile_w * factor))
    reduced = (cols * tile_w, rows * tile_h)
    mean = cv2.resize(levels[cut], reduced, interpolation=cv2.INTER_AREA)
    # A reduced pixel with any ink in it is ink; its neighbours too, so that stroke fringes
    # (anti-aliasing, JPEG ringing: below the rough mask's cut, but not paper) are left out.
    inked = cv2.dilate(cv2.resize(inked[cut], reduced, interpolation=cv2.INTER_AREA), _NEIGHBOURS)
    paper = cv2.compare(inked, 0, cv2.CMP_EQ)
    on_paper = cv2.bitwise_and(mean, paper)
    share = cv2.resize(paper.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    sums = cv2.resize(on_paper.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    valid = (share >= _TILE_MIN_PAPER * 255).astype(np.float32)
    grid = sums * (255 / np.maximum(share, 1.0)) * valid
    if not valid.all():
        weight = cv2.blur(valid, (3, 3))
        filled = cv2.blur(grid, (3, 3)) / np.maximum(weight, 1e-6)
        grid = np.where(valid > 0, grid, np.where(weight > 0, filled, overall))
    grid = cv2.medianBlur(np.rint(grid).astype(np.uint8), 3)
    low, high, _, _ = cv2.minMaxLoc(grid)
    if high - low <= _FLAT_LEVELS:
        return None  # evenly lit: one level does as well, for less work
    # Tile centres sit at (i + 0.5) * tile; INTER_LINEAR maps pixel centres the same way.
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)


def _extract_ink(levels: np.ndarray) -> np.ndarray | None:
    """White-on-black ink (uint8, stroke cores at 255) with the background removed and the
    contrast stretched, or None when the picture holds no ink. All levels are 0-255."""
    hist, border = _histogram(levels), _border_histogram(levels)
    if _ink_is_dark(hist, border):
        levels = cv2.bitwise_not(levels)
        hist, border = hist[::-1], border[::-1]
    cumulative = hist.cumsum()
    n = cumulative[-1]

    # Rough ink mask: halfway between the paper (border median) and the ink's extreme (99.9th
    # percentile, so that a digit covering a small part of a big canvas still counts). It only
    # keeps ink out of the background and noise estimates: a tight crop can be half ink.
    paper_level = _median(border)
    top = _kth(cumulative, int(0.999 * (n - 1)))
    cut = int(paper_level + 0.5 * (top - paper_level))  # a level above the cut is ink
    inked = cv2.threshold(levels, cut, 255, cv2.THRESH_BINARY)[1]
    inked_share = 1.0 - cumulative[cut] / n
    sigma = _noise_sigma(levels, inked)

    # The residual (ink above the background) as a histogram over 0-255: the levels' own
    # histogram shifted by a single background level, else that of levels - field, from every
    # other row (its order statistics need no more; negative residuals saturate to 0).
    background = _kth(cumulative, cumulative[cut] // 2)  # the paper's median
    field = _background_field(levels, inked, background)
    if field is None:
        residual_hist = hist[background:]
    else:
        residual_hist = 2 * _histogram(cv2.subtract(levels[::2], field[::2]))

    # The paper's residual median is 0 (the background is the paper's level), so the noise
    # floor is a few noise deviations above 0, and every pixel above it is a candidate.
    floor = _NOISE_SIGMAS * sigma
    first = int(floor + _MIN_THRESHOLD * (255 - floor)) + 1
    candidates = residual_hist[first:].cumsum()
    count = candidates[-1] if candidates.size else 0.0
    if count < _MIN_INK_PIXELS:
        return None
    ink_level = first + _kth(candidates, int(_INK_PERCENTILE / 100 * (count - 1)))
    if ink_level < _MIN_CONTRAST * 255:
        return None
    if ink_level < _MIN_CONTRAST_SIGMAS * sigma and inked_share < _BLANK_MAX_INKED:
        # A photo of blank paper: its "ink" is the top of its own noise distribution. (When a
        # fifth of the picture is far from the paper level it is not blank: a '1' cropped to
        # its stroke has only anti-aliased fringe for paper, which reads as noise.)
        return None
    # Soft threshold: a linear ramp from the noise floor to the ink level, so anti-aliased
    # stroke edges keep their grey levels while paper texture and JPEG ringing go to zero.
    # A noise-free background (a digital drawing, a digit like MNIST's) needs no threshold.
    minimum = _MIN_THRESHOLD * ink_level if floor > 0 else 0.0
    low = min(max(floor, minimum), _MAX_THRESHOLD * ink_level)
    scale = 255.0 / (ink_level - low)
    # (levels - background - low) * scale, saturated to 0-255: one pass.
    if field is None:
        return cv2.addWeighted(levels, scale, levels, 0.0, -(background + low) * scale)
    return cv2.addWeighted(levels, scale, field, -scale, -low * scale)


def _extent(strong: np.ndarray) -> tuple[int, int]:
    """[start, stop) of the clearly inked pixels along one axis, from their projection profile.

    Separate runs of ink at either end holding under `_SPECK_MASS` of the total (a dot of dust,
    a pen tick beside the digit) are dropped, and the outermost `_MASS_TRIM` of mass is ignored.
    """
    inked = strong.nonzero()[0]
    low, high = int(inked[0]), int(inked[-1]) + 1
    if high - low > inked.size:  # several runs of ink: drop light ones at either end
        gaps = (inked[1:] - inked[:-1] > 1).nonzero()[0]
        starts = np.concatenate(([low], inked[gaps + 1]))
        stops = np.concatenate((inked[gaps] + 1, [high]))
        cumulative = np.concatenate(([0], strong.cumsum()))
        mass = cumulative[stops] - cumulative[starts]
        heavy = (mass >= _SPECK_MASS * cumulative[-1]).nonzero()[0]
        first, last = (heavy[0], heavy[-1]) if heavy.size else (-1, -1)
        low, high = int(starts[first]), int(stops[last])
    kept = strong[low:high].cumsum()
    start, stop = kept.searchsorted((_MASS_TRIM * kept[-1], (1.0 - _MASS_TRIM) * kept[-1]))
    return low + int(start), min(max(low + 1 + int(stop), low + int(start) + 1), high)


def _grow(profile: np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """Widen [start, stop) over contiguous ink in `profile` (anti-aliased fringes that the trim
    and the strong-ink test cut off), but only a little, so that a speck a gap away is not
    pulled back in."""
    grow = max(1, round(_FRINGE * (stop - start)))
    gaps = (profile <= 0).nonzero()[0]
    before, after = gaps.searchsorted((start, stop))
    start = max(start - grow, int(gaps[before - 1]) + 1 if before else 0)
    stop = min(stop + grow, int(gaps[after]) if after < gaps.size else profile.size)
    return start, stop


def _stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: ink area over centre-line length, the length estimated as
    the count of ink/paper transitions over 2.55 (2 sides x 4/pi for random orientations)."""
    mask = cv2.threshold(ink, 127, 255, cv2.THRESH_BINARY)[1]
    transitions = 0
    if mask.shape[0] > 1:
        transitions += cv2.countNonZero(cv2.absdiff(mask[1:], mask[:-1]))
    if mask.shape[1] > 1:
        transitions += cv2.countNonZero(cv2.absdiff(mask[:, 1:], mask[:, :-1]))
    return 2.55 * cv2.countNonZero(mask) / max(transitions, 1)


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
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        peak = cv2.minMaxLoc(crop)[1]
        if peak > 0:  # reducing a hairline spreads its ink thinner: restore full intensity
            crop = cv2.convertScaleAbs(crop, alpha=255.0 / peak)
        longer = max(crop.shape)
    radius = round((_TARGET_STROKE - width_in_box) * longer / DIGIT_BOX / 2)
    if radius <= 0:
        return crop
    # Grey-level dilation by a (2r+1)^2 square, on a canvas grown by r per side.
    grown = cv2.copyMakeBorder(crop, radius, radius, radius, radius, cv2.BORDER_CONSTANT, value=0)
    return cv2.dilate(grown, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1,) * 2))


def _fit_box(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink and scale, aspect preserved, so the longer side is DIGIT_BOX pixels.

    Takes uint8 ink, returns float32 in [0, 1].
    """
    # Everything below happens inside the ink's bounding box (paper is exactly 0 after the
    # soft threshold, so there is nothing outside it to measure).
    x, y, w, h = cv2.boundingRect(ink)
    ink = ink[y : y + h, x : x + w]
    # Strong ink: clearly inked, in a 3x3 neighbourhood that is too. A stroke, even a 1 px
    # anti-aliased one, keeps a 3x3 mean near a third of its value or more; an isolated speck of
    # paper grain that survived the threshold does not.
    local = cv2.blur(ink, (3, 3), borderType=cv2.BORDER_CONSTANT)
    strong = cv2.threshold(ink, _STRONG_INK * 255 - 1, 0, cv2.THRESH_TOZERO)[1]
    supported = cv2.threshold(local, _STRONG_INK * 0.8 * 255 - 1, 255, cv2.THRESH_BINARY)[1]
    strong = cv2.bitwise_and(strong, supported)
    if not cv2.countNonZero(strong):  # only faint ink: measure that instead
        strong = ink
    top, bottom = _extent(_profile(strong, 1))
    left, right = _extent(_profile(strong, 0))
    # The fringes belong to the digit only where they touch it: measure them inside its band,
    # so that paper grain elsewhere on the same rows or columns does not count.
    top, bottom = _grow(_profile(ink[:, left:right], 1), top, bottom)
    left, right = _grow(_profile(ink[top:bottom], 0), left, right)
    crop = _normalise_stroke(ink[top:bottom, left:right]).astype(np.float32) * (1 / 255)
    h, w = crop.shape
    longer = max(h, w)
    if longer == DIGIT_BOX:
        return crop
    size = (max(1, round(w * DIGIT_BOX / longer)), max(1, round(h * DIGIT_BOX / longer)))
    # INTER_AREA is exact area averaging when shrinking (anti-aliased); bilinear when enlarging.
    interpolation = cv2.INTER_AREA if longer > DIGIT_BOX else cv2.INTER_LINEAR
    box = cv2.resize(crop, size, interpolation=interpolation)
    return np.minimum(box, 1.0, out=box)  # float rounding may pass 1 by an ulp


def _profile(pixels: np.ndarray, axis: int) -> np.ndarray:
    """Sums of uint8 pixels along `axis` (0: one per column, 1: one per row)."""
    return cv2.reduce(pixels, axis, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()


def _centre_in_field(box: np.ndarray) -> np.ndarray:
    """Paste the box into 28x28 with its centre of mass at (14, 14), clipped to the canvas."""
    h, w = box.shape
    field = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    mass, cy, cx = _centre_of_mass(box)
    if mass <= 0.0:
        return field
    top = min(max(round(CENTRE - cy), 0), IMAGE_SIZE - h)
    left = min(max(round(CENTRE - cx), 0), IMAGE_SIZE - w)
    field[top : top + h, left : left + w] = box
    return field
