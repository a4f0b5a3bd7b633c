"""On-tensor random affine augmentation (no DataLoader, no torchvision).

Images arrive already normalised, so the background is `normalize(0)`, not 0. Sampling with
`padding_mode="border"` repeats the edge pixels, which in MNIST are always background, so
shifted-in areas get the right background value without retyping the normalisation constants.
"""

from __future__ import annotations

import math

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
