"""The JSON records kd2trt writes beside its artifacts and reads back, typed, with one reader and one writer.

A manifest is what lets a later stage, or another machine, trust a file without redoing the work that made
it: the stage manifests of `kd2trt run` (is this stage up to date?), the calibration-cache manifest (which
ONNX and which calibration set is this cache for?), the engine manifest (which TensorRT and GPU can run this
engine?). Each is a pydantic model with ``extra="forbid"``, so a hand-edited or foreign file fails loudly,
and :func:`read_manifest` turns every way a file can be bad -- missing, a directory, unreadable, not UTF-8, not
JSON, not this record -- into one line that names the file and the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kd2trt.artifacts import atomic_write_json
from kd2trt.errors import Kd2trtError, TrtVersionError
from kd2trt.targets import TrtVersion

__all__ = ["CACHE_MANIFEST_KIND", "ENGINE_MANIFEST_KIND", "BuildOptions", "CacheManifest", "EngineManifest",
           "JetsonRecord", "PlanRecord", "StageManifest", "read_manifest", "write_manifest"]

CACHE_MANIFEST_KIND = "kd2trt calibration cache"
ENGINE_MANIFEST_KIND = "kd2trt TensorRT engine"
SHA256 = r"^[0-9a-f]{64}$"

Record = TypeVar("Record", bound=BaseModel)


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------- the reader


def read_manifest(path: str | os.PathLike[str], model: type[Record], what: str, fix: str,
                  missing: str | None = None) -> Record:
    """`path` parsed as `model`; any bad file is a one-line :class:`Kd2trtError` naming it and `fix`.

    `what` names the record in messages ("engine manifest"); `missing` replaces the message for a file that
    does not exist, where the caller knows better what that means.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise Kd2trtError(missing or f"{path}: {what} not found; {fix}") from None
    except IsADirectoryError:
        raise Kd2trtError(f"{path}: is a directory, not a {what}; {fix}") from None
    except OSError as exc:
        raise Kd2trtError(f"cannot read {what} {path}: {exc.strerror or exc}; {fix}") from None
    try:
        tree = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Kd2trtError(f"{path}: not UTF-8 text (byte {exc.start}), so not a {what}; {fix}") from None
    except json.JSONDecodeError as exc:
        raise Kd2trtError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); {fix}") from None
    if not isinstance(tree, dict):
        raise Kd2trtError(f"{path}: not a {what} (expected a JSON object, found a JSON {type(tree).__name__}); "
                          f"{fix}")
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "<root>"
        message = first["msg"].removeprefix("Value error, ")
        raise Kd2trtError(f"{path}: invalid {what} ({where}: {message}); {fix}") from None


def write_manifest(path: str | os.PathLike[str], record: BaseModel) -> Path:
    """Write `record` as indented JSON, atomically (a manifest must never vouch for half a file)."""
    return atomic_write_json(path, record.model_dump(mode="json"))


# --------------------------------------------------------------------------------------- kd2trt run


class StageManifest(_Manifest):
    """`stages/<stage>.json`: what a finished stage was made from and what it made, by sha256.

    Files are keyed by their path relative to the run directory, or absolute for files outside it
    (`engines/<run>/`). `record` keeps what the stage must report again while it is up to date (the bench's
    gates and report files).
    """

    stage: str
    config_hash: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    kd2trt: str
    seconds: float
    summary: str
    fingerprint: str | None = None  # of data the stage reads that is not a file of the run (the data set)
    record: dict[str, Any] | None = None


# -------------------------------------------------------------------------------- calibration cache


