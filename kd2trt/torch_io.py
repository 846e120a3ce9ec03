"""Checkpoint files: written atomically, read with `torch.load(weights_only=True)` and one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from kd2trt.artifacts import atomic_path
from kd2trt.errors import Kd2trtError


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """`torch.save` to `path` atomically (checkpoints are rewritten every epoch)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch(path: str | os.PathLike[str], hint: str) -> Any:
    """`torch.load(weights_only=True)` on the CPU; a file it cannot read is a one-line error naming it.

    `hint` is the fix to print after the reason, e.g. "re-run `kd2trt distill` to write it again".
    weights_only=True: a checkpoint is data, and unpickling arbitrary objects would run code from the file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, …)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0].split(". ")[0][:120] if lines else type(exc).__name__
        raise Kd2trtError(f"{path}: not a readable PyTorch checkpoint ({reason}); {hint}") from None
