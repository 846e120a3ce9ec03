"""Accuracy figures from logits, in one place for training, export's preview and the bench (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["top1"]


def top1(logits: Any, labels: Any) -> float:
    """Top-1 accuracy in percent; numpy arrays or CPU tensors."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    return float((logits.argmax(axis=1) == labels).mean() * 100.0)
