"""Process-group set-up for `torchrun --nproc-per-node N -m kd2trt distill …`.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them everything runs in one process through the
same code path (a world of one), so single-process and DDP training cannot drift apart.
NCCL on CUDA, gloo on CPU (which is how the test suite runs two processes on a CI machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kd2trt.errors import Kd2trtError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` picks the process's CUDA device when there is one, else the CPU."""
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise Kd2trtError(f"device {preference!r} asked for, but no CUDA device is visible; use --device cpu")
        if preference == "cuda":
            return torch.device(f"cuda:{local_rank}")
    return torch.device(preference)


def init_distributed(preference: str) -> DistContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
