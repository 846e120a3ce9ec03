"""Checkpoint files: written atomically, read with `torch.load(weights_only=True)` and one-line errors."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from kd2trt.artifacts import atomic_path, write_error
from kd2trt.errors import Kd2trtError

_PROBE_BYTES = 1 << 16
#: how torch's zip writer reports a failed write (short write, failed fwrite, failed open)
_WRITE_FAILED = re.compile(r"unexpected pos|file write failed|PytorchStreamWriter|inline_container|cannot be opened")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """`torch.save` to `path` atomically (checkpoints are rewritten every epoch).

    A failed write is a one-line :class:`Kd2trtError` naming `path` and the cause, with no temporary file
    left. torch.save reports a failed write as a RuntimeError without the OS's reason ("unexpected pos 567808
    vs 567704"); the reason is found by writing a little more to the same temporary file.
    """
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:
            if not _WRITE_FAILED.search(str(exc)):
                raise
            raise write_error(path, _write_failure_cause(tmp, exc)) from None
    return Path(path)


def _write_failure_cause(tmp: Path, exc: RuntimeError) -> OSError | str:
    """The OSError behind torch.save's RuntimeError (disk full, quota, I/O error), else torch's first line."""
    try:
        with open(tmp, "ab") as handle:
            handle.write(bytes(_PROBE_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as probe:
        return probe
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:160] if lines else type(exc).__name__


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
