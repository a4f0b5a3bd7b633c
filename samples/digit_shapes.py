"""The digit shapes of the stroke model: every variant people use, as control points.

Each digit has the variants people actually use (`VARIANTS`): European 1s with a flag (and a
base), 7s with a bar or a hook, open and closed 4s, 2s with a loop or a Z-like corner, flat-topped
3s, 5s in one or two strokes, 6s and 9s with a curved or straight stem, 8s in one stroke or as two
loops, open and closed 0s. A variant is a list of strokes; a stroke is a list of control points in
a unit box (x to the right, y downwards) through which a Catmull-Rom spline passes; a point given
twice is a corner. A builder takes the writer's per-digit proportions `s` (keys "a", "b", "c",
each in [0, 1]) and returns the strokes. `samples.strokes` draws them.
"""

from __future__ import annotations

import math

import numpy as np

Point = tuple[float, float]
Stroke = list[Point]


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
