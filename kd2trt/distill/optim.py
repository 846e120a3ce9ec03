"""The optimiser and learning-rate schedule of a training stage (train.optimizer, train.lr, train.schedule).

Why the fused kernels: torch's default AdamW and SGD update the parameters one tensor at a time in Python.
On the CPU, at 1 torch thread, that loop took 111 ms per step for ResNet-18's 11.2 M parameters — a quarter of
a 32 px training step — where torch's fused kernel took 35 ms (bench/fused_optimizer.py,
bench/results/fused_optimizer.json); in the zoo's two 1-thread processes the ResNet-18 teacher's epoch went
from 21.4 to 11 s. The fused kernels exist for CUDA (torch 2.0+ for AdamW) and the CPU (torch
2.4+); whether this torch has one for the parameters' device is probed once with a one-element parameter
rather than read from torch's version, so an older torch or another device falls back to the default loop. The
update is the same rule; its float rounding differs, as a different thread count's does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from kd2trt.config import TrainConfig


@functools.cache
def fused_kernel_available(optimizer: str, device_type: str, dtype: torch.dtype = torch.float32) -> bool:
    """Whether `torch.optim.<optimizer>(..., fused=True)` steps parameters of this device and dtype."""
    try:
        param = nn.Parameter(torch.zeros(1, device=device_type, dtype=dtype))
        param.grad = torch.zeros_like(param)
        getattr(torch.optim, optimizer)([param], lr=0.1, fused=True).step()
    except (RuntimeError, TypeError, ValueError):  # unknown keyword, or no kernel for this device / dtype
        return False
    return True


def build_optimizer(params: list[nn.Parameter], config: TrainConfig, *, fused: bool | None = None
                    ) -> torch.optim.Optimizer:
    """Weight decay on weights only, not on biases and norm scales (as torchvision's references do).

    `fused`: None uses the fused kernel when this torch has one for the parameters' (one) device and dtype;
    False forces the default per-tensor loop (what bench/fused_optimizer.py compares against).
    """
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    name = "SGD" if config.optimizer == "sgd" else "AdamW"
    if fused is None:
        kinds = {(p.device.type, p.dtype) for p in params}
        fused = len(kinds) == 1 and fused_kernel_available(name, *kinds.pop())
    if name == "SGD":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                               fused=fused or None)
    return torch.optim.AdamW(groups, lr=config.lr, fused=fused or None)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
                    ) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per batch so the schedule's shape does not depend on the epoch count.

    Cosine and constant schedules start with a linear warm-up over `config.warmup` of the steps (the first
    step at 1/(warm-up steps + 1) of the rate); onecycle has its own.
    """
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config.schedule, config.warmup, total_steps))


def lr_factor(schedule: str, warmup: float, total_steps: int) -> Callable[[int], float]:
    """The learning rate at step `s` as a share of `train.lr`: linear warm-up, then cosine to zero or constant."""
    warm = min(round(warmup * total_steps), max(0, total_steps - 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, total_steps - warm) / max(1, total_steps - warm)))
    return factor
