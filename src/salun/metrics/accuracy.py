"""Predictions and accuracies in eval mode with the test transform (no augmentation)."""

from __future__ import annotations

import torch
from torch import nn

from salun.data import ImageDataset, iterate_batches


@torch.no_grad()
def predict_logits(
    model: nn.Module, data: ImageDataset, device, batch_size: int = 1024
) -> torch.Tensor:
    """Logits for every sample, in order, on the CPU (restores the model's mode)."""
    was_training = model.training
    model.eval()
    outs = [model(x).float().cpu() for x, _ in iterate_batches(data, batch_size, device=device)]
    model.train(was_training)
    if not outs:
        return torch.zeros(0, 0)
    return torch.cat(outs)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in %. An empty set gives NaN (not a misleading 0 or 100)."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * (logits.argmax(1) == labels.cpu()).double().mean().item()
