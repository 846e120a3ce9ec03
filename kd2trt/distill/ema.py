"""An exponential moving average of a model's weights (`train.ema`): what a stage validates, selects and saves.

Why: on a small data set the weights at the end of an epoch are one noisy point of the trajectory (a step on a
batch of 32 of 140 images moves a student by as much as the signal of a whole epoch), and the validation split
that picks the best epoch is too small to average that noise out (47 images: one image is 2.1 points). The
average of the last steps' weights is the usual cure (torchvision's `references/classification --model-ema`, timm's
ModelEmaV3); kd2trt keeps it as torch's `AveragedModel` over parameters and buffers, and the loop recomputes its
BatchNorm statistics before each validation as it does for the raw weights.

The decay is set by the stage's length, not given as a constant: `train.ema` is the share of the stage's optimiser
steps the average spans (its time constant), so one setting means the same at 4 steps an epoch as at 400 — a fixed
decay such as 0.9998 would average over 5,000 steps, more than the zoo's whole stage of 204. Early on the decay is
capped at (1 + n) / (10 + n) after n updates, as TensorFlow's ExponentialMovingAverage does with `num_updates`,
so the average does not stay near the initial weights while the stage has taken fewer steps than its span.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_decay(time_constant: float, total_steps: int) -> float:
    """The per-step decay whose time constant is `time_constant` of `total_steps` (0 when that is one step)."""
    return 1.0 - 1.0 / max(1.0, time_constant * total_steps)


class WeightAverage:
    """The running average of `model`'s weights, updated after every optimiser step (`update`)."""

    def __init__(self, model: nn.Module, time_constant: float, total_steps: int):
        self.decay = ema_decay(time_constant, total_steps)
        self._updates = 0  # a Python count: reading AveragedModel's n_averaged would sync a CUDA stream every step
        self.averaged = AveragedModel(model, multi_avg_fn=self._average, use_buffers=True)
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        """The averaged copy of the model, with the model's own state-dict keys."""
        return self.averaged.module

    def decay_at(self, updates: int) -> float:
        """The decay of the update that follows `updates` earlier ones (the first is a copy): the warm-up cap, then
        `decay`."""
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    def _average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        # AveragedModel copies the first update and calls this from the second on, with one dtype per call
        get_ema_multi_avg_fn(self.decay_at(self._updates))(averaged, current, num_averaged)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold `model`'s current weights into the average."""
        self.averaged.update_parameters(model)
        self._updates += 1

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)
        self._updates = int(self.averaged.n_averaged)
