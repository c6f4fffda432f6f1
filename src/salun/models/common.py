"""Pieces shared by every architecture: input normalisation inside the model and the head."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """Subtract the per-channel mean and divide by the std (buffers, not parameters).

    Normalising inside the model keeps inputs in [0, 1] everywhere, which FGSM in Boundary
    Shrink needs (docs/method.md), and keeps the statistics in the checkpoint.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``normalize -> features -> head``: every model in the registry has this shape.

    The final linear layer is always ``.head``, so methods that change the output layer
    (Boundary Expanding adds a shadow class) find it without knowing the architecture.
    """

    def __init__(self, normalize: Normalize, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))

    @property
    def num_classes(self) -> int:
        return self.head.out_features


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier, at least 1."""
    return max(1, int(round(channels * width)))