class CacheManifest(_Manifest):
    """`<cache>.json`: which ONNX a calibration cache was made for, from which images and how.

    A cache is checked against `source_onnx_sha256` before reuse: scales computed for another graph would be
    applied to the wrong tensors without any error from TensorRT. `calibration` is carried forward when the
    cache is reused, so the record always names the original calibration.
    """

    kind: Literal["kd2trt calibration cache"] = CACHE_MANIFEST_KIND
    cache: str
    header: str
    trt_version: str
    algorithm: str
    tensors: int = Field(ge=0)
    source_onnx: str
    source_onnx_sha256: str = Field(pattern=SHA256)
    calibration: dict[str, Any]
    preprocessing: dict[str, Any]
    tools: dict[str, str]
    #: layers (ONNX node names) an INT8 budget keeps in higher precision: the engine builder applies them
    high_precision_layers: list[str] = Field(default_factory=list)
    #: distillation-aware QAT that made the cache's ranges and its source ONNX (epochs, lr, validation top-1
    #: before/after, drops vs FP32); None for post-training calibration
    qat: dict[str, Any] | None = None


# ------------------------------------------------------------------------------------------ engines


class JetsonRecord(_Manifest):
    """The Jetson an engine was built on (``None`` in the manifest on x86)."""

    l4t: str
    jetpack: str | None = None
    model: str | None = None
    power_mode: str | None = None


class PlanRecord(_Manifest):
    """:class:`kd2trt.trt.plan.PrecisionPlan`, as recorded."""

    precision: Literal["fp32", "fp16", "int8"]
    onnx_kind: Literal["onnx", "fp16_onnx", "qdq_onnx"]
    strongly_typed: bool
    fp16_flag: bool
    int8_flag: bool
    use_calibrator: bool
    calibration_source: Literal["cache", "data"] | None = None
    quantization: Literal["none", "implicit", "explicit"]
    reason: str


class BuildOptions(_Manifest):
    """The builder settings that shaped the engine."""

    input_name: str
    input_chw: list[int] = Field(min_length=3, max_length=3)
    min_batch: int = Field(ge=1)
    opt_batch: int = Field(ge=1)
    max_batch: int = Field(ge=1)
    workspace_mb: int = Field(ge=1)
    dla_core: int | None = None
    gpu_fallback: bool = False
    timing_cache: str | None = None
    timing_cache_loaded: bool = False
    version_compatible: bool = False
    hardware_compatible: bool = False
    # TensorRT enum-member names as set (kd2trt.trt.wiring.BuildSettings); empty in manifests written before
    network_flags: list[str] = Field(default_factory=list)
    builder_flags: list[str] = Field(default_factory=list)
    layer_precisions: list[list[str]] = Field(default_factory=list)  # [layer name, DataType member]


class EngineManifest(_Manifest):
    """`<engine>.json`: everything needed to decide whether an engine may run here, and to reproduce it."""

    kind: Literal["kd2trt TensorRT engine"] = ENGINE_MANIFEST_KIND
    schema_version: int = 1
    kd2trt_version: str
    created_utc: str
    trt_version: str  # tensorrt.__version__ as found, e.g. "10.3.0.30"
    cuda_version: str | None = None
    gpu_name: str
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")  # "8.7"
    jetson: JetsonRecord | None = None
    precision: Literal["fp32", "fp16", "int8"]
    plan: PlanRecord
    source_onnx: str
    source_onnx_sha256: str = Field(pattern=SHA256)
    calib_cache: str | None = None
    calib_cache_sha256: str | None = Field(default=None, pattern=SHA256)
    build: BuildOptions
    build_seconds: float = Field(ge=0)
    engine_file: str  # file name, beside the manifest
    engine_sha256: str = Field(pattern=SHA256)
    engine_bytes: int = Field(ge=0)
    layer_info: str | None = None  # file name of the engine inspector's JSON, beside the manifest

    @field_validator("trt_version")
    @classmethod
    def _trt_version_is_a_version(cls, value: str) -> str:
        """Refuse e.g. ``"latest"`` when the manifest is read, not later in the compatibility check."""
        try:
            TrtVersion.parse(value)
        except TrtVersionError as exc:  # pydantic reports ValueError, and lets other exceptions escape
            raise ValueError(str(exc)) from None
        return value
