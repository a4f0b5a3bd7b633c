"""A stroke model of handwritten digits: pen trajectories drawn the way people write them.

Each digit has the variants people actually use (`VARIANTS`): European 1s with a flag (and a
base), 7s with a bar or a hook, open and closed 4s, 2s with a loop or a Z-like corner, flat-topped
3s, 5s in one or two strokes, 6s and 9s with a curved or straight stem, 8s in one stroke or as two
loops, open and closed 0s. A variant is a list of strokes; a stroke is a list of control points in
a unit box (x to the right, y downwards) through which a Catmull-Rom spline passes; a point given
twice is a corner.

A `Writer` is one seeded hand: slant, width ratio, pen width and pressure, how shakily and how
carelessly they write, and which variant of each digit they prefer. `Writer.draw(label, rng)`
jitters the control points, writes the strokes with a variable-width pen, bends the result
elastically and returns the ink mask plus its style (the variant's name). Writers are identified
by an integer id, so the real-world halves and the training data use disjoint sets of hands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from samples import distort

Point = tuple[float, float]
Stroke = list[Point]

CANVAS_H = 100  # digit height in px of the drawn mask
SUPERSAMPLE = 2  # drawn at twice the size, box-filtered down: anti-aliased edges
WRITER_SALT = 0x5EED_D161  # separates writer seeds from every other seed of the project


def _c(x: float, y: float) -> list[Point]:
    """A corner: the spline stops and turns at a point given twice."""
    return [(x, y), (x, y)]


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float, sweep: float) -> Stroke:
    """Points on an ellipse from angle `start` over `sweep` degrees (negative = anticlockwise)."""
    steps = max(4, int(abs(sweep) / 30) + 1)
    angles = np.radians(start + np.linspace(0.0, sweep, steps))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


# Each builder takes the writer's shape parameters `s` (a dict of floats in [0, 1]) so that one
# writer's 4s share their proportions while two writers' 4s differ.
def _zero_closed(s):
    return [_ellipse(0.5, 0.5, 0.5, 0.5, -80, -360 - 40 * s["a"])]


def _zero_open(s):
    return [_ellipse(0.5, 0.5, 0.5, 0.5, -70, -325 - 20 * s["a"])]


def _one_stick(s):
    return [[(0.5 + 0.06 * s["a"], 0.0), (0.5, 1.0)]]


def _one_flag(s):
    length = 0.2 + 0.4 * s["a"]
    return [[(0.5 - 0.8 * length, 0.6 * length + 0.05 * s["b"]), *_c(0.5, 0.0), (0.5, 1.0)]]


def _one_flag_base(s):
    half = 0.2 + 0.15 * s["b"]
    return [*_one_flag(s), [(0.5 - half, 1.0), (0.5 + half, 1.0)]]


def _two_curve(s):
    return [[(0.05, 0.3), (0.3, 0.03), (0.65, 0.0), (0.92, 0.22), (0.85, 0.45),
             (0.5, 0.72), *_c(0.05, 1.0), (0.5, 0.98 - 0.04 * s["a"]), (1.0, 1.0)]]  # fmt: skip


def _two_loop(s):
    loop = 0.12 + 0.08 * s["a"]
    return [[(0.05, 0.3), (0.3, 0.02), (0.7, 0.02), (0.92, 0.25), (0.7, 0.55), (0.3, 0.82),
             (0.1, 1.0 - loop / 3), (0.05, 1.0 - loop), (0.18, 1.0 - loop - 0.03), (0.32, 0.9),
             (0.55, 1.0), (1.0, 0.96)]]  # fmt: skip


def _two_angular(s):
    return [[(0.05, 0.22), (0.45, 0.0), (0.88, 0.12), (0.82, 0.35), *_c(0.02, 1.0),
             (1.0, 1.0 - 0.05 * s["a"])]]  # fmt: skip


def _three_round(s):
    mid = 0.25 + 0.15 * s["a"]
    return [[(0.08, 0.15), (0.45, 0.0), (0.85, 0.12), (0.82, 0.33), *_c(mid, 0.47),
             (0.8, 0.6), (0.95, 0.82), (0.55, 1.0), (0.05, 0.88)]]  # fmt: skip


def _three_flat(s):
    return [[(0.05, 0.0), *_c(0.9, 0.0), *_c(0.35 + 0.1 * s["a"], 0.42), (0.85, 0.55),
             (0.95, 0.8), (0.55, 1.0), (0.05, 0.88)]]  # fmt: skip


def _four_closed(s):
    bar, stem = 0.6 + 0.12 * s["a"], 0.62 + 0.13 * s["b"]
    return [[(stem, 0.0), *_c(0.0, bar), (1.0, bar)], [(stem, 0.0), (stem, 1.0)]]


def _four_open(s):
    bar, stem = 0.55 + 0.15 * s["a"], 0.65 + 0.12 * s["b"]
    return [[(0.12, 0.0), *_c(0.02, bar), (1.0, bar - 0.03)],
            [(stem + 0.05, 0.05 + 0.2 * s["c"]), (stem, 1.0)]]  # fmt: skip


def _four_open_round(s):
    bar, stem = 0.55 + 0.15 * s["a"], 0.62 + 0.15 * s["b"]
    return [[(0.15, 0.0), (0.06, bar - 0.2), (0.2, bar + 0.02), (0.6, bar), (1.0, bar - 0.05)],
            [(stem + 0.05, 0.1 * s["c"]), (stem, 1.0)]]  # fmt: skip


def _five_two_strokes(s):
    neck = 0.38 + 0.12 * s["a"]
    return [[(0.2, 0.0), *_c(0.12, neck), (0.45, neck - 0.08), (0.85, neck + 0.08),
             (0.92, 0.78), (0.55, 1.0), (0.05, 0.9)],
            [(0.2, 0.02), (0.95, 0.0)]]  # fmt: skip


def _five_one_stroke(s):
    neck = 0.38 + 0.12 * s["a"]
    return [[(0.95, 0.0), *_c(0.2, 0.02), *_c(0.12, neck), (0.45, neck - 0.08),
             (0.85, neck + 0.08), (0.92, 0.78), (0.55, 1.0), (0.05, 0.9)]]  # fmt: skip


def _six_curved(s):
    loop = 0.45 + 0.15 * s["a"]
    return [[(0.85, 0.05), (0.45, 0.08), (0.12, 0.45), (0.12, 0.8), (0.5, 1.0), (0.88, 0.8),
             (0.8, loop + 0.05), (0.45, loop), (0.12, loop + 0.2)]]  # fmt: skip


def _six_straight(s):
    loop = 0.5 + 0.12 * s["a"]
    return [[(0.8, 0.0), (0.25, 0.55), (0.15, 0.85), (0.5, 1.0), (0.85, 0.82),
             (0.78, loop + 0.05), (0.42, loop), (0.2, loop + 0.18)]]  # fmt: skip


def _seven_plain(s):
    return [[(0.0, 0.03 * s["a"]), *_c(1.0, 0.0), (0.3 + 0.15 * s["b"], 1.0)]]


def _seven_bar(s):
    bar = 0.45 + 0.12 * s["c"]
    return [*_seven_plain(s), [(0.3, bar + 0.03), (0.95, bar - 0.02)]]


def _seven_hook(s):
    return [
        [(0.0, 0.15 + 0.1 * s["a"]), *_c(0.04, 0.0), *_c(1.0, 0.02), (0.35 + 0.15 * s["b"], 1.0)]
    ]


def _seven_curved(s):
    return [[(0.0, 0.0), *_c(1.0, 0.0), (0.72, 0.35), (0.52, 0.7), (0.45 + 0.1 * s["b"], 1.0)]]


def _eight_one_stroke(s):
    waist = 0.42 + 0.1 * s["a"]
    return [[(0.85, 0.12), (0.5, 0.0), (0.15, 0.16), (0.3, waist - 0.08), (0.72, waist + 0.12),
             (0.92, 0.8), (0.5, 1.0), (0.08, 0.8), (0.3, waist + 0.1), (0.72, waist - 0.1),
             (0.88, 0.15)]]  # fmt: skip


def _eight_two_loops(s):
    waist = 0.42 + 0.1 * s["a"]
    top = _ellipse(0.5, waist / 2, 0.32, waist / 2, 90, -380)
    bottom = _ellipse(0.5, (1 + waist) / 2, 0.45, (1 - waist) / 2, -90, 380)
    return [top, bottom]


def _nine_loop(s, size: float) -> Stroke:
    return [(0.88, 0.22), (0.55, 0.0), (0.12, 0.12), (0.1, size - 0.08), (0.5, size),
            (0.86, size - 0.15)]  # fmt: skip


def _nine_straight(s):
    size = 0.42 + 0.12 * s["a"]
    return [[*_nine_loop(s, size), *_c(0.9, 0.08), (0.85, 1.0)]]


def _nine_curved(s):
    size = 0.42 + 0.12 * s["a"]
    return [[*_nine_loop(s, size), *_c(0.9, 0.08), (0.85, 0.65), (0.55, 1.0), (0.2, 0.9)]]


def _nine_stick(s):
    size = 0.4 + 0.12 * s["a"]
    loop = _ellipse(0.45, size / 2 + 0.02, 0.43, size / 2, 0, -380)
    return [loop, [(0.9, 0.0), (0.88, 1.0)]]


# (builder, prior share among writers). The priors follow common usage: many Europeans write
# 1 with a flag and 7 with a bar; open 4s are about as common as closed ones.
VARIANTS: dict[int, dict[str, tuple]] = {
    0: {"0-closed": (_zero_closed, 0.75), "0-open": (_zero_open, 0.25)},
    1: {"1-stick": (_one_stick, 0.4), "1-flag": (_one_flag, 0.45),
        "1-flag-base": (_one_flag_base, 0.15)},
    2: {"2-curve": (_two_curve, 0.6), "2-loop": (_two_loop, 0.25),
        "2-angular": (_two_angular, 0.15)},
    3: {"3-round": (_three_round, 0.8), "3-flat-top": (_three_flat, 0.2)},
    4: {"4-closed": (_four_closed, 0.45), "4-open": (_four_open, 0.35),
        "4-open-round": (_four_open_round, 0.2)},
    5: {"5-two-strokes": (_five_two_strokes, 0.6), "5-one-stroke": (_five_one_stroke, 0.4)},
    6: {"6-curved": (_six_curved, 0.6), "6-straight": (_six_straight, 0.4)},
    7: {"7-plain": (_seven_plain, 0.5), "7-bar": (_seven_bar, 0.3), "7-hook": (_seven_hook, 0.1),
        "7-curved": (_seven_curved, 0.1)},
    8: {"8-one-stroke": (_eight_one_stroke, 0.7), "8-two-loops": (_eight_two_loops, 0.3)},
    9: {"9-straight": (_nine_straight, 0.5), "9-curved": (_nine_curved, 0.3),
        "9-stick": (_nine_stick, 0.2)},
}  # fmt: skip


@dataclass(frozen=True)
class Writer:
    """One hand: how it slants, spaces, presses and wobbles, and which variants it prefers."""

    writer_id: int
    slant_deg: float  # > 0 leans right
    width_ratio: float  # digit width / height
    pen: float  # pen width as a fraction of the digit height
    pressure: float  # relative pen-width variation along a stroke
    jitter: float  # control-point scatter per digit, fraction of the height
    tremor: float  # fine wobble along the path, fraction of the height
    elastic: float  # smooth bend of the whole digit, fraction of the height
    preferred: dict[int, str]  # the variant this writer uses for each digit
    loyalty: float  # probability of using the preferred variant
    shape: dict[int, dict[str, float]]  # per-digit proportions in [0, 1]

    @classmethod
    def from_id(cls, writer_id: int) -> Writer:
        """The writer with this id: the same id always gives the same hand."""
        rng = np.random.default_rng([WRITER_SALT, writer_id])
        preferred = {}
        for digit, options in VARIANTS.items():
            names = list(options)
            priors = np.array([options[n][1] for n in names], dtype=float)
            preferred[digit] = names[int(rng.choice(len(names), p=priors / priors.sum()))]
        return cls(
            writer_id=writer_id,
            slant_deg=float(np.clip(rng.normal(10.0, 13.0), -25.0, 42.0)),
            width_ratio=float(rng.uniform(0.42, 0.95)),
            pen=float(np.exp(rng.uniform(np.log(0.035), np.log(0.18)))),
            pressure=float(rng.uniform(0.0, 0.4)),
            jitter=float(rng.uniform(0.015, 0.06)),
            tremor=float(rng.uniform(0.0, 0.008)),
            elastic=float(rng.uniform(0.0, 0.045)),
            preferred=preferred,
            loyalty=float(rng.uniform(0.7, 1.0)),
            shape={d: {k: float(rng.random()) for k in "abc"} for d in VARIANTS},
        )

    def variant(self, label: int, rng: np.random.Generator) -> str:
        """The variant this writer uses for `label` this time (usually the preferred one)."""
        if rng.random() < self.loyalty:
            return self.preferred[label]
        return str(rng.choice(list(VARIANTS[label])))

    def draw(
        self, label: int, rng: np.random.Generator, height: int = CANVAS_H, fast: bool = False
    ) -> tuple[np.ndarray, str]:
        """One handwritten `label`: `(ink mask about `height` px tall, variant name)`.

        `fast` draws with an even pen and skips the final rotation and elastic bend: about four
        times cheaper, for training data whose augmentation rotates, bends and re-weights anyway.
        """
        if label not in VARIANTS:
            raise ValueError(f"no stroke model for {label!r}; digits are 0-9")
        name = self.variant(label, rng)
        builder = VARIANTS[label][name][0]
        # Per-digit proportions move a little around the writer's own.
        shape = {
            k: float(np.clip(v + rng.normal(0, 0.15), 0, 1)) for k, v in self.shape[label].items()
        }
        strokes = builder(shape)
        slant = self.slant_deg + rng.normal(0.0, 3.0)
        width = self.width_ratio * rng.uniform(0.9, 1.1)
        if label == 1:
            width *= 0.6  # a 1's flag and base are short compared with other digits' width
        mask = _render(
            [_jitter(stroke, self.jitter, rng) for stroke in strokes],
            slant_deg=slant,
            width_ratio=width,
            pen=self.pen * rng.uniform(0.85, 1.15),
            pressure=0.0 if fast else self.pressure,
            tremor=self.tremor,
            rng=rng,
            height=height,
        )
        if not fast:
            mask = distort.warp(mask, rng, rotate_deg=rng.normal(0.0, 2.5), elastic=self.elastic)
        return mask, name


def _jitter(stroke: Stroke, sigma: float, rng: np.random.Generator) -> Stroke:
    """Control points scattered by `sigma`; a repeated (corner) point moves as one."""
    out: Stroke = []
    for i, point in enumerate(stroke):
        if i > 0 and point == stroke[i - 1]:
            out.append(out[-1])
            continue
        dx, dy = rng.normal(0.0, sigma, size=2)
        out.append((point[0] + dx, point[1] + dy))
    return out


def _catmull_rom(points: Stroke, samples_per_segment: int = 10) -> np.ndarray:
    """A uniform Catmull-Rom spline through `points`, as an `(n, 2)` array."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 2:
        t = np.linspace(0.0, 1.0, samples_per_segment + 1)[:, None]
        return pts[0] * (1 - t) + pts[1] * t
    padded = np.vstack([pts[0], pts, pts[-1]])
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[:, None]
    pieces = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1], padded[i], padded[i + 1], padded[i + 2]
        pieces.append(
            0.5
            * (
                2 * p1
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    pieces.append(pts[-1][None])
    return np.vstack(pieces)


def _render(
    strokes: list[Stroke],
    *,
    slant_deg: float,
    width_ratio: float,
    pen: float,
    pressure: float,
    tremor: float,
    rng: np.random.Generator,
    height: int = CANVAS_H,
) -> np.ndarray:
    """Write `strokes` (unit-box control points) with a round, pressure-varying pen."""
    paths = []
    for stroke in strokes:
        path = _catmull_rom(stroke)
        if tremor > 0 and len(path) > 3:
            wobble = rng.normal(0.0, tremor, size=path.shape)
            kernel = np.ones(5) / 5  # smooth the wobble so it bends the line, not frays it
            wobble = np.column_stack([np.convolve(wobble[:, k], kernel, "same") for k in (0, 1)])
            path = path + wobble * 2.2
        x = path[:, 0] * width_ratio + math.tan(math.radians(slant_deg)) * (1.0 - path[:, 1])
        paths.append(np.column_stack([x, path[:, 1]]))
    everything = np.vstack(paths)
    lo = everything.min(axis=0)
    span_y = max(float(np.ptp(everything[:, 1])), 1e-6)
    scale = height * SUPERSAMPLE / span_y
    pen_px = max(1.0, pen * height * SUPERSAMPLE)
    margin = pen_px * 1.5 + 2
    width_px = int(np.ptp(everything[:, 0]) * scale + 2 * margin) + 1
    height_px = int(height * SUPERSAMPLE + 2 * margin) + 1
    canvas = Image.new("L", (width_px, height_px), 0)
    draw = ImageDraw.Draw(canvas)
    for path in paths:
        xy = (path - lo) * scale + margin
        if pressure == 0:  # an even pen: one polyline with round joins, round caps
            r = pen_px / 2
            draw.line([tuple(p) for p in xy], fill=255, width=max(1, round(pen_px)), joint="curve")
            for x, y in (xy[0], xy[-1]):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
            continue
        # Pressure: a slow random swell along the stroke, lighter at the ends.
        phase = rng.uniform(0, 2 * np.pi)
        t = np.linspace(0.0, 1.0, len(xy))
        widths = (
            pen_px
            * (1.0 + pressure * np.sin(2 * np.pi * t + phase))
            * (1.0 - 0.25 * pressure * (np.abs(2 * t - 1) ** 4))
        )
        for i in range(len(xy)):
            r = widths[i] / 2
            draw.ellipse((xy[i, 0] - r, xy[i, 1] - r, xy[i, 0] + r, xy[i, 1] + r), fill=255)
            if i:
                w = int(round((widths[i] + widths[i - 1]) / 2))
                draw.line([tuple(xy[i - 1]), tuple(xy[i])], fill=255, width=max(1, w))
    small = canvas.resize(
        (max(1, width_px // SUPERSAMPLE), max(1, height_px // SUPERSAMPLE)), Image.Resampling.BOX
    )
    return np.asarray(small, dtype=np.float32) / 255.0
