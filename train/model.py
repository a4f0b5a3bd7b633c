"""LeNet-5 (LeCun et al., 1998), 61,706 parameters.

C1 6@5x5 (padding 2 on 28x28) -> S2 2x2 -> C3 16@5x5 -> S4 2x2 -> F5 120 -> F6 84 -> 10.

Two variants share the same layers and parameter count:
- ``modern`` (default): ReLU and max pooling.
- ``classic``: the paper's scaled tanh squashing function ``1.7159 * tanh(2x/3)`` and average
  pooling. (The paper's trainable subsampling coefficients and RBF output are replaced by plain
  average pooling and a linear layer, as in most reproductions, to keep the 61,706 count.)
"""

from __future__ import annotations

import torch
from torch import nn

VARIANTS = ("modern", "classic")


class ScaledTanh(nn.Module):
    """LeCun's squashing function f(a) = 1.7159 tanh(2a/3) (paper, appendix A)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class LeNet5(nn.Module):
    """LeNet-5 taking (N, 1, 28, 28) normalised images and returning (N, 10) logits."""

    def __init__(self, variant: str = "modern") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"Unknown LeNet-5 variant {variant!r}; choose one of {VARIANTS}")
        self.variant = variant

        def act() -> nn.Module:
            return nn.ReLU() if variant == "modern" else ScaledTanh()

        def pool() -> nn.Module:
            return nn.MaxPool2d(2) if variant == "modern" else nn.AvgPool2d(2)

        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2),  # C1: 6x28x28
            act(),
            pool(),  # S2: 6x14x14
            nn.Conv2d(6, 16, kernel_size=5),  # C3: 16x10x10
            act(),
            pool(),  # S4: 16x5x5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),  # F5
            act(),
            nn.Linear(120, 84),  # F6
            act(),
            nn.Linear(84, 10),  # output logits
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def summary(model: nn.Module, input_size: tuple[int, int, int] = (1, 28, 28)) -> str:
    """A per-layer table of output shapes and parameter counts, like the seeds print."""
    rows: list[tuple[str, str, int]] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Sequential, LeNet5)):
            continue

        def hook(mod, _inp, out, name=name):
            params = sum(p.numel() for p in mod.parameters(recurse=False))
            rows.append((f"{name} ({type(mod).__name__})", str(tuple(out.shape[1:])), params))

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_size))
    model.train(was_training)
    for h in hooks:
        h.remove()
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'layer':<{width}}{'output shape':<18}{'params':>8}", "-" * (width + 26)]
    lines += [f"{n:<{width}}{s:<18}{p:>8,}" for n, s, p in rows]
    lines += ["-" * (width + 26), f"{'total':<{width}}{'':<18}{count_parameters(model):>8,}"]
    return "\n".join(lines)
