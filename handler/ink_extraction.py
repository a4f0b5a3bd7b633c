"""The ink of a digit, white on black, from a grayscale photo, scan or drawing (a step of
`handler.preprocessing`): polarity from the border (paper), an uneven background removed, the
noise floor estimated, and a soft threshold that stretches the stroke cores to full white.

All levels are 8-bit (0-255); order statistics come from histograms (`handler.histograms`).
"""

from __future__ import annotations

import cv2
import numpy as np

from handler.histograms import border_histogram, histogram, kth, median

# Values are fractions of the [0, 1] grey range unless noted.
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

_INDEX = np.arange(256)  # the grey levels of an 8-bit histogram


def _ink_is_dark(hist: np.ndarray, border: np.ndarray) -> bool:
    """Is this dark ink on light paper (how people write), rather than MNIST's light on dark?

    The border is paper. Ink is whatever departs from the paper level by more than the paper's
    own variation (grain, JPEG noise, a lighting gradient: 3 robust deviations of the border);
    the side with more such departure mass is the ink's. Comparing mass rather than percentiles
    keeps this right when the digit covers well under 1 % of a large canvas.
    """
    paper = median(border)
    deviation = _INDEX - paper
    spread = 3.0 * 1.4826 * median(np.bincount(np.abs(deviation), border, 256))
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
    hist = histogram(steps)[:255]
    if not hist.any():
        return 0.0
    return median(hist) * (1.4826 / np.sqrt(2.0))


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


def extract_ink(levels: np.ndarray) -> np.ndarray | None:
    """White-on-black ink (uint8, stroke cores at 255) with the background removed and the
    contrast stretched, or None when the picture holds no ink. All levels are 0-255."""
    hist, border = histogram(levels), border_histogram(levels)
    if _ink_is_dark(hist, border):
        levels = cv2.bitwise_not(levels)
        hist, border = hist[::-1], border[::-1]
    cumulative = hist.cumsum()
    n = cumulative[-1]

    # Rough ink mask: halfway between the paper (border median) and the ink's extreme (99.9th
    # percentile, so that a digit covering a small part of a big canvas still counts). It only
    # keeps ink out of the background and noise estimates: a tight crop can be half ink.
    paper_level = median(border)
    top = kth(cumulative, int(0.999 * (n - 1)))
    cut = int(paper_level + 0.5 * (top - paper_level))  # a level above the cut is ink
    inked = cv2.threshold(levels, cut, 255, cv2.THRESH_BINARY)[1]
    inked_share = 1.0 - cumulative[cut] / n
    sigma = _noise_sigma(levels, inked)

    # The residual (ink above the background) as a histogram over 0-255: the levels' own
    # histogram shifted by a single background level, else that of levels - field, from every
    # other row (its order statistics need no more; negative residuals saturate to 0).
    background = kth(cumulative, cumulative[cut] // 2)  # the paper's median
    field = _background_field(levels, inked, background)
    if field is None:
        residual_hist = hist[background:]
    else:
        residual_hist = 2 * histogram(cv2.subtract(levels[::2], field[::2]))

    # The paper's residual median is 0 (the background is the paper's level), so the noise
    # floor is a few noise deviations above 0, and every pixel above it is a candidate.
    floor = _NOISE_SIGMAS * sigma
    first = int(floor + _MIN_THRESHOLD * (255 - floor)) + 1
    candidates = residual_hist[first:].cumsum()
    count = candidates[-1] if candidates.size else 0.0
    if count < _MIN_INK_PIXELS:
        return None
    ink_level = first + kth(candidates, int(_INK_PERCENTILE / 100 * (count - 1)))
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
