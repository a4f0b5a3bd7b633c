"""MNIST's geometry (LeCun et al.): the ink cropped to its bounding box (specks and stray ticks
left out, hairlines thickened to MNIST's stroke width), scaled so that its longer side is 20 px,
and pasted into 28x28 with its centre of mass at (14, 14). Also recognises a digit already in
that form, which `handler.preprocessing` passes through unchanged."""

from __future__ import annotations

import cv2
import numpy as np

from handler.normalization import IMAGE_SIZE

DIGIT_BOX = 20  # MNIST scales each digit so that its longer side is 20 px ...
CENTRE = IMAGE_SIZE / 2  # ... and puts its centre of mass at (14, 14) in pixel-index coordinates.

_STRONG_INK = 0.25  # the bounding box is measured on pixels at least this inked ...
_SPECK_MASS = 0.03  # ... drops detached end pieces lighter than 3 % of the ink (dust, ticks),
_MASS_TRIM = 0.002  # ... ignores the outermost 0.2 % of ink mass on each side ...
_FRINGE = 0.06  # ... then grows back over contiguous ink by up to 6 % of its extent (fringes)
_THIN_STROKE = 1.2  # strokes thinner than this in the 20 px box are thickened ...
_TARGET_STROKE = 2.0  # ... to this (MNIST: median 2.3 px, 25th percentile 2.0 px)


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float, float]:
    """(mass, row, column) of the ink's centre of mass in pixel-index coordinates."""
    moments = cv2.moments(pixels)
    mass = moments["m00"]
    if mass <= 0:
        return 0.0, 0.0, 0.0
    return mass, moments["m01"] / mass, moments["m10"] / mass


def is_mnist_form(gray: np.ndarray) -> bool:
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
    _, cy, cx = centre_of_mass(gray)
    return abs(cy - CENTRE) <= 0.5 and abs(cx - CENTRE) <= 0.5


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


def fit_box(ink: np.ndarray) -> np.ndarray:
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


def centre_in_field(box: np.ndarray) -> np.ndarray:
    """Paste the box into 28x28 with its centre of mass at (14, 14), clipped to the canvas."""
    h, w = box.shape
    field = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    mass, cy, cx = centre_of_mass(box)
    if mass <= 0.0:
        return field
    top = min(max(round(CENTRE - cy), 0), IMAGE_SIZE - h)
    left = min(max(round(CENTRE - cx), 0), IMAGE_SIZE - w)
    field[top : top + h, left : left + w] = box
    return field
