"""Accuracy figures from logits, in one place for training, export's preview and the bench (numpy only).

Why balanced accuracy beside top-1: on two classes at 1:3 (the chest-X-ray case) a model that always answers
the majority class scores 75 % top-1 and has learned nothing; its balanced accuracy (the mean of the per-class
recalls, sklearn's `balanced_accuracy_score`) is 50 %, chance for two classes whatever the imbalance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["IMBALANCE_RATIO", "balanced_accuracy", "class_counts", "cross_entropy", "is_imbalanced",
           "per_class_recall", "top1"]

#: a split whose largest class has at least this many times the images of its smallest counts as imbalanced:
#: the console and Markdown tables then show balanced accuracy beside top-1 (JSON always has it)
IMBALANCE_RATIO = 1.5


def top1(logits: Any, labels: Any) -> float:
    """Top-1 accuracy in percent; numpy arrays or CPU tensors."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    return float((logits.argmax(axis=1) == labels).mean() * 100.0)


def per_class_recall(logits: Any, labels: Any, num_classes: int | None = None) -> list[float | None]:
    """Recall (%) of each class index: the share of its images predicted as it; None for a class with none.

    `num_classes` defaults to the logits' width, so a class absent from `labels` still has its (None) entry.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    predictions = logits.argmax(axis=1)
    count = logits.shape[1] if num_classes is None else num_classes
    recalls: list[float | None] = []
    for index in range(count):
        members = labels == index
        recalls.append(float((predictions[members] == index).mean() * 100.0) if members.any() else None)
    return recalls


def balanced_accuracy(logits: Any, labels: Any) -> float:
    """Mean per-class recall (%) over the classes present in `labels` (sklearn's definition); 0 when empty."""
    present = [r for r in per_class_recall(logits, labels) if r is not None]
    return float(np.mean(present)) if present else 0.0


def cross_entropy(logits: Any, labels: Any, balanced: bool = False) -> float:
    """Mean negative log-likelihood (nats) of the labels under softmax(logits); `balanced`: the mean over the
    classes present of each class's mean, the loss counterpart of balanced accuracy. 0 when empty."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    peak = logits.max(axis=1, keepdims=True)
    log_norm = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
    nll = log_norm - logits[np.arange(len(labels)), labels]
    if not balanced:
        return float(nll.mean())
    return float(np.mean([nll[labels == c].mean() for c in np.unique(labels)]))


def class_counts(labels: Any, num_classes: int) -> list[int]:
    """Images per class index."""
    return [int(n) for n in np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]]


def is_imbalanced(labels: Any, num_classes: int) -> bool:
    """Whether the split's class counts differ by at least IMBALANCE_RATIO (empty classes ignored)."""
    present = [n for n in class_counts(labels, num_classes) if n > 0]
    return len(present) > 1 and max(present) >= IMBALANCE_RATIO * min(present)
