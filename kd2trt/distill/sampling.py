"""Imbalanced classes in training: balanced class weights for the loss terms, and a balanced sampler.

Both follow the conventions users know: the weights are scikit-learn's 'balanced' heuristic, n / (k · count_c);
the sampler draws with replacement with probabilities proportional to 1 / count of each item's class, as
torch's WeightedRandomSampler does with those weights. They compound when both are on (a minority class is
then up-weighted twice), so pick one: the sampler changes what the batches hold, the weights how much each item
counts (in the CE and the KD term alike, `kd2trt.distill.losses`).

The sampler is reproducible and DDP-correct by construction: the epoch's whole draw is a function of
(seed, epoch) only — the same on every rank and after a resume — and each rank takes every world_size-th item
of it, as DistributedSampler does, so N processes together see exactly the draw one process would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["BalancedSampler", "balanced_class_weights", "balanced_sample_weights"]


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n / (k · count_c) for each class c of `labels` (float32); a class without images gets weight 0.

    k counts only the classes present, as scikit-learn's compute_class_weight does over the classes it is given.
    """
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes)[:num_classes].double()
    present = int((counts > 0).sum())
    weights = torch.where(counts > 0, len(labels) / (max(present, 1) * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


def balanced_sample_weights(labels: torch.Tensor) -> torch.Tensor:
    """1 / count of each item's class: with these, every class is drawn equally often."""
    labels = labels.long().cpu()
    counts = torch.bincount(labels).double()
    return (1.0 / counts[labels]).double()


class BalancedSampler(Sampler[int]):
    """Weighted sampling with replacement, split across DDP ranks; `set_epoch` re-seeds it like DistributedSampler.

    Every epoch draws `len(weights)` items globally (one epoch's worth, as WeightedRandomSampler's default), pads
    the draw to a multiple of `num_replicas` by repeating its head, and gives rank r the items r, r + N, …
    """

    def __init__(self, weights: torch.Tensor, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        if weights.ndim != 1 or len(weights) == 0 or not bool((weights >= 0).all()) or float(weights.sum()) <= 0:
            raise ValueError("sample weights must be a non-empty 1-D tensor of non-negative values, not all zero")
        self.weights = weights.double()
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.epoch = 0
        self.num_samples = math.ceil(len(weights) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_draw(self) -> torch.Tensor:
        """The epoch's draw over all ranks: depends on (seed, epoch) alone, never on the global RNG."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator)
        total = self.num_samples * self.num_replicas
        return torch.cat([drawn, drawn[: total - len(drawn)]])

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_draw()[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
