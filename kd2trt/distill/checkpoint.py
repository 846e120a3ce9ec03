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
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator
from torch import nn

from kd2trt import __version__
from kd2trt.config import DataConfig
from kd2trt.data import DataSplits, Preprocessing, load_data
from kd2trt.errors import Kd2trtError
from kd2trt.models import build_model
from kd2trt.torch_io import load_torch

FORMAT = 1
ROLES = ("teacher", "student", "baseline")
_RERUN = "re-run `kd2trt distill` to write it again"
_REQUIRED = {"data": ("spec", "image_size", "val_fraction", "test_fraction", "split_seed")}


class ModelSpec(BaseModel):
    """The `model` record: what `kd2trt.models.model_spec` writes and `build_model` reads."""

    model_config = ConfigDict(extra="forbid", strict=True)

    arch: str = Field(min_length=1)
    in_channels: PositiveInt
    num_classes: PositiveInt
    channels: list[PositiveInt] | None = Field(None, min_length=1)
    blocks: PositiveInt = 1
    dropout: float = Field(0.0, ge=0, lt=1)
    identity_modules: list[str] = Field(default_factory=list)  # rectifiers on the logits, removed (probe_model)

    @model_validator(mode="after")
    def _cnn_needs_channels(self) -> ModelSpec:
        if self.arch == "cnn" and self.channels is None:
            raise ValueError("arch 'cnn' needs channels")
        return self


class SplitRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    keys: list[str]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SplitsRecord(BaseModel):
    """The `splits` record: each split's image keys in order, and a hash of its images."""

    model_config = ConfigDict(extra="forbid", strict=True)

    train: SplitRecord
    val: SplitRecord
    test: SplitRecord


def _short_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{key}: {message}" if key else message)
    return "; ".join(parts)


def make_checkpoint(role: str, model_spec: dict[str, Any], state_dict: dict[str, torch.Tensor],
                    classes: list[str], data: dict[str, Any], preprocessing: Preprocessing,
                    metrics: dict[str, Any], splits: dict[str, Any] | None = None) -> dict[str, Any]:
    """`splits`: the split membership `kd2trt.data.split_record` made (later stages evaluate exactly it)."""
    checkpoint = {
        "kd2trt": {"format": FORMAT, "role": role, "version": __version__},
        "model": model_spec,
        # contiguous whatever layout training used (train.channels_last): the file does not depend on it
        "state_dict": {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in state_dict.items()},
        "classes": list(classes),
        "data": data,
        "preprocessing": preprocessing.model_dump(mode="json"),
        "metrics": metrics,
    }
    if splits is not None:
        checkpoint["splits"] = splits
    return checkpoint


def read_checkpoint(path: str | Path, roles: tuple[str, ...] = ROLES) -> dict[str, Any]:
    """Load and validate a kd2trt checkpoint; anything else is a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise Kd2trtError(f"{path}: checkpoint not found; run `kd2trt distill` first or fix the path")
    checkpoint = load_torch(path, _RERUN)
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
    _check_records(checkpoint, path)
    return checkpoint


def _check_records(checkpoint: dict[str, Any], path: Path) -> None:
    """Every record a later stage reads, checked here where the file is known (not as a KeyError later)."""
    for key, model in (("model", ModelSpec), ("data", DataConfig), ("preprocessing", Preprocessing)):
        record = checkpoint[key]
        if not isinstance(record, dict):
            raise Kd2trtError(f"{path}: malformed {key!r} record (a {type(record).__name__}, not a mapping); "
                              f"{_RERUN}")
        lacking = [name for name in _REQUIRED.get(key, ()) if name not in record]
        if lacking:  # DataConfig has defaults for these, but a default would rebuild other splits
            raise Kd2trtError(f"{path}: malformed {key!r} record (lacks {', '.join(lacking)}); {_RERUN}")
        try:
            model.model_validate(record)
        except ValidationError as exc:
            raise Kd2trtError(f"{path}: malformed {key!r} record ({_short_errors(exc)}); {_RERUN}") from None
    splits = checkpoint.get("splits")
    if splits is not None:
        try:
            SplitsRecord.model_validate(splits)
        except ValidationError as exc:
            raise Kd2trtError(f"{path}: malformed 'splits' record ({_short_errors(exc)}); {_RERUN}") from None
    classes, state = checkpoint["classes"], checkpoint["state_dict"]
    if not isinstance(classes, list) or not classes or not all(isinstance(name, str) for name in classes):
        raise Kd2trtError(f"{path}: malformed 'classes' record (expected a non-empty list of class names); {_RERUN}")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise Kd2trtError(f"{path}: malformed 'state_dict' record (expected a mapping of names to tensors); "
                          f"{_RERUN}")


def model_from_checkpoint(checkpoint: dict[str, Any], source: str | Path = "<checkpoint>") -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights, in eval mode."""
    try:
        model = build_model(checkpoint["model"])
    except Kd2trtError as exc:  # e.g. identity_modules naming a module the model does not have
        raise Kd2trtError(f"{source}: {exc}") from None
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise Kd2trtError(f"{source}: weights do not fit the model spec stored with them ({str(exc)[:160]})") from None
    return model.eval()


def preprocessing_of(checkpoint: dict[str, Any]) -> Preprocessing:
    return Preprocessing.model_validate(checkpoint["preprocessing"])


def splits_of(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded split membership (None for checkpoints of kd2trt versions that did not record it)."""
    return checkpoint.get("splits")


def data_of(checkpoint: dict[str, Any]) -> DataSplits:
    """The data a checkpoint was distilled with: its own spec, preprocessing and recorded splits."""
    return load_data(data_config_of(checkpoint), preprocessing_of(checkpoint), recorded=splits_of(checkpoint))


def data_config_of(checkpoint: dict[str, Any]) -> DataConfig:
    """The data spec and split a checkpoint was trained on, to rebuild exactly the same splits."""
    return DataConfig.model_validate(checkpoint["data"])
