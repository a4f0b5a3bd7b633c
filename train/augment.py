"""On-tensor augmentation that imitates how other people's handwriting differs from MNIST's.

No DataLoader, no torchvision: each function maps a normalised `(N, 1, 28, 28)` batch to a new
one with parameters drawn from a CPU `torch.Generator`, so a seeded run is reproducible.

- `random_affine`: rotation, scale, shift (the original MNIST recipe);
- `handwriting`: one resampling that adds slant (shear), rotation, a width/height change, a
  scale that keeps the digit inside MNIST's 20 px box, a shift and an elastic bend, then, for
  part of the batch, a stroke-width change (dilate/erode) and a low-resolution round trip (the
  digit seen at 9-16 px, like a small scan that preprocessing scales up again). By default
  half of the images get it and the other half `random_affine`: with all of them distorted,
  both MNIST test and the real-world validation half scored lower.

Images arrive normalised, so the background is `normalize(0)`, not 0. Resampling with
`padding_mode="border"` repeats the edge pixels, which in MNIST are always background, so
shifted-in areas get the right background without retyping the normalisation constants.
Dilation and erosion are max-pooling of the image or of its negative; both commute with the
(increasing) normalisation, so they work on normalised values directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    max_degrees: float = 10.0,
    max_scale: float = 0.1,
    max_shift_px: float = 2.0,
) -> torch.Tensor:
    """Randomly rotate, scale and shift each image of an `(N, 1, H, W)` batch.

    Parameters are drawn uniformly from `generator` (CPU), so a seeded run is reproducible.
    `max_shift_px` is in pixels; rotation in degrees; scale is `1 +- max_scale`.
    """
    n, _, h, _w = images.shape
    draws = torch.rand(n, 4, generator=generator) * 2 - 1  # uniform in [-1, 1)
    angle = draws[:, 0] * math.radians(max_degrees)
    scale = 1 + draws[:, 1] * max_scale
    # affine_grid works in [-1, 1] coordinates: one pixel is 2/H of that range.
    shift = draws[:, 2:] * (2.0 * max_shift_px / h)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift[:, 0]], dim=1),
            torch.stack([sin, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    ).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


@dataclass(frozen=True)
class Handwriting:
    """Ranges of the `handwriting` augmentation (recorded in the artifact's train_config)."""

    max_degrees: float = 12.0
    max_shear: float = 0.45  # x += shear * y: 0.45 leans the top by about 24 degrees
    max_aspect: float = 0.2  # width scaled by 1 +- 0.2 relative to height
    scale: tuple[float, float] = (0.8, 1.05)  # MNIST's box is 20 px of 28: stay inside it
    max_shift_px: float = 2.0
    elastic_px: float = 1.0  # standard deviation of the smooth displacement, in pixels
    width_share: float = 0.4  # share of images whose strokes get thicker or thinner
    lowres_share: float = 0.2  # share of images seen at low resolution and scaled back up
    lowres_px: tuple[int, int] = (9, 16)  # digit height of that low-resolution view
    share: float = 0.5  # share of images augmented this way; the rest get `random_affine`

    def describe(self) -> dict:
        """JSON-friendly ranges."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}


def handwriting(
    images: torch.Tensor, generator: torch.Generator, config: Handwriting = Handwriting()
) -> torch.Tensor:
    """Slant, rotate, stretch, scale, shift and bend each image, then vary width and resolution.

    With `config.share` < 1, a random part of the batch gets the plain `random_affine` instead,
    so the model keeps seeing MNIST's own writing nearly as it is.
    """
    if config.share < 1.0:
        chosen = torch.rand(len(images), generator=generator) < config.share
        out = random_affine(images, generator)
        if bool(chosen.any()):
            out[chosen] = handwriting(images[chosen], generator, replace(config, share=1.0))
        return out
    n, _, h, w = images.shape
    u = torch.rand(n, 6, generator=generator) * 2 - 1  # uniform in [-1, 1)
    angle = u[:, 0] * math.radians(config.max_degrees)
    shear = u[:, 1] * config.max_shear
    aspect = 1 + u[:, 2] * config.max_aspect
    low, high = config.scale
    scale = low + (u[:, 3] + 1) / 2 * (high - low)
    # A digit stretched wider must not leave the box: shrink both axes when aspect > 1.
    scale = scale / torch.clamp(aspect, min=1.0)
    shift = u[:, 4:] * (2.0 * config.max_shift_px / h)

    # Output -> input map: inverse of (rotate . shear . scale), written out for a 2x2 matrix.
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = scale * aspect, scale
    forward = torch.stack(
        [
            torch.stack([cos * sx, cos * shear * sy - sin * sy], dim=1),
            torch.stack([sin * sx, sin * shear * sy + cos * sy], dim=1),
        ],
        dim=1,
    )
    inverse = torch.linalg.inv(forward)
    theta = torch.cat([inverse, shift[:, :, None]], dim=2).to(images.dtype)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if config.elastic_px > 0:
        # A 3x3 lattice of random displacements, interpolated: one or two smooth bends per digit.
        coarse = torch.randn(n, 2, 3, 3, generator=generator)
        field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1) * (2.0 * config.elastic_px / h)
    out = F.grid_sample(images, grid, padding_mode="border", align_corners=False)

    which = torch.rand(n, 3, generator=generator)
    if config.width_share > 0:
        thicker = torch.nonzero(which[:, 0] < config.width_share / 2).flatten()
        thinner = torch.nonzero(
            (which[:, 0] >= config.width_share / 2) & (which[:, 0] < config.width_share)
        ).flatten()
        # Half strength: a full 3x3 dilation adds 2 px, MNIST strokes are about 2-3 px wide.
        dilated = F.max_pool2d(out[thicker], 3, stride=1, padding=1)
        out[thicker] = 0.5 * (out[thicker] + dilated)
        # A 2x2 erosion shifts by half a pixel; padding on the far side keeps the shape.
        eroded = F.pad(-F.max_pool2d(-out[thinner], 2, stride=1), (0, 1, 0, 1), mode="replicate")
        out[thinner] = 0.5 * (out[thinner] + eroded)
    if config.lowres_share > 0:
        out = _low_resolution(out, which[:, 1] < config.lowres_share, which[:, 2], config)
    return out


def _low_resolution(
    images: torch.Tensor, chosen: torch.Tensor, draw: torch.Tensor, config: Handwriting
) -> torch.Tensor:
    """The `chosen` images seen with their 20 px box at `lowres_px` and scaled back up.

    Downsampling by area and upsampling bilinearly is what a small scan goes through in
    preprocessing. The ink is then stretched back to full strength, as preprocessing does.
    """
    if not bool(chosen.any()):
        return images
    n, _, h, w = images.shape
    lo, hi = config.lowres_px
    heights = lo + (draw * (hi - lo + 1)).long().clamp(max=hi - lo)
    out = images.clone()
    background = images[:, :, 0, 0].amin()  # MNIST corners are background: normalize(0)
    for px in heights[chosen].unique().tolist():
        members = chosen & (heights == px)
        size = max(2, round(px * h / 20))  # the 20 px box at px -> the 28 px field at size
        small = F.interpolate(images[members], size=(size, size), mode="area")
        back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        # Preprocessing stretches the ink back (cores to full strength, faint fringe to
        # background): the same ramp here, from 10 % to 80 % of each image's peak.
        peak = back.amax(dim=(2, 3), keepdim=True)
        level = (back - background) / torch.clamp(peak - background, min=1e-6)
        level = torch.clamp((level - 0.1) / 0.7, 0.0, 1.0)
        target = images[members].amax(dim=(2, 3), keepdim=True)
        out[members] = background + level * (target - background)
    return out
