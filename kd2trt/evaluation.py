"""Inference over a data set and the accuracy figures computed from its logits."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on the CPU) and labels of the whole data set, in data-set order."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for images, targets, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits.append(model(images.to(device)).float().cpu())
        labels.append(targets)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (logits.argmax(dim=1) == labels).float().mean().item()
