"""A stroke model of handwritten digits: pen trajectories drawn the way people write them.

The shapes, with the variants people use for each digit, are in `samples.digit_shapes`
(`VARIANTS`, re-exported here). A `Writer` is one seeded hand: slant, width ratio, pen width and
pressure, how shakily and how carelessly they write, and which variant of each digit they prefer.
`Writer.draw(label, rng)` jitters the control points, writes the strokes with a variable-width
pen, bends the result elastically and returns the ink mask plus its style (the variant's name).
Writers are identified by an integer id, so the real-world halves and the training data use
disjoint sets of hands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from samples import distort
from samples.digit_shapes import VARIANTS, Point, Stroke

__all__ = ["CANVAS_H", "VARIANTS", "Point", "Stroke", "Writer"]

CANVAS_H = 100  # digit height in px of the drawn mask
SUPERSAMPLE = 2  # drawn at twice the size, box-filtered down: anti-aliased edges
WRITER_SALT = 0x5EED_D161  # separates writer seeds from every other seed of the project


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
