"""The checkpoint format every later stage reads, and the resume state written beside it.

`<role>.pt` (role: teacher, student, baseline) holds only plain types and tensors so it loads with
`torch.load(weights_only=True)`: the model spec (to rebuild the model without the recipe), the
best-on-validation weights, the class names, the data spec and the preprocessing (so export,
calibration and bench transform images exactly as training did), and the figures.

`<role>.last.pt` holds what resuming needs (optimiser, schedule, scaler, epoch, history, best
weights so far). Both are replaced atomically every epoch, so kill -9 loses at most one epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd2trt import __version__
from kd2trt.config import DataConfig
from kd2trt.data import Preprocessing
from kd2trt.errors import Kd2trtError
from kd2trt.models import build_model

FORMAT = 1
ROLES = ("teacher", "student", "baseline")


def make_checkpoint(role: str, model_spec: dict[str, Any], state_dict: dict[str, torch.Tensor],
                    classes: list[str], data: dict[str, Any], preprocessing: Preprocessing,
                    metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "kd2trt": {"format": FORMAT, "role": role, "version": __version__},
        "model": model_spec,
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "classes": list(classes),
        "data": data,
        "preprocessing": preprocessing.model_dump(mode="json"),
        "metrics": metrics,
    }


def read_checkpoint(path: str | Path, roles: tuple[str, ...] = ROLES) -> dict[str, Any]:
    """Load and validate a kd2trt checkpoint; anything else is a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise Kd2trtError(f"{path}: checkpoint not found; run `kd2trt distill` first or fix the path")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Kd2trtError(f"{path}: corrupt or not a PyTorch checkpoint ({reason.split('. ')[0][:120]}); "
                          "re-run `kd2trt distill` to write it again") from None
    meta = checkpoint.get("kd2trt") if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or "role" not in meta:
        raise Kd2trtError(f"{path}: not a kd2trt checkpoint (no 'kd2trt' header); pass a teacher.pt, "
                          "student.pt or baseline.pt written by `kd2trt distill`")
    if meta.get("format") != FORMAT:
        raise Kd2trtError(f"{path}: checkpoint format {meta.get('format')} is not {FORMAT}; re-run "
                          f"`kd2trt distill` with kd2trt {__version__}")
    if meta["role"] not in roles:
        raise Kd2trtError(f"{path}: is a {meta['role']} checkpoint, expected {' or '.join(roles)}")
    missing = [key for key in ("model", "state_dict", "classes", "data", "preprocessing") if key not in checkpoint]
    if missing:
        raise Kd2trtError(f"{path}: kd2trt checkpoint lacks {', '.join(missing)}; re-run `kd2trt distill`")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any], source: str | Path = "<checkpoint>") -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights, in eval mode."""
    model = build_model(checkpoint["model"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise Kd2trtError(f"{source}: weights do not fit the model spec stored with them ({str(exc)[:160]})") from None
    return model.eval()


def preprocessing_of(checkpoint: dict[str, Any]) -> Preprocessing:
    return Preprocessing.model_validate(checkpoint["preprocessing"])


def data_config_of(checkpoint: dict[str, Any]) -> DataConfig:
    """The data spec and split a checkpoint was trained on, to rebuild exactly the same splits."""
    record = checkpoint["data"]
    return DataConfig(spec=record["spec"], image_size=record["image_size"], channels=record.get("channels"),
                      val_fraction=record["val_fraction"], test_fraction=record["test_fraction"],
                      split_seed=record["split_seed"])
