"""Handwriting fonts shipped in `samples/fonts/`, and digits rendered from them like handwriting.

Each font is one writer's hand (see samples/README.md for where each comes from and its
licence). The fonts are split between the real-world set's halves by writer: a font's digits
appear only in its `half`, so the test half is scored on hands that nothing was tuned on.

`render_font_digit(font, label, rng)` draws the glyph large, then varies it the way one writer's
digits vary: slant, rotation, width/height ratio, stroke width (dilate/erode) and an elastic
bend. It returns the ink mask and the drawn parameters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from samples import distort

FONT_DIR = Path(__file__).resolve().parent / "fonts"
GLYPH_PX = 120  # font size the glyphs are drawn at; digits come out 80-120 px tall


@dataclass(frozen=True)
class Font:
    """One shipped handwriting font: a name for reports, its file and Debian package."""

    name: str
    file: str
    package: str
    licence: str
    half: str  # "val" or "test": the real-world set's half whose digits it writes

    @property
    def path(self) -> Path:
        """The font file inside the repository."""
        return FONT_DIR / self.file


# Halves mix print-like and script hands, and split the six Because-We-Had-To writers 3/3.
FONTS: tuple[Font, ...] = (
    Font("bwht-build", "BecauseWeBuild-Regular.otf", "fonts-bwht", "OFL-1.1", "val"),
    Font("bwht-create", "BecauseWeCreate-Regular.otf", "fonts-bwht", "OFL-1.1", "val"),
    Font("bwht-mentor", "BecauseWeMentor-Regular.otf", "fonts-bwht", "OFL-1.1", "val"),
    Font("breip", "Breip.ttf", "fonts-breip", "OFL-1.0", "val"),
    Font("dkg", "dkg.ttf", "fonts-dkg-handwriting", "GPL-3+", "val"),
    Font("humor-sans", "Humor-Sans.ttf", "fonts-humor-sans", "OFL-1.1", "val"),
    Font("dancing-script", "DancingScript-Regular.otf", "fonts-dancingscript", "OFL-1.1", "val"),
    Font("steve-hand", "SteveHand.ttf", "fonts-sjfonts", "GPL-2 + font exception", "val"),
    Font("comic-neue-italic", "ComicNeue-Italic.otf", "fonts-comic-neue", "OFL-1.1", "val"),
    Font("bwht-connect", "BecauseWeConnect-Regular.otf", "fonts-bwht", "OFL-1.1", "test"),
    Font("bwht-learn", "BecauseWeLearn-Regular.otf", "fonts-bwht", "OFL-1.1", "test"),
    Font("bwht-organize", "BecauseWeOrganize-Regular.otf", "fonts-bwht", "OFL-1.1", "test"),
    Font("kristi", "Kristi.ttf", "fonts-kristi", "OFL-1.1", "test"),
    Font("rufscript", "Rufscript010.ttf", "fonts-rufscript", "GPL-3+ + font exception", "test"),
    Font("purisa", "Purisa.ttf", "fonts-tlwg-purisa-ttf", "GPL-2+", "test"),
    Font("kaushan-script", "KaushanScript-Regular.otf", "fonts-kaushanscript", "OFL-1.1", "test"),
    Font("delphine", "Delphine.ttf", "fonts-sjfonts", "GPL-2 + font exception", "test"),
)


def fonts_for(half: str) -> tuple[Font, ...]:
    """The fonts whose digits belong to `half` ("val" or "test")."""
    chosen = tuple(f for f in FONTS if f.half == half)
    if not chosen:
        raise ValueError(f"no fonts for half {half!r}; expected 'val' or 'test'")
    return chosen


@functools.cache
def glyph(file: str, label: int) -> np.ndarray:
    """The digit `label` of font `file` as a float ink mask cropped to its ink (cached)."""
    font = ImageFont.truetype(str(FONT_DIR / file), GLYPH_PX)
    canvas = Image.new("L", (3 * GLYPH_PX, 3 * GLYPH_PX), 0)
    ImageDraw.Draw(canvas).text((GLYPH_PX, GLYPH_PX), str(label), fill=255, font=font)
    mask = np.asarray(canvas, dtype=np.float32) / 255.0
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        raise ValueError(f"font {file} has no ink for the digit {label}")
    mask = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    mask.setflags(write=False)
    return mask


def render_font_digit(font: Font, label: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """`(ink mask, parameters)` of the digit `label` written in `font` with random variation.

    Slant -20..+32 degrees on top of the font's own, rotation +-8 degrees, width ratio 0.7-1.3,
    stroke width from thinner to bolder by up to about a third of the stroke, and an elastic
    bend of 1-4.5 % of the height.
    """
    mask = glyph(font.file, label)
    # Normalise the working size: the fonts draw digits 40-110 px tall at one font size.
    scale = 100.0 / mask.shape[0]
    size = (max(2, round(mask.shape[1] * scale)), 100)
    mask = np.asarray(
        Image.fromarray(np.ascontiguousarray(mask), "F").resize(size, Image.Resampling.BICUBIC)
    )
    params = {
        "slant_deg": round(float(rng.uniform(-20.0, 32.0)), 2),
        "rotate_deg": round(float(rng.uniform(-8.0, 8.0)), 2),
        "aspect": round(float(rng.uniform(0.7, 1.3)), 3),
        "elastic": round(float(rng.uniform(0.01, 0.045)), 4),
    }
    # Width change relative to the font's own stroke: a hand's pen varies, a font's does not.
    width = distort.stroke_width(mask)
    params["width_px"] = int(np.clip(round(rng.uniform(-0.3, 0.35) * width / 2), -3, 4))
    mask = distort.change_width(np.clip(mask, 0, 1), params["width_px"])
    mask = distort.warp(
        mask,
        rng,
        slant_deg=params["slant_deg"],
        rotate_deg=params["rotate_deg"],
        aspect=params["aspect"],
        elastic=params["elastic"],
    )
    return mask, params


def slant_style(slant_deg: float) -> str:
    """The added-slant bucket used as a font digit's style: left, upright or right."""
    if slant_deg < -5:
        return "slant-left"
    if slant_deg > 8:
        return "slant-right"
    return "upright"
